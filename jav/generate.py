"""Jitted generation: captions (and optional conditions) -> video and audio arrays.

A distilled student (jav/train/distill.py) is sampled the same way: its guidance
scales go in as an input, one network pass per step.

One compiled function per sampler, layout and batch size: the model state is an
argument (not a baked-in constant), the loop is a `lax.scan` inside the sampler.
Conditioning by clean tokens covers every task of the shared model: I2VA (a
given first frame), V2A (a given video) and A2V (a given audio track).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jav import flow, samplers, sharding
from jav.clip_tokens import TokenLayout


SAMPLERS = ("ode", "sde")


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "num_steps", "guidance", "mu", "on_step", "sampler", "noise_level", "schedule"))
def _sample(
    graphdef,
    state,
    key,
    text_in,
    text_mask,
    clean,
    x_clean,
    *,
    layout,
    num_steps,
    guidance,
    mu,
    on_step=None,
    sampler="ode",
    noise_level=0.7,
    negative_in=None,
    negative_mask=None,
    schedule=samplers.SCHEDULES["shift"],
):
    model = nnx.merge(graphdef, state)

    def encode(ids_or_emb, mask):  # token ids [B, L] for the built-in encoder, else precomputed embeddings [B, L, D]
        return model.encode_text(ids_or_emb, mask) if jnp.issubdtype(ids_or_emb.dtype, jnp.integer) else ids_or_emb

    text = encode(text_in, text_mask)
    negative = None if negative_in is None else (encode(negative_in, negative_mask), negative_mask)
    b = text_in.shape[0]
    shapes = {m: (b, n, x_clean[m].shape[-1]) for m, n in layout.num_tokens.items()}
    per_clip = _per_clip(key)
    clip_keys = key if per_clip else None
    if per_clip:  # one key per clip: each clip's noise is its own, whatever batch it is sampled in
        shapes = {
            m: jax.vmap(lambda k, i=i, s=s: flow.standard_normal(jax.random.fold_in(k, i), s[1:]))(key) for i, (m, s) in enumerate(sorted(shapes.items()))
        }
        key = None
    # a distilled student takes the guidance scales as input (one pass a step) and,
    # with model.interval_embed, the length of each step (a few-step sampler)
    takes_guidance = model.guide is not None
    denoise = layout.denoiser(model, guidance.as_array(b) if takes_guidance else None)
    passes = samplers.NO_GUIDANCE if takes_guidance else guidance  # the guidance the sampler runs as extra passes
    if sampler == "sde":
        return samplers.sde_sample(
            denoise,
            key,
            shapes,
            text,
            text_mask,
            num_steps=num_steps,
            mu=dict(mu),
            guidance=passes,
            noise_level=noise_level,
            clean=clean,
            x_clean=x_clean,
            clip_keys=clip_keys,
            negative=negative,
            schedule=schedule,
        ).x
    return samplers.euler_sample(
        denoise,
        key,
        shapes,
        text,
        text_mask,
        num_steps=num_steps,
        mu=dict(mu),
        guidance=passes,
        clean=clean,
        x_clean=x_clean,
        on_step=on_step,
        mean_velocity=model.interval is not None,
        negative=negative,
        schedule=schedule,
    )


def _per_clip(key: jax.Array) -> bool:
    """Whether `key` is [B] keys, one per clip, rather than one key for the batch."""
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 1


def _second_stage(key: jax.Array) -> jax.Array:
    """The key (or [B] per-clip keys) of a second sampling stage: new noise, still a function of each clip's own key."""
    if _per_clip(key):
        return jax.vmap(lambda k: jax.random.fold_in(k, 1))(key)
    return jax.random.fold_in(key, 1)


