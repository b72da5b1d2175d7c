"""The overfit check: train on one fixed batch of bounce-world clips until the
loss has fallen, then sample the same captions and score the samples with the
world's metrics.

    python -m benchmarks.overfit --out runs/overfit            # configs/test.py, 2 clips, 1500 steps
    python -m benchmarks.overfit --config configs/test.py --train-steps 400 --num 2

Writes OUT/NNN.mp4 (H.264 + AAC), OUT/NNN.wav and OUT/NNN.json (caption,
settings, metrics) per sample and OUT/summary.json. On a 2-core CPU the default
takes about 6 minutes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.clip_tokens import TokenLayout, arrays_to_clip, clip_to_arrays, mel_params
from jav.data.bounce import BounceParams, generate_clip
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.generate import generate
from jav.media import write_mp4, write_wav
from jav.models import init_model
from jav.train.step import optimizer, train_step

from benchmarks.model_stats import load_config


def overfit_config(path: str, steps: int, warmup_steps: int | None = None):
    """The config with the flow set for memorisation: T2VA only, no dropout; `warmup_steps`
    (None: the config's) the learning rate's linear warm-up."""
    cfg = load_config(path)
    cfg.train.steps = steps
    if warmup_steps is not None:
        cfg.optim.warmup_steps = warmup_steps
    for task in cfg.flow.task_probs:
        cfg.flow.task_probs[task] = 1.0 if task == "t2va" else 0.0
    cfg.flow.p_drop_text = 0.0
    cfg.flow.p_drop_cross = 0.0
    return cfg


def run(
    config: str,
    steps: int,
    num_clips: int,
    out: str | None,
    seed: int = 0,
    sample_steps: int = 32,
    ema_decay: float = 0.0,
    warmup_steps: int | None = None,
    log=print,
) -> dict:
    cfg = overfit_config(config, steps, warmup_steps)
    layout = TokenLayout.from_config(cfg)
    world = BounceParams(canvas=cfg.data.canvas, fps=cfg.data.fps, duration=cfg.data.duration, sample_rate=cfg.data.sample_rate)
    mp = mel_params(cfg)
    clips = [generate_clip(seed + i, world) for i in range(num_clips)]
    arrays = [clip_to_arrays(c.frames, c.audio, mp) for c in clips]
    captions = [c.caption for c in clips]

    model = init_model(cfg.model, jax.random.key(seed))
    ids, mask = model.text_encoder.tokenizer.encode(captions)
    batch = dict(
        video=jnp.asarray(np.stack([a[0] for a in arrays])),
        audio=jnp.asarray(np.stack([a[1] for a in arrays])),
        text_ids=jnp.asarray(ids),
        text_mask=jnp.asarray(mask),
    )
    graphdef, params = nnx.split(model)
    tx = optimizer(cfg)
    opt_state = tx.init(params)
    flow_cfg = ml_collections.FrozenConfigDict(cfg.flow)
    ema = jax.tree.map(jnp.copy, params) if ema_decay else None
    losses, start = [], time.time()
    for step in range(steps):
        params, opt_state, ema, metrics = train_step(
            graphdef, params, opt_state, ema, batch, jax.random.key(step), tx=tx, layout=layout, flow_cfg=flow_cfg, ema_decay=ema_decay
        )
        losses.append(float(metrics["loss"]))
        if step % 25 == 0 or step == steps - 1:
            log(
                f"step {step:4d}/{steps}  loss {np.mean(losses[-25:]):.4f}  video {float(metrics['loss_video']):.4f}  "
                f"audio {float(metrics['loss_audio']):.4f}  {time.time() - start:6.1f}s"
            )
    train_time = time.time() - start
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-25:]))

    start = time.time()
    video, audio = generate(
        nnx.merge(graphdef, ema if ema is not None else params), layout, captions, jax.random.key(seed + 1000), num_steps=sample_steps, flow_cfg=cfg.flow
    )
    sample_time = time.time() - start
    results, references = [], []
    for i, clip in enumerate(clips):
        frames, wave = arrays_to_clip(video[i], audio[i], mp)
        m = clip_metrics(frames, wave, clip.caption, world)
        m["psnr_db"] = float(10 * np.log10(255.0**2 / max(np.mean((frames.astype(np.float64) - clip.frames) ** 2), 1e-10)))
        results.append(m)
        references.append(clip_metrics(*arrays_to_clip(*arrays[i], mp), clip.caption, world))
        if out:
            path = pathlib.Path(out)
            path.mkdir(parents=True, exist_ok=True)
            write_mp4(path / f"{i:03d}.mp4", frames, cfg.data.fps, wave, cfg.data.sample_rate)
            write_wav(path / f"{i:03d}.wav", wave, cfg.data.sample_rate)
            (path / f"{i:03d}.json").write_text(
                json.dumps(dict(prompt=clip.caption, seed=seed + 1000, sample_steps=sample_steps, config=config, metrics=m), indent=2)
            )
        log(f"sample {i}: {clip.caption!r}  " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    summary = dict(
        config=config,
        steps=steps,
        clips=num_clips,
        loss_first=first,
        loss_last=last,
        loss_drop=1 - last / first,
        train_seconds=train_time,
        sample_seconds=sample_time,
        metrics=aggregate(results),
        reference_metrics=aggregate(references),
        loss_curve=[float(np.mean(losses[i : i + 25])) for i in range(0, steps, 25)],
    )
    if out:
        (pathlib.Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/test.py")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--num", type=int, default=2, help="training clips")
    parser.add_argument("--sample-steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="sample from an EMA of the weights (0 = off; 0.99 lagged the fast-moving fit at 800 steps)"
    )
    parser.add_argument("--warmup-steps", type=int, default=None, help="the learning rate's linear warm-up (default: the config's optim.warmup_steps)")
    parser.add_argument("--out", default=None, help="directory for NNN.mp4 / NNN.wav / NNN.json and summary.json")
    args = parser.parse_args()
    s = run(
        args.config,
        args.train_steps,
        args.num,
        args.out,
        args.seed,
        args.sample_steps,
        args.ema_decay,
        warmup_steps=args.warmup_steps,
        log=lambda msg: print(msg, flush=True),
    )
    print(f"loss {s['loss_first']:.4f} -> {s['loss_last']:.4f} (fell {100 * s['loss_drop']:.1f}%) in {s['train_seconds']:.0f}s")
    print("samples:   " + "  ".join(f"{k} {v:.3f}" for k, v in s["metrics"].items()))
    print("reference: " + "  ".join(f"{k} {v:.3f}" for k, v in s["reference_metrics"].items()))


if __name__ == "__main__":
    main()
