"""Context parallelism: attention over video tokens split across devices, by
ring attention or by Ulysses all-to-all (`model.attention.context`), written
with jax.shard_map; and the entry points every model attention goes through,
which run the plain kernel when no token axis is split.

The video token axis (`activation_length`) is split over the mesh axes the
rules give it (`context` by default). Audio is far shorter than video (LTX-2
at 5 s: 125 audio tokens against about 14k video tokens), so every context
shard keeps the whole audio sequence (`activation_audio_length` maps to no
mesh axis). What each attention then does:

| attention            | queries | keys                  | ring                                      | ulysses                                        |
|----------------------|---------|-----------------------|-------------------------------------------|------------------------------------------------|
| video self           | split   | split                 | K/V blocks rotate (ppermute), online softmax | all-to-all tokens->heads, local kernel, back |
| audio self, text, a2v| -/split | whole                 | local, no communication                   | local, no communication                        |
| v2a                  | whole   | split                 | each shard attends its video chunk, partial results merge by log-sum-exp across context (one all-reduce of audio size) | same: moving the video K/V would cost more |
| joint, video rows    | split   | [video split; audio]  | ring over video, plus the local audio block | all-to-all, local kernel over [video; audio heads slice] |
| joint, audio rows    | whole   | [video split; audio]  | log-sum-exp merge over video chunks, then the whole-audio keys added once, after the all-reduce | the same local kernel call on its heads slice; its output stays split over heads |

Inside shard_map the other mesh axes keep working: specs come from the logical
rules (batch over data/fsdp, heads over tensor). A token count not divisible
by the context size is padded with masked tokens and stripped after. Ring and
the log-sum-exp merges compute their blocks with XLA einsums whatever the
kernel (they need each block's log-sum-exp); ulysses and the local cases use
`model.attention.kernel`. Gradients are JAX's own through ppermute, all_to_all
and psum: no custom_vjp, so the ring's scan keeps each step's block for the
backward pass (the layer's remat policy bounds that).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jav.models.attention_kernels import Mask, attend
from jav.sharding import logical_to_spec, mesh_axes_of

CONTEXT_MODES = ("ring", "ulysses")


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: Mask | None, *, q_length: str | None, k_length: str | None, kernel: str = "xla", context: str = "ring"
) -> jax.Array:
    """q [B, Nq, H, Dh], k/v [B, Nk, H, Dh] -> [B, Nq, H, Dh]; `q_length` / `k_length`
    are the logical names of the token axes (None: never split)."""
    q_axes, k_axes = mesh_axes_of(q_length), mesh_axes_of(k_length)
    if not q_axes and not k_axes:
        return _plain(q, k, v, mask, kernel, q_length, k_length)
    if q_axes and k_axes and q_axes != k_axes:
        raise ValueError(
            f"queries ({q_length}) and keys ({k_length}) are split over different mesh axes {q_axes} and {k_axes}; map both to the same axes in mesh.rules"
        )
    _check_context(context)
    if mask is not None and mask.window is not None:
        raise ValueError("windowed attention (model.video.decoupled=True) does not support context parallelism; set mesh.shape.context=1")
    axes = q_axes or k_axes
    size = _size(axes)
    nq = q.shape[1]
    q_valid = _valid(None if mask is None else mask.q_valid, q)
    k_valid = _valid(None if mask is None else mask.k_valid, k)
    if q_axes:
        q, q_valid = _pad(q, size), _pad(q_valid, size)
    if k_axes:
        k, v, k_valid = _pad(k, size), _pad(v, size), _pad(k_valid, size)
    q_spec, qv_spec = _specs(q, q_length)
    k_spec, kv_spec = _specs(k, k_length)
    name = _name(axes)

    if q_axes and k_axes and context == "ulysses":
        _check_ulysses_heads(q, q_spec, size)

        def body(q, k, v, q_valid, k_valid):
            q, k, v = (_to_heads(x, name) for x in (q, k, v))
            q_valid, k_valid = _gather_tokens(q_valid, name), _gather_tokens(k_valid, name)
            return _to_tokens(attend(q, k, v, Mask(q_valid, k_valid), kernel), name)
    elif q_axes and k_axes:

        def body(q, k, v, q_valid, k_valid):
            return _finish(_ring(q, k, v, k_valid, name, size), q_valid, q.dtype)
    elif q_axes:

        def body(q, k, v, q_valid, k_valid):
            return attend(q, k, v, Mask(q_valid, k_valid), kernel)
    else:

        def body(q, k, v, q_valid, k_valid):
            return _finish(_across(_block(q, k, v, k_valid), name), q_valid, q.dtype)

    out = jax.shard_map(
        body, mesh=jax.sharding.get_abstract_mesh(), in_specs=(q_spec, k_spec, k_spec, qv_spec, kv_spec), out_specs=q_spec, check_vma=_check_vma(kernel)
    )(q, k, v, q_valid, k_valid)
    return out[:, :nq]


def joint_attention(
    video: tuple,
    audio: tuple,
    valid_video: jax.Array | None,
    valid_audio: jax.Array | None,
    cross_modal: jax.Array,
    *,
    video_length: str,
    audio_length: str,
    kernel: str = "xla",
    context: str = "ring",
) -> tuple[jax.Array, jax.Array]:
    """MMDiT attention over [video; audio]: `video` and `audio` are (q, k, v), each
    [B, N_m, H, Dh]; valid_* [B, N_m] bool or None; cross_modal [B] bool (False:
    each modality attends only itself) -> (video out [B, Nv, H, Dh], audio out [B, Na, H, Dh]).

    The queries are split by modality so that each part's mask is a key mask
    (no [N, N] array): video rows see audio keys only where cross_modal is on,
    and audio rows see video keys likewise.
    """
    (qv, kv, vv), (qa, ka, va) = video, audio
    valid_video, valid_audio = _valid(valid_video, qv), _valid(valid_audio, qa)
    video_axes, audio_axes = mesh_axes_of(video_length), mesh_axes_of(audio_length)
    if audio_axes:
        raise ValueError(
            f"joint attention keeps the whole audio sequence on every device, but mesh.rules split '{audio_length}' over {audio_axes}; map it to None"
        )
    if not video_axes:
        k, v = jnp.concatenate([kv, ka], axis=1), jnp.concatenate([vv, va], axis=1)  # [B, Nv + Na, H, Dh]
        keys_video, keys_audio = _joint_keys(valid_video, valid_audio, cross_modal)
        return (_plain(qv, k, v, Mask(None, keys_video), kernel, video_length, None), _plain(qa, k, v, Mask(None, keys_audio), kernel, audio_length, None))

    _check_context(context)
    size, name, nv = _size(video_axes), _name(video_axes), qv.shape[1]
    qv, kv, vv, valid_video = (_pad(x, size) for x in (qv, kv, vv, valid_video))
    v_spec, vv_spec = _specs(qv, video_length)
    a_spec, av_spec = _specs(qa, audio_length)
    cross_spec = jax.P(v_spec[0])

    if context == "ulysses":
        hc = _check_ulysses_heads(qv, v_spec, size)

        def body(qv, kv, vv, qa, ka, va, valid_video, valid_audio, cross_modal):
            start = jax.lax.axis_index(name) * hc

            def own_heads(x):  # [B, Na, H, Dh] -> this shard's [B, Na, H / context, Dh]
                return jax.lax.dynamic_slice_in_dim(x, start, hc, axis=2)

            qv, kv, vv = (_to_heads(x, name) for x in (qv, kv, vv))  # [B, Nv, H / context, Dh]
            k = jnp.concatenate([kv, own_heads(ka)], axis=1)
            v = jnp.concatenate([vv, own_heads(va)], axis=1)
            keys_video, keys_audio = _joint_keys(_gather_tokens(valid_video, name), valid_audio, cross_modal)
            ov = _to_tokens(attend(qv, k, v, Mask(None, keys_video), kernel), name)
            return ov, attend(own_heads(qa), k, v, Mask(None, keys_audio), kernel)

        # the audio output leaves split over heads: context shards hold head slices
        heads = tuple(a for a in _entry(a_spec[2]) if a not in video_axes) + video_axes
        oa_spec = jax.P(a_spec[0], None, heads[0] if len(heads) == 1 else heads, None)
    else:

        def body(qv, kv, vv, qa, ka, va, valid_video, valid_audio, cross_modal):
            cross = cross_modal[:, None]
            video_rows = _merge(_ring(qv, kv, vv, valid_video, name, size), _block(qv, ka, va, valid_audio & cross))
            # audio rows: partial results over each shard's video chunk merge across
            # context first; the whole-audio keys join after, so they count once
            audio_rows = _merge(_across(_block(qa, kv, vv, valid_video & cross), name), _block(qa, ka, va, valid_audio))
            return _finish(video_rows, None, qv.dtype), _finish(audio_rows, None, qa.dtype)

        oa_spec = a_spec

    ov, oa = jax.shard_map(
        body,
        mesh=jax.sharding.get_abstract_mesh(),
        check_vma=_check_vma(kernel),
        in_specs=(v_spec,) * 3 + (a_spec,) * 3 + (vv_spec, av_spec, cross_spec),
        out_specs=(v_spec, oa_spec),
    )(qv, kv, vv, qa, ka, va, valid_video, valid_audio, cross_modal)
    return ov[:, :nv], oa


def context_size(length: str | None = "activation_length") -> int:
    """How many shards a logical token axis is split into on the current mesh (1: none)."""
    return _size(mesh_axes_of(length))


def _plain(q, k, v, mask: Mask | None, kernel: str, q_length: str | None, k_length: str | None) -> jax.Array:
    """No token axis is split. XLA's einsums are partitioned by GSPMD; the other
    kernels are custom calls, run per device under shard_map."""
    mesh = jax.sharding.get_abstract_mesh()
    if kernel == "xla" or mesh.empty:
        return attend(q, k, v, mask, kernel)
    q_spec, qv_spec = _specs(q, q_length)
    k_spec, kv_spec = _specs(k, k_length)
    q_valid = _valid(None if mask is None else mask.q_valid, q)
    k_valid = _valid(None if mask is None else mask.k_valid, k)
    window = None if mask is None else mask.window
    return jax.shard_map(
        lambda q, k, v, qm, km: attend(q, k, v, Mask(qm, km, window), kernel),
        mesh=mesh,
        check_vma=_check_vma(kernel),
        in_specs=(q_spec, k_spec, k_spec, qv_spec, kv_spec),
        out_specs=q_spec,
    )(q, k, v, q_valid, k_valid)


def _check_vma(kernel: str) -> bool:
    """shard_map's check of how values vary over mesh axes: the Pallas (splash)
    and cuDNN kernels are custom calls whose outputs carry no such annotation,
    and a TPU compile of splash under the check fails, so it is on for XLA only."""
    return kernel == "xla"


# -- blockwise softmax ---------------------------------------------------------


class _Partial(NamedTuple):
    """Attention of some queries over a subset of the keys, not yet normalised."""

    acc: jax.Array  # [B, Nq, H, Dh] float32: sum_j exp(s_j - m) v_j
    m: jax.Array  # [B, Nq, H] float32: max logit so far (no gradient: the result does not depend on it); -inf before any key
    l: jax.Array  # [B, Nq, H] float32: sum_j exp(s_j - m)


def _finite(m):
    return jnp.where(jnp.isfinite(m), m, 0.0)


def _block(q, k, v, k_valid) -> _Partial:
    """q [B, Nq, H, Dh] over one block of keys k/v [B, Nk, H, Dh], k_valid [B, Nk]."""
    s = jnp.einsum("bqhd,bkhd->bqhk", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    s = jnp.where(k_valid[:, None, None, :], s, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1))
    p = jnp.exp(s - _finite(m)[..., None])  # masked keys: exp(-inf) = 0
    acc = jnp.einsum("bqhk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return _Partial(acc, m, jnp.sum(p, axis=-1))


def _merge(a: _Partial, b: _Partial) -> _Partial:
    m = jnp.maximum(a.m, b.m)
    ca, cb = jnp.exp(a.m - _finite(m)), jnp.exp(b.m - _finite(m))
    return _Partial(a.acc * ca[..., None] + b.acc * cb[..., None], m, a.l * ca + b.l * cb)


def _across(p: _Partial, name) -> _Partial:
    """Merges the partial results of every shard of `name` (one all-reduce of the query size)."""
    m = jax.lax.pmax(p.m, name)
    c = jnp.exp(p.m - _finite(m))
    return _Partial(jax.lax.psum(p.acc * c[..., None], name), m, jax.lax.psum(p.l * c, name))


def _finish(p: _Partial, q_valid, dtype) -> jax.Array:
    """Normalises; rows with no valid key (l = 0) and invalid queries give zeros."""
    has = p.l > 0
    out = jnp.where(has[..., None], p.acc / jnp.where(has, p.l, 1.0)[..., None], 0.0)
    if q_valid is not None:
        out = jnp.where(q_valid[:, :, None, None], out, 0.0)
    return out.astype(dtype)


def _ring(q, k, v, k_valid, name, size: int) -> _Partial:
    """Local queries over every shard's keys: each step attends the K/V block in
    hand and passes it to the next shard, so step s sees shard (i - s)'s block."""
    perm = [(i, (i + 1) % size) for i in range(size)]

    def step(carry, _):
        part, k, v, k_valid = carry
        k, v, k_valid = jax.lax.ppermute((k, v, k_valid), name, perm)
        return (_merge(part, _block(q, k, v, k_valid)), k, v, k_valid), None

    (part, *_), _ = jax.lax.scan(step, (_block(q, k, v, k_valid), k, v, k_valid), length=size - 1)
    return part


