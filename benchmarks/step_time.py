"""Train-step time, tokens/s and MFU of a config on this machine's devices.

    python -m benchmarks.step_time --config configs/ltx2_bench.py [--batch 4] [--repeats 5] [--json OUT]
        [--reference [--torch-python .venv-torch/bin/python]]

Builds the config's training state as `python -m jav.train` does (the diffusion
phase's parameters, AdamW moments and EMA, sharded on the config's mesh), feeds
random model-space batches (precomputed text embeddings for configs with
`text.encoder = "precomputed"`), warms the jitted step up, then times `--steps` steps.
MFU is the analytic training FLOPs (3 x forward, `jav/models/flops.py`) over the
step time and the peak: `--peak` FLOP/s per device if given, otherwise
`jav.perf.peak_flops` (the chip's datasheet peak for the compute dtype on GPU and
TPU; on a CPU, the measured rate of a large jitted matmul, the honest ceiling).

`--reference` then times diffusers' LTX2VideoTransformer3DModel at the same
shapes (`benchmarks/diffusers_ltx2.py`, in its own PyTorch venv: `make
.venv-torch`), one after the other so that neither slows the other, and prints
both side by side with jav's speed-up (reference step time / jav step time).
Results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import time

import jax
import numpy as np
from etils import epath
from flax import nnx

from jav import cli, perf, sharding
from jav.clip_tokens import TokenLayout
from jav.models.flops import forward_flops, param_count
from jav.train import loop
from jav.train.diffusion import DiffusionPhase
from jav.train.step import train_step

from benchmarks.model_stats import load_config


def random_batch(cfg, layout: TokenLayout, batch: int) -> dict:
    rng = np.random.default_rng(0)
    out = dict(
        video=rng.uniform(-1, 1, (batch,) + layout.video_shape).astype(np.float32), audio=rng.uniform(-1, 1, (batch,) + layout.audio_shape).astype(np.float32)
    )
    length = cfg.data.get("text_len", cfg.model.text.max_len)
    out["text_mask"] = np.ones((batch, length), bool)
    if cfg.model.text.encoder != "builtin":
        out["text_emb"] = rng.standard_normal((batch, length, cfg.model.text.dim)).astype(np.float32)
    else:
        out["text_ids"] = rng.integers(1, cfg.model.text.vocab_size, (batch, length)).astype(np.int32)
    return out


def run(config: str, batch: int | None, steps: int, peak: float | None, log=print) -> dict:
    cfg = load_config(config)
    if batch:
        cfg.train.batch_size = batch
    batch = cfg.train.batch_size
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    # the training phase's own state (parameters, AdamW moments, EMA) and step options, as
    # `python -m jav.train` and the pod plans (jav.aot) build them: the step timed is the one trained
    phase = DiffusionPhase(cfg)
    model = phase.init_state(loop.Run(cfg, epath.Path("."), mesh, rules, 0, 1, say=lambda line: None))["model"]
    params, opt_state, ema = model.params, model.opt_state, model.ema
    layout = phase.layout
    graphdef, kw = phase.graphdef, phase.step_options(layout)
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        data = sharding.global_batch(random_batch(cfg, layout, batch), mesh, rules, batch)
        start = time.perf_counter()
        params, opt_state, ema, m = train_step(graphdef, params, opt_state, ema, data, jax.random.key(0), **kw)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - start
        log(f"compiled and ran the first step in {compile_s:.1f}s")
        params, opt_state, ema, m = train_step(graphdef, params, opt_state, ema, data, jax.random.key(1), **kw)
        jax.block_until_ready(m)
        times = []
        for i in range(steps):
            start = time.perf_counter()
            params, opt_state, ema, m = train_step(graphdef, params, opt_state, ema, data, jax.random.key(i + 2), **kw)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    source = "given"
    if peak is None:
        peak, source = perf.peak_flops(cfg.model.dtype)
    flops = 3 * forward_flops(cfg.model, layout.num_tokens, cfg.data.get("text_len", cfg.model.text.max_len), batch=batch, grid=layout.grid)
    tokens = batch * sum(layout.num_tokens.values())
    devices = jax.device_count()
    result = dict(
        config=config,
        device=jax.devices()[0].device_kind,
        platform=jax.default_backend(),
        devices=devices,
        host=platform.processor() or platform.machine(),
        jax=jax.__version__,
        batch=batch,
        ema_decay=float(kw["ema_decay"] or 0.0),  # the EMA update is part of the timed step, as in training
        params=param_count(nnx.state(nnx.merge(graphdef, params), nnx.Param)),
        tokens_per_sample=layout.num_tokens,
        compile_s=compile_s,
        step_s_median=step_s,
        step_s_mean=float(np.mean(times)),
        tokens_per_s=tokens / step_s,
        train_flops_per_step=flops,
        achieved_flops_per_s=flops / step_s,
        peak_flops_per_device=peak,
        peak_source=source,
        mfu=flops / step_s / (peak * devices),
    )
    log(
        f"{config}: {step_s * 1000:.1f} ms/step (median of {steps}), {result['tokens_per_s']:.0f} tokens/s, "
        f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f} GFLOP/s peak per device "
        f"({source}) -> MFU {100 * result['mfu']:.1f}%"
    )
    return result


def reference_args(cfg, batch: int) -> list[str]:
    """diffusers_ltx2.py's flags for the shapes of a latent-space config."""
    m, d = cfg.model, cfg.data
    if d.get("world") != "latent" or tuple(m.video.patch) != (1, 1, 1) or m.audio.patch != 1:
        raise SystemExit("--reference needs a latent-space config with patch 1 (as configs/ltx2_bench.py)")
    if m.video.width != 64 * m.video.heads or m.audio.width != 64 * m.audio.heads:
        raise SystemExit("--reference needs heads of 64 channels (diffusers' LTX-2 head size)")
    *grid, channels = d.video_latent_shape
    audio_tokens, audio_channels = d.audio_latent_shape
    if audio_channels != channels:
        raise SystemExit("--reference needs the same latent channels for video and audio")
    return [
        "--batch",
        str(batch),
        "--layers",
        str(m.depth),
        "--video-heads",
        str(m.video.heads),
        "--audio-heads",
        str(m.audio.heads),
        "--channels",
        str(channels),
        "--grid",
        *map(str, grid),
        "--audio-tokens",
        str(audio_tokens),
        "--text-len",
        str(d.text_len),
        "--text-dim",
        str(m.text.dim),
        "--fps",
        str(d.fps),
    ]


