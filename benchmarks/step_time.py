"""Train-step time, tokens/s and MFU of a config on this machine's devices.

    python -m benchmarks.step_time --config configs/ltx2_bench.py [--batch 2] [--steps 10] [--json OUT]

Builds the config's model (random init, sharded on the config's mesh), feeds
random model-space batches (precomputed text embeddings for configs with
`text.encoder = "none"`), warms the jitted step up, then times `--steps` steps.
MFU is the analytic training FLOPs (3 x forward, `jav/models/flops.py`) over the
step time and the peak: `--peak` FLOP/s per device if given, otherwise the peak
this script measures with a large float32 (or the compute dtype's) matmul, the
honest ceiling of a CPU. The PyTorch counterpart for diffusers' LTX-2
transformer is `benchmarks/diffusers_ltx2.py`; results in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav import sharding
from jav.clip_tokens import TokenLayout
from jav.models import AVDiT, init_model
from jav.models.flops import forward_flops, param_count
from jav.train.step import optimizer, train_step
from jav.train.trainer import _global_batch

from benchmarks.model_stats import load_config


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul on the default device."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def random_batch(cfg, layout: TokenLayout, batch: int) -> dict:
    rng = np.random.default_rng(0)
    out = dict(video=rng.uniform(-1, 1, (batch,) + layout.video_shape).astype(np.float32),
               audio=rng.uniform(-1, 1, (batch,) + layout.audio_shape).astype(np.float32))
    length = cfg.data.get("text_len", cfg.model.text.max_len)
    out["text_mask"] = np.ones((batch, length), bool)
    if cfg.model.text.encoder == "none":
        out["text_emb"] = rng.standard_normal((batch, length, cfg.model.text.dim)).astype(np.float32)
    else:
        out["text_ids"] = rng.integers(1, cfg.model.text.vocab_size, (batch, length)).astype(np.int32)
    return out


def run(config: str, batch: int | None, steps: int, peak: float | None, log=print) -> dict:
    cfg = load_config(config)
    if batch:
        cfg.train.batch_size = batch
    batch = cfg.train.batch_size
    layout = TokenLayout.from_config(cfg)
    mesh = sharding.make_mesh(dict(cfg.mesh.shape))
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    params = nnx.state(init_model(cfg.model, jax.random.key(0), out_shardings=sharding.param_shardings(abstract_state, mesh, rules)))
    tx = optimizer(cfg)
    flow_cfg = ml_collections.FrozenConfigDict(cfg.flow)
    kw = dict(tx=tx, layout=layout, flow_cfg=flow_cfg, ema_decay=0.0, accum_steps=cfg.train.get("grad_accum", 1))
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        opt_state = jax.jit(tx.init)(params)
        data = _global_batch(random_batch(cfg, layout, batch), mesh, rules)
        start = time.perf_counter()
        params, opt_state, _, m = train_step(graphdef, params, opt_state, None, data, jax.random.key(0), **kw)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - start
        log(f"compiled and ran the first step in {compile_s:.1f}s")
        params, opt_state, _, m = train_step(graphdef, params, opt_state, None, data, jax.random.key(1), **kw)
        jax.block_until_ready(m)
        times = []
        for i in range(steps):
            start = time.perf_counter()
            params, opt_state, _, m = train_step(graphdef, params, opt_state, None, data, jax.random.key(i + 2), **kw)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    measured_peak = None
    if peak is None:
        dtype = jnp.bfloat16 if cfg.model.dtype == "bfloat16" else jnp.float32
        measured_peak = peak = matmul_peak(dtype=dtype)
    flops = 3 * forward_flops(cfg.model, layout.num_tokens, cfg.data.get("text_len", cfg.model.text.max_len), batch=batch, grid=layout.grid)
    tokens = batch * sum(layout.num_tokens.values())
    devices = jax.device_count()
    result = dict(
        config=config, device=jax.devices()[0].device_kind, platform=jax.default_backend(), devices=devices,
        host=platform.processor() or platform.machine(), jax=jax.__version__, batch=batch,
        params=param_count(nnx.state(nnx.merge(graphdef, params), nnx.Param)), tokens_per_sample=layout.num_tokens,
        compile_s=compile_s, step_s_median=step_s, step_s_mean=float(np.mean(times)), tokens_per_s=tokens / step_s,
        train_flops_per_step=flops, achieved_flops_per_s=flops / step_s, peak_flops_per_device=peak,
        peak_measured=measured_peak is not None, mfu=flops / step_s / (peak * devices),
    )
    log(f"{config}: {step_s * 1000:.1f} ms/step (median of {steps}), {result['tokens_per_s']:.0f} tokens/s, "
        f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f} GFLOP/s peak per device "
        f"({'measured' if measured_peak else 'given'}) -> MFU {100 * result['mfu']:.1f}%")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ltx2_bench.py")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after two warm-up steps")
    parser.add_argument("--peak", type=float, default=None, help="peak FLOP/s per device (default: measured matmul peak)")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    result = run(args.config, args.batch, args.steps, args.peak, log=lambda m: print(m, flush=True))
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
