"""The config schema of a diffusion run (phases diffusion, distill, reward): every
key of its model and sampling sections with its default, and `complete`, which fills
in one pass what a config lacks.

configs/common.py builds its model and sampling sections from here, so a config file
states only what it changes. A run directory's config.json written before a key
existed lacks it; `jav.runs.load_config` completes every config it reads, and the
trainer completes the one it starts from, so code reads `cfg.model.joint.time_bias`
rather than `cfg.model.joint.get("time_bias", 0.0)`.
"""

from __future__ import annotations

import ml_collections

from jav.flow import flow_config

DIFFUSION_PHASES = ("diffusion", "distill", "reward")


def model(
    video_width=128,
    video_heads=4,
    audio_width=64,
    audio_heads=2,
    depth=4,
    joint="cross_attn",
    every=1,
    video_patch=(1, 4, 4),
    video_channels=3,
    audio_patch=4,
    audio_channels=64,
    text_dim=64,
    text_encoder="builtin",
) -> ml_collections.ConfigDict:
    """A dual-branch model config, every key at its default but the usual knobs given here."""
    return ml_collections.ConfigDict(
        dict(
            video=dict(width=video_width, heads=video_heads, mlp_ratio=4.0, patch=video_patch, channels=video_channels, decoupled=False, temporal_window=2),
            audio=dict(width=audio_width, heads=audio_heads, mlp_ratio=4.0, patch=audio_patch, channels=audio_channels),
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
            joint=dict(
                mode=joint, every=every, time_bias=0.0, aligned=False, frame_tokens=0, aligned_read="mix", aligned_read_video="mix", heads="own", adaln="shared"
            ),
            text=dict(encoder=text_encoder, dim=text_dim, width=text_dim, depth=2, heads=2, vocab_size=1024, max_len=16),
            # layout: "jav" (angles shared by the heads; time in seconds x time_scale, h, w in
            # patches), "ltx2" (positions as fractions of max_pos, t seconds, h and w
            # pixels, over one ladder spread across the heads) or "wan" (Wan 2.1's split of
            # the head over t, h, w; t the latent frame, h, w in patches); pairs: "split" rotates
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
            # the norm before text cross-attention: "plain" (the pre-norm above) or "affine" (a
            # LayerNorm with a learned scale and bias, Wan's cross_attn_norm)
            text_norm="plain",
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
        )
    )


def sample(steps=32) -> ml_collections.ConfigDict:
    """Sampling defaults: Euler steps, guidance scales (1.0 = off), the sampler ("ode": the
    probability-flow ODE, "sde": the flow SDE with the same marginals) and the SDE's noise level;
    schedule: where the steps fall, a name of `jav.samplers.SCHEDULES` ("shift": jav's
    time-shifted grid, "ltx2": LTX-2's, stretched so its last step starts at 0.1, "ltx2_distilled": LTX-2's
    distilled model's 8 fixed steps); stg_scale (0 = off) and stg_blocks: spatio-temporal
    guidance away from a pass whose blocks stg_blocks (0-based) skip their self-attention
    (diffusers' LTX-2 pipeline: 1.0 at (28,), LTX-2.3's block; (29,) for LTX-2.0);
    guidance_rescale (0 = off; LTX-2: 0.7). See `jav.samplers.Guidance`."""
    return ml_collections.ConfigDict(
        dict(
            steps=steps,
            text_video=1.0,
            text_audio=1.0,
            modality=1.0,
            sampler="ode",
            noise_level=0.7,
            schedule="shift",
            stg_scale=0.0,
            stg_blocks=(),
            guidance_rescale=0.0,
        )
    )


# train keys that configs written before them lack, at the value that kept the old behaviour:
# every phase's (the loop reads them), and the diffusion phases' own
TRAIN = dict(eval_every=0, trainable="auto", peak_flops_per_device=0.0, profile_steps=[])
DIFFUSION_TRAIN = dict(grad_accum=1)


def _fill(cfg: ml_collections.ConfigDict, defaults) -> None:
    """Sets each key of `defaults` that `cfg` lacks, recursing into groups both have."""
    for key, value in defaults.items():
        if key not in cfg:
            cfg[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
        elif isinstance(value, (ml_collections.ConfigDict, dict)) and isinstance(cfg[key], ml_collections.ConfigDict):
            _fill(cfg[key], value)


def missing_keys(cfg, defaults, prefix: str = "") -> list[str]:
    """The dotted keys of `defaults` that `cfg` lacks."""
    out = []
    for key, value in defaults.items():
        if key not in cfg:
            out.append(prefix + key)
        elif isinstance(value, (ml_collections.ConfigDict, dict)) and isinstance(cfg[key], (ml_collections.ConfigDict, dict)):
            out += missing_keys(cfg[key], value, f"{prefix}{key}.")
    return out


def complete_model(model_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of a model section with every key it lacks at its default."""
    out = ml_collections.ConfigDict(model_cfg.to_dict())
    _fill(out, model())
    return out


def complete(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of a run's config with every schema key it lacks at its default: `phase`,
    `init_from` and the train keys of TRAIN for every phase, DIFFUSION_TRAIN, the model,
    flow (jav.flow.flow_config) and sampling sections for the diffusion phases (autoencoders and reward models have models of
    their own kinds)."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if "phase" not in cfg:
        cfg.phase = "diffusion"
    if "init_from" not in cfg:
        cfg.init_from = ""
    if "train" in cfg:
        _fill(cfg.train, TRAIN)
    if cfg.phase in DIFFUSION_PHASES:
        if "train" in cfg:
            _fill(cfg.train, DIFFUSION_TRAIN)
        if "model" in cfg:
            cfg.model = complete_model(cfg.model)
        if "flow" in cfg:
            _fill(cfg.flow, flow_config())
        if "sample" not in cfg:
            cfg.sample = {}
        _fill(cfg.sample, sample())
    return cfg
