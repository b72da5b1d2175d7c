"""Small building blocks shared by jav's models: dense layers with logical axis
names, norms, MLPs, timestep embeddings and AdaLN modulation."""

from __future__ import annotations

import json
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jav.models import lora
from jav.sharding import constrain_batch

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def dtype_of(name: str) -> jnp.dtype:
    return jnp.dtype(name)


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str | None], dtype) -> nnx.Param:
    """A parameter carrying its logical axis names (placed later by jav.sharding rules)."""
    assert len(shape) == len(axes), (shape, axes)
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(axes), eager_sharding=False)


def fan_in_normal(fan_in: int, scale: float = 1.0) -> Initializer:
    std = scale / math.sqrt(fan_in)
    return lambda key, shape, dtype: std * jax.random.normal(key, shape, dtype)


def zeros(key, shape, dtype):
    del key
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype):
    del key
    return jnp.ones(shape, dtype)


class Dense(nnx.Module):
    """y = x . W (+ b), contracting the trailing `in_shape` axes of x into `out_shape`."""

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        axes: Sequence[str | None],
        *,
        rngs: nnx.Rngs,
        use_bias: bool = True,
        init: Initializer | None = None,
        dtype: str = "float32",
        param_dtype: str = "float32",
        role: str | None = None,
        saved_as: str | None = None,
    ):
        self.saved_as = saved_as  # the checkpoint name of the output, for name-based remat policies (jav.models.remat)
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        init = init or fan_in_normal(math.prod(self.in_shape))
        self.kernel = param(rngs, init, self.in_shape + self.out_shape, axes, dtype_of(param_dtype))
        out_axes = tuple(axes[len(self.in_shape) :])
        self.bias = param(rngs, zeros, self.out_shape, out_axes, dtype_of(param_dtype)) if use_bias else None
        self.dtype = dtype_of(dtype)
        rank, scale = lora.adapter_rank(role)  # a low-rank adapter where the model's config targets this role
        self.lora = (
            lora.Adapter(self.in_shape, self.out_shape, tuple(axes), rank, scale, rngs=rngs, dtype=self.dtype, param_dtype=dtype_of(param_dtype))
            if rank
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.in_shape)
        y = jnp.tensordot(x.astype(self.dtype), self.kernel[...].astype(self.dtype), axes=n)
        if self.lora is not None:
            y = y + self.lora(x)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y if self.saved_as is None else checkpoint_name(y, self.saved_as)


class RMSNorm(nnx.Module):
    """RMS norm over the trailing axes `dim` with a learned scale of that shape (used
    for QK-norm, per head (Dh,) or across heads (H, Dh), and for text)."""

    def __init__(self, dim: int | Sequence[int], axis_name: str | Sequence[str], *, rngs: nnx.Rngs, eps: float = 1e-6, param_dtype: str = "float32"):
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
        self.scale = param(rngs, ones, shape, names, dtype_of(param_dtype))
        self.axes = tuple(range(-len(shape), 0))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return (_rms32(x, self.axes, self.eps) * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free LayerNorm; AdaLN supplies the shift and scale."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.var(x32, axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _rms32(x: jax.Array, axes, eps: float) -> jax.Array:
    """x / RMS(x) over `axes`, in float32."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=axes, keepdims=True) + eps)


def rms_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free RMS norm (LTX-2's pre-norms); AdaLN supplies shift and scale."""
    return _rms32(x, -1, eps).astype(x.dtype)


NORMS = {"layer": layer_norm, "rms": rms_norm}  # model.norm: the blocks' pre-norms


class LayerNorm(nnx.Module):
    """LayerNorm with a learned scale and bias over the last axis, all in float32 (Wan's
    norm before text cross-attention, `model.text_norm="affine"`)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, eps: float = 1e-6, param_dtype: str = "float32"):
        self.scale = param(rngs, ones, (dim,), ("embed",), dtype_of(param_dtype))
        self.bias = param(rngs, zeros, (dim,), ("embed",), dtype_of(param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x.astype(jnp.float32), self.eps) * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale) + shift


class MLP(nnx.Module):
    """Two-layer GELU MLP: [.., D] -> [.., D * ratio] -> [.., D]."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.up = Dense(dim, hidden, ("embed", "mlp"), role="mlp", **kw)
        self.down = Dense(hidden, dim, ("mlp", "embed"), role="mlp", saved_as="mlp_output", **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x), approximate=True))


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """[...] timesteps in [0, 1] -> [..., dim] sin/cos features (t is scaled by 1000)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * 1000.0)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
    """Per-token timestep -> [.., D] embedding (sinusoid then a two-layer MLP)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, freq_dim: int = 256, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.freq_dim = freq_dim
        self.fc1 = Dense(freq_dim, dim, ("norm", "embed"), **kw)
        self.fc2 = Dense(dim, dim, ("embed", "embed"), **kw)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.fc2(constrain_batch(jax.nn.silu(self.fc1(sinusoidal_embedding(t, self.freq_dim)))))