# -- ulysses -------------------------------------------------------------------


def _to_heads(x, name):
    """[B, N / c, H, Dh] split over tokens -> [B, N, H / c, Dh] split over heads."""
    return jax.lax.all_to_all(x, name, split_axis=2, concat_axis=1, tiled=True)


def _to_tokens(x, name):
    """[B, N, H / c, Dh] -> [B, N / c, H, Dh]."""
    return jax.lax.all_to_all(x, name, split_axis=1, concat_axis=2, tiled=True)


def _gather_tokens(valid, name):
    """[B, N / c] -> [B, N] (token masks are small)."""
    return jax.lax.all_gather(valid.astype(jnp.int8), name, axis=1, tiled=True) > 0


def _check_context(context: str) -> None:
    if context not in CONTEXT_MODES:
        raise ValueError(f"model.attention.context={context!r} is not one of {CONTEXT_MODES}")


def _check_ulysses_heads(q, spec, size: int) -> int:
    """-> heads per device after the all-to-all; errors if they do not divide."""
    local = q.shape[2] // _spec_size(spec[2])
    if local % size:
        raise ValueError(
            f"model.attention.context='ulysses' splits the heads over context: {q.shape[2]} heads on "
            f"{_spec_size(spec[2])} tensor shard(s) are not divisible by mesh context={size}; "
            f"use model.attention.context='ring' or heads divisible by context x tensor"
        )
    return local // size


