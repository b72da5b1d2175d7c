"""Where a layer's estimated time goes on one TPU chip: the TPU compiler's cost
model (`optimal_seconds`) for each part of one video layer of a config, forward
and backward, at the per-chip shapes of a plan.

    python -m benchmarks.aot_breakdown --config configs/ltx2_19b.py --topology v5p-8 --num 1

Each part is compiled alone for one chip of `--topology` (libtpu, compile only,
no TPU needed), in bfloat16, as `jax.value_and_grad` of a scalar of its output:
the self-attention's q/k/v/o projections, its attention core (splash, at the
tiles `jav.models.attention_kernels.splash_block` picks and at `--blocks`), the
MLP, and the norm-and-modulation element-wise work around them. The table gives
each part's FLOPs as the compiler counts them, its estimated seconds and the
share of the chip's bf16 peak that implies. The compiler counts none of a Pallas
kernel's FLOPs (splash's rows show only the work around the kernel), but it does
estimate the kernel's time. Collectives are not in it (one chip); `jav.aot`'s
whole-step compile has them.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.model_stats import load_config
from jav import cli, perf, schema
from jav.aot import TIME_KEY, parse_topology, topology_devices
from jav.clip_tokens import TokenLayout
from jav.models import attention_kernels


def _estimate(fn, args, device) -> tuple[float, float]:
    """(FLOPs, seconds) of `fn`'s value and gradient on `device`, as the TPU compiler estimates them."""
    mesh = jax.sharding.Mesh(np.array([device]), ("chip",))  # the kernels read the platform from the mesh
    structs = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.NamedSharding(mesh, jax.P())) for a in args]

    def loss(*xs):
        return jnp.sum(fn(*xs).astype(jnp.float32))

    with jax.set_mesh(mesh):
        compiled = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args))))).lower(*structs).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    return float(cost.get("flops", 0.0)), float(cost.get(TIME_KEY, -1.0))


def _splash_with_block(block: int):
    """attention_kernels.attend by splash with its tile forced to `block`."""
    original = attention_kernels.splash_block

    def attend(q, k, v):
        attention_kernels.splash_block = lambda n: block
        attention_kernels._splash_kernel.cache_clear()
        try:
            return attention_kernels.attend(q, k, v, None, "splash")
        finally:
            attention_kernels.splash_block = original

    return attend


def parts(cfg, clips: int, blocks) -> dict:
    """name -> (function, argument shapes) of one video layer at `clips` clips a chip."""
    tokens = TokenLayout.from_config(cfg).num_tokens
    n, na, nt = tokens["video"], tokens["audio"], cfg.data.text_len
    d, heads = cfg.model.video.width, cfg.model.video.heads
    hidden = int(d * cfg.model.video.mlp_ratio)
    bf = jnp.bfloat16
    x = jax.ShapeDtypeStruct((clips, n, d), bf)
    w = jax.ShapeDtypeStruct((d, d), bf)
    qkv = jax.ShapeDtypeStruct((clips, n, heads, d // heads), bf)
    keys = lambda m: jax.ShapeDtypeStruct((clips, m, heads, d // heads), bf)  # noqa: E731
    out = {
        "self-attention q, k, v, o projections": (lambda x, wq, wk, wv, wo: ((x @ wq) + (x @ wk) + (x @ wv)) @ wo, [x, w, w, w, w]),
        "MLP (GELU-tanh)": (
            lambda x, w1, w2: jax.nn.gelu(x @ w1, approximate=True) @ w2,
            [x, jax.ShapeDtypeStruct((d, hidden), bf), jax.ShapeDtypeStruct((hidden, d), bf)],
        ),
        "norms, modulation, gated residuals (x2)": (
            lambda x, s, b, g: x + g * (jax.nn.standardize(x.astype(jnp.float32), axis=-1).astype(bf) * (1 + s) + b),
            [x] + [jax.ShapeDtypeStruct((clips, 1, d), bf)] * 3,
        ),
    }
    # the cross-attentions' video side: q and o projections, and the core over few keys
    # (their key / value projections act on the text's or the audio's tokens)
    out["text and audio cross-attention q, o projections"] = (lambda x, a, b, c, e: (x @ a) @ b + (x @ c) @ e, [x, w, w, w, w])
    out[f"cross-attention cores ({nt} text, {na} audio keys), splash"] = (
        lambda q, kt, vt, ka, va: attention_kernels.attend(q, kt, vt, None, "splash") + attention_kernels.attend(q, ka, va, None, "splash"),
        [qkv, keys(nt), keys(nt), keys(na), keys(na)],
    )
    for block in blocks:
        label = f"attention core, splash tiles {block}"
        out[label] = (_splash_with_block(block), [qkv, qkv, qkv])
    return out


def breakdown(cfg, topology: str, num: int, blocks) -> list[dict]:
    """One row per part of `parts(cfg, num, blocks)` (`num` clips a chip), estimated for one chip of `topology`."""
    device = topology_devices(parse_topology(topology))[0]
    peak, _ = perf.peak_flops("bfloat16", device)
    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # compile-only executables cannot be cached
    rows = []
    try:
        for name, (fn, shapes) in parts(cfg, num, blocks).items():
            flops, seconds = _estimate(fn, shapes, device)
            share = flops / (seconds * peak) if seconds > 0 else math.nan
            rows.append(dict(part=name, flops=flops, seconds=seconds, share_of_peak=share))
            print(f"{name:<45} {flops:10.3e} FLOPs  {seconds * 1e3:9.2f} ms  {100 * share:5.1f}% of peak", flush=True)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/ltx2_19b.py", help="config file[:arg]")
    parser.add_argument("--topology", default="v5p-8", help="TPU whose chip the parts compile for")
    parser.add_argument("--num", type=int, default=1, help="clips a chip holds in one (micro)batch")
    parser.add_argument("--blocks", default="128,512", help="splash tiles to compare (jav picks attention_kernels.splash_block(tokens))")
    parser.add_argument("--json", default=None, help="append the table as one JSON line to this file")
    args = parser.parse_args(argv)
    cfg = schema.complete(load_config(args.config))
    rows = breakdown(cfg, args.topology, args.num, [int(b) for b in cli.comma_list(args.blocks)])
    if args.json:
        cli.append_json(args.json, dict(config=args.config, topology=args.topology, clips=args.num, rows=rows))
    return rows


if __name__ == "__main__":
    main()