class ConditionEmbedder(nnx.Module):
    """K scalar conditions [..., K] -> [..., D]: each a sinusoid (of value x `scale`, so
    that the range of interest spans about [0, 1]), concatenated, then a two-layer MLP
    whose output layer starts at zero, so that a network given a new condition
    starts as the network it was (a distilled student as its teacher)."""

    def __init__(self, num: int, dim: int, *, scale: float = 1.0, rngs: nnx.Rngs, freq_dim: int = 64, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.freq_dim, self.scale = freq_dim, scale
        self.fc1 = Dense((num, freq_dim), dim, ("norm", "norm", "embed"), **kw)
        self.fc2 = Dense(dim, dim, ("embed", "embed"), init=zeros, **kw)

    def __call__(self, c: jax.Array) -> jax.Array:
        return self.fc2(constrain_batch(jax.nn.silu(self.fc1(sinusoidal_embedding(c * self.scale, self.freq_dim)))))


class AdaLNSingle(nnx.Module):
    """PixArt-style AdaLN-single: one projection of the timestep embedding shared by
    all blocks, [B, N, D] -> [B, N, K, D]; each block adds its own learned table."""

    def __init__(self, dim: int, num_chunks: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        self.num_chunks = num_chunks
        self.proj = Dense(
            dim,
            (num_chunks, dim),
            ("embed", "modulation", "embed"),
            rngs=rngs,
            init=zeros,
            dtype=dtype,
            param_dtype=param_dtype,
        )

    def __call__(self, t_emb: jax.Array) -> jax.Array:
        return self.proj(constrain_batch(jax.nn.silu(t_emb)))


def modulation_table(rngs: nnx.Rngs, num_chunks: int, dim: int, param_dtype: str) -> nnx.Param:
    """A block's own [K, D] modulation table, added to the shared AdaLN projection."""
    return param(rngs, fan_in_normal(dim), (num_chunks, dim), ("modulation", "embed"), dtype_of(param_dtype))


def jit_init(module_cls, cfg, key: jax.Array, out_shardings=None):
    """`module_cls(cfg, rngs=...)` created by one jitted initialisation.

    Eager creation compiles one kernel per parameter shape; one jitted init is
    faster, and compiling it without backend optimisation (it runs once) cuts
    its compile time several-fold on CPU, where XLA's older fusion emitters cut
    it by another third (7-9 s -> 5 s for the tiny test model). `out_shardings` (a pytree of
    shardings matching the state) creates the parameters already sharded. The
    compiled initialiser is kept per (class, config, shardings), so a second
    model of the same config in one process (a resumed run, a reference copy)
    skips tracing and compiling.
    """
    leaves, treedef = jax.tree.flatten(out_shardings)
    memo = (module_cls, _config_key(cfg), key.shape, key.dtype, tuple(leaves), treedef)
    if memo not in _JIT_INITS:
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: module_cls(cfg, rngs=nnx.Rngs(0))))

        def make(k):
            return nnx.state(module_cls(cfg, rngs=nnx.Rngs(params=k)))

        options = {"xla_backend_optimization_level": 0}
        if jax.default_backend() == "cpu":
            options["xla_cpu_use_fusion_emitters"] = False
        compiled = jax.jit(make, out_shardings=out_shardings).lower(key).compile(options)
        if len(_JIT_INITS) >= 16:
            _JIT_INITS.pop(next(iter(_JIT_INITS)))
        _JIT_INITS[memo] = (graphdef, compiled)
    graphdef, compiled = _JIT_INITS[memo]
    return nnx.merge(graphdef, compiled(key))


_JIT_INITS: dict = {}  # jit_init's compiled initialisers, oldest first


def _config_key(cfg) -> str:
    """A config as a hashable value (a ConfigDict or dataclass by its contents)."""
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    return json.dumps(cfg, sort_keys=True, default=repr)