def conditions(layout: TokenLayout, batch: int, first_frame=None, video=None, audio=None) -> tuple[dict, dict]:
    """Clean masks and values for the sampler from optional model-space conditions:
    `first_frame` [B, pt, H, W, C] (I2VA: the first temporal patch, pt frames), `video` [B, T, H, W, C] (V2A), `audio` [B, Ta, Ca] (A2V)."""
    t, h, w, c = layout.video_shape
    v = np.zeros((batch, t, h, w, c), np.float32)
    a = np.zeros((batch,) + layout.audio_shape, np.float32)
    clean_v = np.zeros((batch, layout.num_tokens["video"]), bool)
    clean_a = np.zeros((batch, layout.num_tokens["audio"]), bool)
    if video is not None:
        v[:] = video
        clean_v[:] = True
    elif first_frame is not None:
        pt = layout.video_patch[0]
        if first_frame.shape[1] != pt:
            raise ValueError(
                f"I2VA holds the first temporal patch clean: pass first_frame with {pt} frame(s) (model.video.patch[0]={pt}), got {first_frame.shape[1]}"
            )
        v[:, :pt] = first_frame
        clean_v[:] = layout.first_frame[None]
    if audio is not None:
        a[:] = audio
        clean_a[:] = True
    x_clean = layout.to_tokens(jnp.asarray(v), jnp.asarray(a))
    return {"video": jnp.asarray(clean_v), "audio": jnp.asarray(clean_a)}, x_clean


