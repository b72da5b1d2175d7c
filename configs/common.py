"""Defaults shared by jav's configs: the bounce-world data and a model of a given size.

Each config in this folder starts from these and states its own changes, so a
config file reads as the list of what makes that experiment what it is.
"""
import ml_collections


def bounce_data() -> ml_collections.ConfigDict:
    """The bounce world in pixel / log-mel space (see docs/bounce_world.md)."""
    return ml_collections.ConfigDict(dict(
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
    ))


def model(
    video_width=128, video_heads=4, audio_width=64, audio_heads=2, depth=4,
    joint="cross_attn", every=1, video_patch=(1, 4, 4), video_channels=3,
    audio_patch=4, audio_channels=64, text_dim=64, text_encoder="builtin",
) -> ml_collections.ConfigDict:
    """A dual-branch model config; widths and depth are the usual knobs."""
    return ml_collections.ConfigDict(dict(
        video=dict(width=video_width, heads=video_heads, mlp_ratio=4.0, patch=video_patch,
                   channels=video_channels, decoupled=False, temporal_window=2),
        audio=dict(width=audio_width, heads=audio_heads, mlp_ratio=4.0, patch=audio_patch,
                   channels=audio_channels),
        depth=depth,
        # time_bias: cross_attn logits fall by this much per second between a query
        # and a key in the sharpest head, halving per head (0: off); aligned: cross_attn
        # and joint_attn layers also add the other modality's features at each token's
        # instant through a fixed kernel in time (jav.models.av_dit.AlignedPath);
        # frame_tokens: keep each of a frame's H'W' tokens in place on that path (0: mean
        # over space); aligned_read: "mix" the two frames around a sound token's instant,
        # or read them apart with the phase between them ("pair"); aligned_read_video: a
        # frame reads the sound around it as one average ("mix") or in SOUND_BINS parts
        # each projected on its own ("bins": where the burst falls); heads: cross_attn
        # queries in their own branch's heads ("own") or both in the audio branch's
        # ("audio", LTX-2); adaln: cross_attn shifts, scales and gates as chunks of each
        # branch's AdaLN ("shared") or from their own timestep embeddings ("own", LTX-2)
        joint=dict(mode=joint, every=every, time_bias=0.0, aligned=False, frame_tokens=0, aligned_read="mix",
                   aligned_read_video="mix", heads="own", adaln="shared"),
        text=dict(encoder=text_encoder, dim=text_dim, width=text_dim, depth=2, heads=2,
                  vocab_size=1024, max_len=16),
        # layout: "jav" (angles shared by the heads; time in seconds x time_scale, h, w in
        # patches) or "ltx2" (positions as fractions of max_pos, t seconds, h and w
        # pixels, over one ladder spread across the heads); pairs: "split" rotates
        # (i, i + Dh/2), "interleaved" (2i, 2i + 1) (jav.models.rope)
        rope=dict(theta=10_000.0, time_scale=25.0, layout="jav", pairs="split", max_pos=(20.0, 2048.0, 2048.0)),
        # kernel: "xla" (einsums, any platform), "cudnn" (GPU; computes in bf16),
        # "splash" (TPU Pallas). context: how attention over video tokens split
        # over the mesh's context axis runs, "ring" (K/V blocks passed around)
        # or "ulysses" (all-to-all to heads; video heads divisible by context x tensor)
        attention=dict(kernel="xla", context="ring"),
        qk_norm=True,
        qk_norm_across_heads=False,  # True: one RMS norm over all heads' dims, an (H, Dh) scale (LTX-2)
        norm="layer",  # the blocks' pre-norms: "layer" or "rms" (LTX-2); parameter-free either way
        abs_pos=True,
        prediction="velocity",
        x0_min_t=0.05,
        # inputs of distilled students (jav/train/distill.py): the guidance scales, and
        # the length of the step the output spans (a mean velocity); both start at zero
        guidance_embed=False,
        interval_embed=False,
        remat="none",
        scan_layers=True,
        # low-rank adapters (jav.models.lora) on the "attn" and / or "mlp" projections; rank 0: none.
        # A run with adapters trains only them unless train.trainable says otherwise
        lora=dict(rank=0, alpha=0.0, targets="attn,mlp"),
        dtype="float32",
        param_dtype="float32",
    ))


def optim(lr=1e-3, warmup_steps=50) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        lr=lr, warmup_steps=warmup_steps, end_lr_fraction=0.1, b1=0.9, b2=0.99,
        weight_decay=0.0, grad_clip=1.0,
    ))


def sample(steps=32) -> ml_collections.ConfigDict:
    """Sampling defaults: Euler steps and guidance scales (1.0 = off)."""
    return ml_collections.ConfigDict(dict(steps=steps, text_video=1.0, text_audio=1.0, modality=1.0))


def experiment(model_cfg, batch_size, steps, lr=1e-3, warmup_steps=50) -> ml_collections.ConfigDict:
    """A whole experiment on the bounce world: data, model, flow, optimiser, run."""
    from jav.flow import flow_config

    from jav.sharding import DEFAULT_RULES

    return ml_collections.ConfigDict(dict(
        data=bounce_data(),
        model=model_cfg,
        flow=flow_config(),
        optim=optim(lr, warmup_steps),
        train=dict(
            batch_size=batch_size,  # global, over all processes
            grad_accum=1,  # microbatches per step: activation memory of batch_size / grad_accum
            steps=steps, seed=0, log_every=25, checkpoint_every=500, keep_checkpoints=3,
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
    ))
