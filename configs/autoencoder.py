"""The experiment wrapper shared by autoencoder configs (video VAE, audio VAE,
vocoder): the phase jav/train/autoencoder.py runs when `cfg.phase == "autoencoder"`.

A config file builds its model config and returns
`experiment(model_cfg, kind, batch_size=..., steps=..., lr=...)`; the model
config gains `kind`, which picks the model module (see
jav.models.autoencoders.MODELS). Run it with

    python -m jav.train --config configs/FILE.py --workdir DIR
"""

import ml_collections

from configs import common
from jav import schema


def bounce_stream(duration=2.125, fields=("video", "logmel", "wave"), seed=0) -> ml_collections.ConfigDict:
    """The on-the-fly bounce world (jav/data/bounce_stream.py). The default 2.125 s
    at 8 fps is 17 frames = 1 + 4 * 4, what a 4x time-compressing VAE takes."""
    return ml_collections.ConfigDict(
        dict(
            source="bounce",
            seed=seed,  # training clip i of the stream is bounce seed `seed + i`; held-out clips start at 10^9
            fields=tuple(fields),  # arrays each batch holds: video [B, T, H, W, 3], logmel [B, Ta, n_mels], wave [B, S]
            canvas=32,
            fps=8,
            duration=duration,
            sample_rate=16000,
            eval_clips=16,  # held-out clips scored every train.eval_every steps
        )
    )


def loss(kl_weight=1e-6, l1=1.0, l2=0.0, structure=0.0, adv_weight=0.0, adv_start=0, disc_lr=2e-4, disc_width=32) -> ml_collections.ConfigDict:
    """Loss terms; the optional ones are off at weight 0.

    l1, l2: reconstruction terms (mean absolute / squared error).
    kl_weight: weight of the KL to N(0, 1), per latent value.
    structure: a perceptual term that needs no published network: L1 between
      the finite differences (space and time) of target and reconstruction at
      three scales. LPIPS would need published VGG weights, which jav does not
      download, so it is not offered.
    adv_weight, adv_start, disc_lr, disc_width: a patch discriminator with a
      hinge loss, its own Adam at disc_lr, trained and used from step adv_start on.
    """
    return ml_collections.ConfigDict(
        dict(kl_weight=kl_weight, l1=l1, l2=l2, structure=structure, adv_weight=adv_weight, adv_start=adv_start, disc_lr=disc_lr, disc_width=disc_width)
    )


def experiment(
    model_cfg,
    kind,
    *,
    batch_size,
    steps,
    lr=1e-3,
    warmup_steps=100,
    data=None,
    loss_cfg=None,
    log_every=25,
    checkpoint_every=500,
    eval_every=500,
    ema_decay=0.999,
) -> ml_collections.ConfigDict:
    """A whole autoencoder experiment: phase, model (with kind), data, loss, optimiser, run, mesh."""
    from jav.sharding import DEFAULT_RULES

    model_cfg = ml_collections.ConfigDict(model_cfg)
    model_cfg.kind = kind
    return ml_collections.ConfigDict(
        dict(
            phase="autoencoder",
            model=model_cfg,
            data=data if data is not None else bounce_stream(),
            loss=loss_cfg if loss_cfg is not None else loss(),
            optim=common.optim(lr, warmup_steps),
            train=dict(
                batch_size=batch_size,  # global, over all processes
                steps=steps,
                seed=0,
                log_every=log_every,
                checkpoint_every=checkpoint_every,
                keep_checkpoints=3,
                eval_every=eval_every,  # held-out PSNR every this many steps (0 = never)
                ema_decay=ema_decay,
                max_nonfinite=5,  # this many non-finite steps in a row stop the run
                **{k: v for k, v in schema.TRAIN.items() if k != "eval_every"},  # trainable, profile_steps, peak FLOP/s
            ),
            mesh=dict(shape=dict(data=1, fsdp=-1, context=1, tensor=1), rules=[list(r) for r in DEFAULT_RULES]),
            init_from="",  # DIR or DIR:ema: start from another autoencoder run's checkpoint
        )
    )