def generate(
    model,
    layout: TokenLayout,
    captions: Sequence[str],
    key: jax.Array,
    *,
    num_steps: int,
    flow_cfg,
    guidance: samplers.Guidance = samplers.NO_GUIDANCE,
    schedule: samplers.Schedule = samplers.SCHEDULES["shift"],
    first_frame=None,
    video=None,
    audio=None,
    on_step=None,
    text_encoder=None,
    sampler: str = "ode",
    noise_level: float = 0.7,
    two_stage: bool = False,
    negative_captions: Sequence[str] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules=(),
) -> tuple[np.ndarray, np.ndarray]:
    """-> model-space video [B, T, H, W, C] and audio [B, Ta, Ca] as NumPy arrays.

    `key`: one key for the batch, or one per caption ([B] keys, e.g.
    `jax.random.key(np.array(seeds))`), so that a clip's noise depends on its own
    key only and the clip reproduces alone or in any batch.
    `on_step(n)` is called on the host after each of the `num_steps` steps (progress
    display; ODE only); pass the same function each call to reuse the compiled sampler.
    `sampler`: "ode" (Euler steps of the probability-flow ODE) or "sde" (the flow SDE
    with the same marginals, `noise_level` its a; with per-clip keys each clip's step
    noise is its own too). A few-step student (model.interval_embed) takes the ODE.
    `schedule`: where the steps fall (`jav.samplers.Schedule`; `samplers.schedule_from(cfg)`).
    A model trained on precomputed text (model.text.encoder 'precomputed') needs the
    frozen encoder that made its embeddings: `text_encoder` (jav.frozen_text_encoder.load_text_encoder).
    `two_stage` (T2VA and I2VA): the joint sampler makes the video, then the soundtrack
    is sampled again with that video given clean (the model's V2A task), from noise
    of its own: twice the passes, and the sound reads a finished picture instead of
    one that is still being denoised beside it.
    `negative_captions` (one per caption; "" for none): text guidance steers away from
    them instead of from no caption. They act through the text scales, so a text scale
    must be above 1; a distilled student takes its guidance as input and has no negative.
    `mesh` (a model loaded onto it, `jav.runs.load_run(..., mesh=)`): the clips are split
    over the mesh axes of the logical batch axis (`rules`, as in training; the batch must
    divide them), the model's own shardings as trained; with several processes every
    process passes the same captions and gets every clip back.
    """
    if model.guide is not None and guidance.uses_stg_or_rescale():
        raise ValueError(
            "a distilled student takes its text and modality scales as input, one pass a step: "
            "sample it without STG or guidance rescale (sample.stg_scale=0, sample.guidance_rescale=0)"
        )
    if model.text_encoder is not None:
        encode = model.text_encoder.tokenizer.encode
    elif text_encoder is None:
        raise ValueError(
            "this model reads precomputed text embeddings: pass text_encoder= the frozen encoder "
            "that embedded its training captions (load_text_encoder('hf:DIR'); jav.sample --text-encoder)"
        )
    else:
        encode = text_encoder.encode
    text_in, mask = encode(list(captions))
    negative = {}
    if negative_captions is not None:
        if len(negative_captions) != len(captions):
            raise ValueError(f"{len(negative_captions)} negative captions for {len(captions)} captions: give one per caption ('' for none)")
        if model.guide is not None:
            raise ValueError(
                "a distilled student takes its guidance scales as input and has no unconditional pass "
                "for a negative prompt to replace: sample it without negative captions"
            )
        if not guidance.uses_text():
            raise ValueError(
                "a negative prompt acts through text guidance: set a text guidance scale above 1 "
                "(sample.text_video / text_audio; jav.sample --cfg-video / --cfg-audio)"
            )
        neg_in, neg_mask = encode(list(negative_captions))
        # "" stands for no negative: that clip's unconditional pass reads no text, as without negatives
        none = np.array([not c.strip() for c in negative_captions])
        negative = dict(negative_in=jnp.asarray(neg_in), negative_mask=jnp.asarray(np.asarray(neg_mask) & ~none[:, None]))
    clean, x_clean = conditions(layout, len(captions), first_frame, video, audio)
    mu = tuple(sorted((m, float(v)) for m, v in flow.sampling_mu(flow_cfg, layout.num_tokens).items()))
    graphdef, state = nnx.split(model)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if sampler == "sde" and model.interval is not None:
        raise ValueError("a few-step student (model.interval_embed) samples with the ODE sampler; use sampler='ode'")
    if two_stage and (video is not None or audio is not None):
        raise ValueError(
            "two_stage samples T2VA or I2VA (the video first, then its sound); with a given "
            f"{'video' if video is not None else 'audio'} there is one stage: drop two_stage"
        )
    run = functools.partial(
        _sample,
        graphdef,
        state,
        layout=layout,
        num_steps=num_steps,
        guidance=guidance,
        mu=mu,
        on_step=on_step if sampler == "ode" else None,
        sampler=sampler,
        noise_level=float(noise_level),
        schedule=schedule,
        **negative,
    )
    if mesh is not None and not _per_clip(key):
        raise ValueError("sampling on a mesh takes one key per clip (jav.sample.clip_keys(seeds)), so that each clip is its own")
    place = (lambda tree: tree) if mesh is None else functools.partial(_on_mesh, mesh, rules)
    with _mesh_context(mesh, rules):
        run = functools.partial(run, text_in=place(jnp.asarray(text_in)), text_mask=place(jnp.asarray(mask)), **{k: place(v) for k, v in negative.items()})
        tokens = run(place(key), clean=place(clean), x_clean=place(x_clean))
        if two_stage:  # the same clips' V2A: the generated video held clean, the audio from new noise
            clean = dict(clean, video=jnp.ones_like(clean["video"]))
            tokens = run(place(_second_stage(key)), clean=place(clean), x_clean=dict(place(x_clean), video=tokens["video"]))
        v, a = layout.from_tokens(tokens)
        return _gather(v), _gather(a)


@contextlib.contextmanager
def _mesh_context(mesh, rules):
    """The mesh and logical rules the sampler traces under (nothing without a mesh)."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        yield


def _on_mesh(mesh, rules, tree):
    """Host or single-device arrays (the same on every process) -> global arrays, rows split over the batch's mesh axes."""
    shards = sharding.batch_shards(mesh, rules)

    def one(a):
        if len(a) % shards:
            raise ValueError(
                f"{len(a)} clips do not split over the mesh's {shards} batch shards {dict(mesh.shape)}: "
                "sample a batch that is a multiple of them (jav.sample --batch)"
            )
        keys = jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(a) if keys else a)
        placement = sharding.batch_sharding(mesh, rules, host.ndim)
        placed = jax.make_array_from_callback(host.shape, placement, lambda index: host[index])
        return jax.random.wrap_key_data(placed) if keys else placed

    return jax.tree.map(one, tree)


def _gather(a: jax.Array) -> np.ndarray:
    """A global array -> the whole of it on this host (every process gets every row)."""
    if a.is_fully_addressable:
        return np.asarray(a)
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
