"""Sampling from a trained run: prompts (and optional conditions) -> mp4 with audio.

    python -m jav.sample --workdir DIR --prompt "a red ball bouncing on a navy background" \
        [--prompt ...] --out DIR [--steps N] [--seed S] [--image PNG | --video MP4 | --audio WAV] [--sampler ode|sde]
    python -m jav.sample --workdir DIR --prompts prompts.jsonl --out DIR    # {"prompt": ..., "seed": ...} a line
    python -m jav.sample ... --cfg-video 3 --negative-prompt "a green ball"    # guidance away from a caption
    python -m jav.sample ... --duration 3 --size 48    # clips of another length and frame size than trained
    python -m jav.sample ... --config.sample.steps=64 --config.model.dtype=bfloat16    # any key of the run's config

For each prompt i it writes OUT/iii.mp4 (H.264 video + AAC audio, muxed),
OUT/iii.wav and OUT/iii.json (the prompt, its seed and every setting that made
the sample). Clip i's noise comes from its own seed (seed + i, or the file's),
so any clip reproduces alone; a rerun skips the clips already written.
`--image` conditions on a first frame (I2VA), `--video` on a whole video (V2A: its
soundtrack is generated), `--audio` on a soundtrack (A2V: the video is generated
to match it). Sampling is one jitted function per batch
size, however many prompts; progress lines count the steps, clips/s and an ETA.

Sampling settings are the run's config keys (`sample.steps`, `sample.text_video`,
`sample.text_audio`, `sample.modality`, `sample.sampler`, `sample.noise_level`,
`model.dtype`, `model.attention.kernel`), changed for one call by
`--config.KEY=VALUE` (jav.cli); `--steps`, `--cfg-video`, `--cfg-audio`,
`--modality-guidance`, `--sampler` and `--noise-level` are shorthands for the
`sample.` keys.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from jav import cli, distributed, samplers, sharding
from jav.clip_tokens import TokenLayout, clip_config, pixel_fps
from jav.frozen_text_encoder import load_text_encoder
from jav.generate import SAMPLERS
from jav.runs import load_run
from jav.sampling import conditions_from_files, sample_clips, write_sample

# the library part, named here too for callers of jav.sample (benchmarks, tests)
from jav.sampling import ProgressPrinter, clip_decoder, clip_keys, progress_printer, video_from_file  # noqa: F401


CONDITIONS = {"image": "i2va", "video": "v2a", "audio": "a2v"}  # a row's condition file -> its task
ROW_KEYS = ("prompt", "seed", "negative_prompt", "task") + tuple(CONDITIONS)


def read_prompts(path: str, seed: int, defaults: dict | None = None) -> list[dict]:
    """A prompt file -> one row per clip: {prompt, seed, negative_prompt, image, video, audio, task}.
    Plain text: one caption a line (blank lines and `#` comments skipped). JSON lines
    (`.jsonl`): one object a line with "prompt" and optionally "seed" (default `seed + i`),
    "negative_prompt", and a condition file ("image" for I2VA, "video" for V2A, "audio"
    for A2V) with or without its "task"; what a row leaves out comes from `defaults`
    (the command line's --negative-prompt / --image / --video / --audio)."""
    text = epath.Path(path).read_text()
    rows = []
    if path.endswith(".jsonl"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--prompts {path} line {n} is not JSON ({e.msg}); write one object a line, {{\"prompt\": \"...\", \"seed\": 7}}") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f'--prompts {path} line {n} has no "prompt" string: {line.strip()[:80]}')
            unknown = set(row) - set(ROW_KEYS)
            if unknown:
                raise ValueError(f"--prompts {path} line {n} has unknown keys {sorted(unknown)}; a row may hold {', '.join(ROW_KEYS)}")
            rows.append(_row(dict(row, seed=int(row.get("seed", seed + len(rows)))), defaults, f"--prompts {path} line {n}"))
    else:
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                rows.append(_row(dict(prompt=line.strip(), seed=seed + len(rows)), defaults, f"--prompts {path}"))
    if not rows:
        raise ValueError(f"--prompts {path} holds no prompt")
    return rows


def _row(row: dict, defaults: dict | None, where: str) -> dict:
    """A prompt row completed from the command line's defaults, its task checked against its condition."""
    defaults = defaults or {}
    given = [k for k in CONDITIONS if row.get(k)]
    if not given:  # the command line's condition, if any, for rows that name none
        given = [k for k in CONDITIONS if defaults.get(k)]
        row.update({k: defaults[k] for k in given})
    if len(given) > 1:
        raise ValueError(f"{where}: give one condition file of {', '.join(CONDITIONS)}, not {', '.join(given)}")
    task = CONDITIONS[given[0]] if given else "t2va"
    if row.get("task", task) != task:
        want = {v: k for k, v in CONDITIONS.items()}.get(row["task"])
        raise ValueError(
            f"{where}: task {row['task']!r} "
            + (f"needs an {want!r} file" if want else "is not one of t2va, i2va, v2a, a2v")
            + (f", and the row gives {given[0]!r} ({task})" if given else "")
        )
    negative = row.get("negative_prompt", defaults.get("negative_prompt", "")) or ""
    if not isinstance(negative, str):
        raise ValueError(f'{where}: "negative_prompt" must be a string')
    return dict(prompt=row["prompt"], seed=int(row["seed"]), negative_prompt=negative, task=task, **{k: row.get(k) for k in CONDITIONS})


def finished(out_dir, index: int, want: dict) -> bool:
    """Whether OUT/iii.json and its mp4 already hold the clip that `want` names (its prompt, seed,
    negative prompt, duration, size; a key the JSON lacks counts as None): a rerun skips it."""
    meta, video = epath.Path(out_dir) / f"{index:03d}.json", epath.Path(out_dir) / f"{index:03d}.mp4"
    if not (meta.exists() and video.exists()):
        return False
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    return all(info.get(k) == v for k, v in want.items())


def main(argv: list[str] | None = None) -> list[epath.Path]:
    overrides, argv = cli.split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m jav.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="run directory written by `python -m jav.train`")
    parser.add_argument("--prompt", action="append", default=[], help="caption; repeat for several clips")
    parser.add_argument(
        "--prompts",
        default=None,
        help="a file of prompts: one caption a line, or JSON lines (.jsonl) "
        'with "prompt" and optional "seed", "negative_prompt" and a condition file ("image", "video" or '
        '"audio", which sets the row\'s task)',
    )
    parser.add_argument("--out", required=True, help="directory for NNN.mp4, NNN.wav, NNN.json")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (--config.sample.steps; default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="clip i's noise seed is seed + i unless the prompt file gives one")
    parser.add_argument("--batch", type=int, default=8, help="clips sampled together")
    parser.add_argument("--image", default=None, help="first frame to start from (I2VA), at the model's resolution")
    parser.add_argument("--video", default=None, help="mp4 to generate the soundtrack of (V2A), at the model's size and frame rate; cut to its duration")
    parser.add_argument("--audio", default=None, help="soundtrack to generate video for (A2V); resampled, cut or padded")
    parser.add_argument("--weights", default="ema", choices=("ema", "params"), help="EMA or raw weights")
    parser.add_argument(
        "--sampler",
        default=None,
        choices=SAMPLERS,
        help="Euler steps of the probability-flow ODE, or of the flow SDE "
        "with the same marginals (noise from each clip's seed) (--config.sample.sampler; default: the run's, 'ode')",
    )
    parser.add_argument("--noise-level", type=float, default=None, help="the SDE's noise level a (--config.sample.noise_level; default 0.7)")
    parser.add_argument("--cfg-video", type=float, default=None, help="text guidance scale for video (1 = off)")
    parser.add_argument("--cfg-audio", type=float, default=None, help="text guidance scale for audio (1 = off)")
    parser.add_argument("--modality-guidance", type=float, default=None, help="cross-modal guidance scale (1 = off)")
    parser.add_argument(
        "--negative-prompt",
        default="",
        help="caption that text guidance steers away from, for every clip (a .jsonl prompt file may give one per clip); needs a text guidance scale above 1",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per clip (default: as trained); positions are in seconds, so other durations run, out of the training distribution",
    )
    parser.add_argument("--size", type=int, default=None, help="frame width = height in pixels (default: as trained, data.canvas)")
    parser.add_argument(
        "--two-stage",
        action="store_true",
        help="T2VA / I2VA in two stages: the joint sampler's video, then its soundtrack sampled again with that video given (V2A); twice the passes",
    )
    parser.add_argument(
        "--mesh",
        default=None,
        help="the devices to sample on, as mesh axis sizes: 'data=8' splits each batch "
        "over 8 devices, 'fsdp=4,tensor=2' shards the model too (the run's mesh.rules; -1 for the rest). Default: "
        "one device, or data over every device when several processes were started (jav.distributed)",
    )
    parser.add_argument(
        "--text-encoder",
        default=None,
        help="frozen text encoder of a model trained on precomputed embeddings: the spec its shards were embedded with (hf:DIR, builtin:RUN)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="directory for a jax.profiler trace of one batch (the second: the first compiles), for TensorBoard's profile plugin or Perfetto",
    )
    parser.add_argument("--text-len", type=int, default=None, help="caption tokens for --text-encoder (default: the config's data.text_len, else 128)")
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.image, args.video, args.audio)) > 1:
        parser.error("give at most one of --image (I2VA), --video (V2A) and --audio (A2V)")
    if bool(args.prompt) == bool(args.prompts):
        parser.error("give the captions as --prompt TEXT (repeated) or as --prompts FILE, one of the two")
    defaults = dict(negative_prompt=args.negative_prompt, image=args.image, video=args.video, audio=args.audio)
    if args.prompts:
        rows = read_prompts(args.prompts, args.seed, defaults)
    else:
        rows = [_row(dict(prompt=p, seed=args.seed + i), defaults, "--prompt") for i, p in enumerate(args.prompt)]
    distributed.initialize()  # joins the other processes, if the launcher started several
    logging.set_verbosity(logging.ERROR)  # Orbax warns that it reads the run read-only, which is the point
    mesh = mesh_of(args.mesh)
    process, processes = jax.process_index(), jax.process_count()

    def identity(i):  # what makes clip i the clip it is: a rerun with any of these changed makes it again
        return dict(rows[i], negative_prompt=rows[i]["negative_prompt"] or None, duration=args.duration, size=args.size)

    done = [finished(args.out, i, identity(i)) for i in range(len(rows))]
    if processes > 1:  # every process samples the same batches: agree on what is left before any writes
        done = [bool(d) for d in multihost_utils.broadcast_one_to_all(np.asarray(done))]
    todo = [i for i in range(len(rows)) if not done[i]]
    paths = [epath.Path(args.out) / f"{i:03d}.mp4" for i in range(len(rows)) if done[i]]
    if not todo:
        print(f"all {len(rows)} clips are already in {args.out}", flush=True)
        return paths
    cfg, model, step = load_run(args.workdir, args.weights, mesh=mesh, overrides=overrides)
    sampler = args.sampler or cfg.sample.sampler
    noise_level = cfg.sample.noise_level if args.noise_level is None else args.noise_level
    rules = tuple(tuple(r) for r in cfg.mesh.rules) if mesh is not None else ()
    cfg = clip_config(cfg, args.duration, args.size)
    text_encoder = None
    if args.text_encoder:
        text_encoder = load_text_encoder(args.text_encoder, max_len=args.text_len or cfg.data.get("text_len", 128))
    steps = args.steps or cfg.sample.steps
    guidance = samplers.guidance_from(cfg, args.cfg_video, args.cfg_audio, args.modality_guidance)
    if any(r["negative_prompt"] for r in rows) and not guidance.uses_text():
        parser.error("a negative prompt acts through text guidance, which this run samples without: add --cfg-video and/or --cfg-audio above 1")
    skipped = f" ({len(rows) - len(todo)} already in {args.out})" if len(todo) < len(rows) else ""
    say = (lambda m: print(m, flush=True)) if process == 0 else (lambda m: None)
    batch = min(args.batch, len(todo))
    if mesh is not None:  # a batch split over the mesh's batch axes (the last one padded, as always)
        shards = sharding.batch_shards(mesh, rules)
        batch = -(-batch // shards) * shards
    on = f" on mesh {dict(mesh.shape)}" + (f", {processes} processes" if processes > 1 else "") if mesh is not None else ""
    say(f"loaded {args.workdir} step {step} ({args.weights}); sampling {len(todo)} clip(s){skipped}, {steps} steps{on}")

    def staged(task):  # --two-stage applies where the video is generated
        return args.two_stage and task in ("t2va", "i2va")

    # one batch stream per task: a batch's clips share what is given clean (each its own file)
    tasks = {}
    for i in todo:
        tasks.setdefault(rows[i]["task"], []).append(i)
    layout, per_file = TokenLayout.from_config(cfg), {}
    order, clips = [], []
    for task, idx in tasks.items():
        if len(tasks) > 1:
            say(f"[{task}] {len(idx)} clip(s)")
        cond = {}
        for name in CONDITIONS:
            files = [rows[i][name] for i in idx if rows[i][name]]
            for f in set(files) - set(per_file):
                per_file[f] = conditions_from_files(cfg, layout, 1, **{k: (f if k == name else None) for k in CONDITIONS})
            if files:
                key = {"image": "first_frame"}.get(name, name)
                cond[key] = np.concatenate([per_file[f][key] for f in files])
        negatives = [rows[i]["negative_prompt"] for i in idx]
        clips += sample_clips(
            model,
            cfg,
            [rows[i]["prompt"] for i in idx],
            seed=args.seed,
            seeds=[rows[i]["seed"] for i in idx],
            steps=steps,
            batch_size=batch,
            guidance=guidance,
            conditions=cond,
            sampler=sampler,
            noise_level=noise_level,
            two_stage=staged(task),
            log=say,
            text_encoder=text_encoder,
            negatives=negatives if any(negatives) else None,
            mesh=mesh,
            rules=rules,
            profile=args.profile if not order else None,
        )  # a trace of the first task's stream
        order += idx
    for n, (i, (frames, wave)) in enumerate(zip(order, clips)):
        if n % processes != process:  # every process has every clip; each writes its share
            continue
        info = dict(
            identity(i),
            workdir=str(args.workdir),
            checkpoint_step=step,
            weights=args.weights,
            steps=steps,
            sampler=sampler,
            noise_level=noise_level if sampler == "sde" else None,
            two_stage=staged(rows[i]["task"]),
            guidance=guidance.record(),
            fps=pixel_fps(cfg),
            sample_rate=cfg.data.sample_rate,
        )
        paths.append(write_sample(args.out, i, frames, wave, cfg, info))
        print(f"wrote {paths[-1]}" + (f" (process {process})" if processes > 1 else ""), flush=True)
    return sorted(paths)


def mesh_of(spec: str | None):
    """`--mesh` -> a mesh of every device (None: one device, unless several processes run: data over all)."""
    if not spec:
        return sharding.make_mesh({"data": -1}) if jax.process_count() > 1 else None
    shape = {}
    for part in spec.split(","):
        axis, _, size = part.partition("=")
        try:
            shape[axis.strip()] = int(size)
        except ValueError:
            raise ValueError(f"--mesh {spec!r}: write axis sizes as 'data=8' or 'fsdp=4,tensor=2'") from None
    return sharding.make_mesh(shape)


if __name__ == "__main__":
    cli.run_main("jav.sample", main)
