"""On-policy SyncDPO pairs: a trained run's own T2VA clips, each with two soundtracks.

    python -m jav.train.policy_pairs --workdir runs/demo/run --num 256 --out runs/demo/pairs
    python -m jav.train --config configs/sync_dpo.py:runs/demo/run --workdir runs/demo/dpo_policy \
        --config.reward.dpo.pairs=runs/demo/pairs

For each training caption the run samples a clip jointly (T2VA: picture and sound from
noise together), then samples the sound again with its own finished picture given clean
(its V2A task, from new noise). A joint model reads timing from a clean picture far
better than from one still being denoised beside its sound (benchmarks/RESULTS.md,
"SyncDPO"), so each pair is the same generated picture with its V2A sound (preferred,
"audio") and its joint sound (rejected, "audio_moved"): SyncDPO then teaches joint
sampling what the model's own V2A already does, on the pictures joint sampling makes.
No reward model and no world label picks the preferred sound.

Written as OUT/batch_NNNN.npz (model-space video, both sounds, caption token ids and mask,
captions, seeds) and OUT/pairs.json (the run, its step, the sampling settings); a rerun
skips finished batches. Captions come from bounce-world clips of seeds `--seed` + i, far
below the held-out seeds that jav.evaluate scores.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from jav import cli, samplers
from jav.clip_tokens import TokenLayout
from jav.data import bounce
from jav.data.bounce_stream import HELDOUT_SEED
from jav.evaluation import world_params
from jav.generate import generate
from jav.runs import load_run
from jav.sampling import clip_keys


CAPTION_SEED = 300_000_000  # training-range seeds (SeedStream allows [0, HELDOUT_SEED / 2)), apart from the shards' own


def captions_of(cfg, seeds) -> list[str]:
    """The captions of the bounce-world clips of `seeds` (the world the run was trained on)."""
    params = world_params(cfg)
    return [bounce.generate_clip(int(s), params).caption for s in seeds]


def make_pairs(
    workdir,
    out,
    num: int,
    *,
    seed: int = CAPTION_SEED,
    batch_size: int = 8,
    steps: int | None = None,
    weights: str = "ema",
    part: tuple[int, int] = (0, 1),
    log=print,
) -> pathlib.Path:
    """Samples `num` pairs from the run in `workdir` into `out` (resumable) -> `out`.
    `part` (i, n): only batches b with b % n == i, so that n processes (or hosts) share the work."""
    i_part, n_part = part
    if not 0 <= i_part < n_part:
        raise ValueError(f"--part {i_part}/{n_part}: the part must be in [0, {n_part})")
    if not (0 <= seed and seed + num <= HELDOUT_SEED // 2):
        raise ValueError(f"--seed {seed} with --num {num} leaves the training range [0, {HELDOUT_SEED // 2}); pick a smaller seed")
    cfg, model, step = load_run(workdir, weights)
    if model.guide is not None:
        raise ValueError(f"{workdir} is a few-step student; make pairs from the diffusion (or reward-tuned) run it was distilled from")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(steps or cfg.sample.steps)
    guidance = samplers.guidance_from(cfg)
    manifest = dict(run=str(workdir), step=int(step), weights=weights, num=num, seed=seed, batch_size=batch_size, steps=steps, guidance=guidance.record())
    meta = out / "pairs.json"
    if meta.exists() and {k: v for k, v in json.loads(meta.read_text()).items() if k != "num"} != {k: v for k, v in manifest.items() if k != "num"}:
        raise ValueError(f"{meta} was made with other settings ({meta.read_text().strip()}); write these pairs to a new --out")
    tmp = out / f"pairs.json.{i_part}.tmp"  # parts write the same manifest: each atomically
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.rename(meta)
    layout = TokenLayout.from_config(cfg)
    common = dict(num_steps=steps, flow_cfg=cfg.flow, guidance=guidance, schedule=samplers.schedule_from(cfg))
    encode = model.text_encoder.tokenizer.encode
    batches = -(-num // batch_size)
    started = time.time()
    mine = [b for b in range(batches) if b % n_part == i_part and not (out / f"batch_{b:04d}.npz").exists()]
    for done, b in enumerate(mine):
        path = out / f"batch_{b:04d}.npz"
        seeds = [seed + b * batch_size + i for i in range(batch_size)]  # whole batches: one compile
        captions = captions_of(cfg, seeds)
        video, joint = generate(model, layout, captions, clip_keys(seeds), **common)
        _, v2a = generate(model, layout, captions, clip_keys([s + HELDOUT_SEED // 2 for s in seeds]), video=video, **common)
        ids, mask = encode(captions)
        arrays = dict(video=video, audio=v2a, audio_moved=joint, text_ids=np.asarray(ids), text_mask=np.asarray(mask))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, captions=np.array(captions), seeds=np.array(seeds), **{k: np.asarray(v) for k, v in arrays.items()})
        tmp.rename(path)
        rate = (done + 1) * batch_size / (time.time() - started)
        eta = (len(mine) - done - 1) * batch_size / rate
        log(f"pairs: batch {b + 1}/{batches} ({batch_size} clips, T2VA then V2A, {steps} steps each); {rate:.2f} pairs/s, ETA {eta:.0f}s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jav.train.policy_pairs", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="the run whose own clips make the pairs (a diffusion or reward run)")
    p.add_argument("--out", required=True, help="directory of the pairs (reward.dpo.pairs); a rerun resumes")
    p.add_argument("--num", type=int, default=256, help="pairs, rounded up to whole batches")
    p.add_argument("--seed", type=int, default=CAPTION_SEED, help="the captions are those of bounce clips of seeds SEED + i (training range)")
    p.add_argument("--batch", type=int, default=8, help="clips sampled at once (one compile for all batches)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps of each stage (default: the run's sample.steps)")
    p.add_argument("--weights", choices=("ema", "params"), default="ema")
    p.add_argument("--part", default="0/1", help="I/N: this process samples batches b with b %% N == I (N processes share --out)")
    a = p.parse_args(argv)
    try:
        part = tuple(int(x) for x in a.part.split("/"))
        assert len(part) == 2
    except (ValueError, AssertionError):
        raise ValueError(f"--part {a.part!r}: give I/N, e.g. 0/2 and 1/2 for two processes") from None
    out = make_pairs(a.workdir, a.out, a.num, seed=a.seed, batch_size=a.batch, steps=a.steps, weights=a.weights, part=part)
    print(f"pairs in {out}")


if __name__ == "__main__":
    cli.run_main("jav.train.policy_pairs", main)
