"""Defaults shared by jav's configs: the bounce-world data and a model of a given size.

Each config in this folder starts from these and states its own changes, so a
config file reads as the list of what makes that experiment what it is.
"""

import ml_collections

from jav import schema


def bounce_data() -> ml_collections.ConfigDict:
    """The bounce world in pixel / log-mel space (see docs/bounce_world.md)."""
    return ml_collections.ConfigDict(
        dict(
            world="bounce",
            canvas=32,
            fps=8,
            duration=2.0,
            sample_rate=16000,
            mel_hop=160,
            mel_bins=64,
            # (mean, std) standardising model-space video / log-mel into tokens (jav.clip_tokens)
            video_norm=(0.0, 1.0),
            audio_norm=(0.0, 1.0),
            dir="",  # shards from `python -m jav.data.synthetic --out DIR --num N`
        )
    )


def latent_data(
    latent_frames, seconds, height, width, *, video_channels, audio_channels, text_len, pixel_fps, time_compression, space_compression, audio_latents_per_s=25
):
    """Precomputed latents of a published model's VAEs (`world="latent"`): clips of `seconds`
    at `pixel_fps`, `height` x `width` pixels, as `latent_frames` video latents (the VAE
    compresses time `time_compression`x after the first frame and space
    `space_compression`x) and audio latents at `audio_latents_per_s` (16 kHz, hop 160)."""
    return dict(
        world="latent",
        video_latent_shape=(latent_frames, height // space_compression, width // space_compression, video_channels),
        audio_latent_shape=(int(seconds * audio_latents_per_s), audio_channels),
        text_len=text_len,
        fps=latent_frames / seconds,  # latent frames per second
        audio_rate=float(audio_latents_per_s),
        # the VAEs the latents come from: token times and, with model.rope.layout "ltx2" / "wan", positions
        pixel_fps=float(pixel_fps),
        video_time_compression=time_compression,
        video_space_compression=space_compression,
        sample_rate=16_000,
        mel_hop=160,
    )


def model(**knobs) -> ml_collections.ConfigDict:
    """A dual-branch model config: jav.schema.model (every key with its default and what it
    means), the usual knobs (widths, heads, depth, joint mode, patches) given here."""
    return schema.model(**knobs)


def optim(lr=1e-3, warmup_steps=50) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            lr=lr,
            warmup_steps=warmup_steps,
            end_lr_fraction=0.1,
            b1=0.9,
            b2=0.99,
            weight_decay=0.0,
            grad_clip=1.0,
        )
    )


def sample(steps=32) -> ml_collections.ConfigDict:
    """Sampling defaults (jav.schema.sample): Euler steps, guidance scales (1.0 = off), sampler."""
    return schema.sample(steps)


def experiment(model_cfg, batch_size, steps, lr=1e-3, warmup_steps=50) -> ml_collections.ConfigDict:
    """A whole experiment on the bounce world: data, model, flow, optimiser, run."""
    from jav.flow import flow_config

    from jav.sharding import DEFAULT_RULES

    return ml_collections.ConfigDict(
        dict(
            data=bounce_data(),
            model=model_cfg,
            flow=flow_config(),
            optim=optim(lr, warmup_steps),
            train=dict(
                batch_size=batch_size,  # global, over all processes
                grad_accum=1,  # microbatches per step: activation memory of batch_size / grad_accum
                steps=steps,
                seed=0,
                log_every=25,
                checkpoint_every=500,
                keep_checkpoints=3,
                ema_decay=0.999,
                max_nonfinite=5,  # this many non-finite steps in a row stop the run
                peak_flops_per_device=0.0,  # for the MFU estimate; 0: jav.perf's datasheet peak of the chip, or a measured matmul peak on CPU
                profile_steps=[],  # [first, end): a jax.profiler trace of those steps in WORKDIR/profile
                eval_every=0,  # held-out samples scored (cfg.eval) every this many steps and at the end; 0: never
                # which parameters train: "auto" (the LoRA adapters where model.lora.rank > 0, else all) or a
                # regular expression searched in each parameter's path (e.g. "audio|cross"; see jav.train.step)
                trainable="auto",
            ),
            # what the trainer samples every train.eval_every steps: the captions of `num` held-out
            # bounce-world clips per task, with the EMA weights and the config's sampling settings,
            # written to WORKDIR/evals/step_NNNNNNN/TASK/ (jav.evaluate's layout; jav.report reads it),
            # their metrics to TensorBoard and metrics.jsonl ("eval_TASK_METRIC"), and the first `media`
            # clips' contact sheets and sound to TensorBoard
            eval=dict(num=4, tasks="t2va", media=2),
            # dcn: {axis: slices} for a job over several TPU slices (jav.sharding.make_mesh), e.g. {"data": 2}
            mesh=dict(shape=dict(data=1, fsdp=-1, context=1, tensor=1), dcn=dict(), rules=[list(r) for r in DEFAULT_RULES]),
            init_from="",  # DIR or DIR:ema: start from another run's checkpoint
            sample=sample(),
        )
    )