def run_reference(config: str, batch: int | None, steps: int, python: str, log=print) -> dict:
    cfg = load_config(config)
    batch = batch or cfg.train.batch_size
    if not pathlib.Path(python).exists():
        raise SystemExit(f"no PyTorch venv at {python}: create it with `make .venv-torch` (or pass --torch-python)")
    script = pathlib.Path(__file__).with_name("diffusers_ltx2.py")
    cmd = [python, str(script), "--repeats", str(steps), *reference_args(cfg, batch)]
    log("reference: " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ltx2_bench.py")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after two warm-up steps")
    parser.add_argument("--peak", type=float, default=None, help="peak FLOP/s per device (default: jav.perf.peak_flops)")
    parser.add_argument("--reference", action="store_true", help="also time diffusers' LTX2VideoTransformer3DModel at the same shapes")
    parser.add_argument("--torch-python", default=".venv-torch/bin/python", help="python of the PyTorch venv")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731
    result = run(args.config, args.batch, args.repeats, args.peak, log=log)
    if args.reference:
        ref = run_reference(args.config, args.batch, args.repeats, args.torch_python, log=log)
        result["reference"] = ref
        result["speedup"] = ref["step_s_median"] / result["step_s_median"]
        log(f"{'':<12} {'params':>12} {'s/step':>8} {'tokens/s':>9} {'fwd GFLOP/sample':>17}")
        log(
            f"{'jav':<12} {result['params']:>12,} {result['step_s_median']:>8.3f} {result['tokens_per_s']:>9.0f} "
            f"{result['train_flops_per_step'] / 3 / result['batch'] / 1e9:>17.1f}"
        )
        log(f"{'diffusers':<12} {ref['params']:>12,} {ref['step_s_median']:>8.3f} {ref['tokens_per_s']:>9.0f} {ref['forward_flops_per_sample'] / 1e9:>17.1f}")
        log(f"jav speed-up over diffusers at the same shapes: {result['speedup']:.2f}x; jav MFU {100 * result['mfu']:.1f}% ({result['peak_source']})")
    print(json.dumps(result))
    if args.json:
        cli.append_json(args.json, result)


if __name__ == "__main__":
    main()