# -- specs and padding ---------------------------------------------------------


def _entry(entry) -> tuple[str, ...]:
    return (entry,) if isinstance(entry, str) else tuple(entry or ())


def _size(axes) -> int:
    mesh = jax.sharding.get_abstract_mesh()
    return math.prod(mesh.shape[a] for a in axes)


def _spec_size(entry) -> int:
    return _size(_entry(entry))


def _name(axes: tuple[str, ...]):
    return axes[0] if len(axes) == 1 else axes


def _spec(x: jax.Array, logical) -> jax.sharding.PartitionSpec:
    """The rules' spec for x, keeping per dimension only mesh axes that divide it:
    a batch of 1 at sampling time runs replicated rather than failing."""
    mesh = jax.sharding.get_abstract_mesh()
    entries = []
    for size, entry in zip(x.shape, logical_to_spec(logical)):
        axes = [a for a in _entry(entry) if a in mesh.shape]
        while axes and size % math.prod(mesh.shape[a] for a in axes):
            axes.pop()
        entries.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return jax.P(*entries)


def _specs(x: jax.Array, length: str | None):
    """-> (spec of tokens [B, N, H, Dh], spec of their mask [B, N])."""
    spec = _spec(x, ("activation_batch", length, "activation_heads", "activation_kv"))
    return spec, jax.P(spec[0], spec[1])


def _valid(valid: jax.Array | None, x: jax.Array) -> jax.Array:
    return jnp.ones(x.shape[:2], bool) if valid is None else valid


def _pad(x: jax.Array, size: int) -> jax.Array:
    """Pads the token axis (1) to a multiple of `size` with zeros (False for masks)."""
    pad = -x.shape[1] % size
    return x if not pad else jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))


def _joint_keys(valid_video, valid_audio, cross_modal):
    """Keys each modality's queries may attend in [video; audio] -> ([B, Nv + Na], [B, Nv + Na])."""
    cross = cross_modal[:, None]
    return (jnp.concatenate([valid_video, valid_audio & cross], axis=1), jnp.concatenate([valid_video & cross, valid_audio], axis=1))
