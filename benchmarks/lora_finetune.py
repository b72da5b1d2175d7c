"""A LoRA fine-tune of an imported model on the bounce world, through `python -m jav.train`.

    python -m benchmarks.lora_finetune --out runs/lora [--train-steps 300] [--rank 8] [--text-run runs/reference/run]

1. A small random `LTX2VideoTransformer3DModel` (diffusers, LTX-2's structure, 2 blocks) is
   written in diffusers' format, its input and output projections sized for the bounce world's
   tokens as the run of record cuts them (1 x 8 x 8 RGB patches: 192 values; 4 log-mel frames of
   64 bins: 256), its caption projection for the run of record's 64-d text features.
2. `python -m jav.convert ltx2` imports it; the imported run is pointed at the bounce world's
   pixel tokens (the same parameter shapes: `retarget`).
3. Bounce shards with each caption's embedding from the run of record's built-in text encoder
   (`python -m jav.data.synthetic --text-encoder builtin:RUN`; LTX-2 reads precomputed text).
4. `python -m jav.train --config configs/lora.py:IMPORTED` trains rank-`--rank` adapters for
   `--steps` steps, killed halfway and resumed; then the adapters are merged
   (`python -m jav.convert merge-lora`) and the merged run's held-out loss is compared with the
   adapter run's and the imported weights'.

Prints and appends to --json: steps, losses, trained / total parameters, resume, merge check.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_ltx2(out: pathlib.Path, video_in: int, audio_in: int, text_dim: int, seed: int = 0) -> None:
    import diffusers
    import torch

    torch.manual_seed(seed)
    heads, head_dim, audio_heads, audio_head_dim = 4, 16, 4, 8  # LTX-2 needs as many audio heads as video heads
    model = diffusers.LTX2VideoTransformer3DModel(
        in_channels=video_in,
        out_channels=video_in,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        audio_in_channels=audio_in,
        audio_out_channels=audio_in,
        audio_num_attention_heads=audio_heads,
        audio_attention_head_dim=audio_head_dim,
        audio_cross_attention_dim=audio_heads * audio_head_dim,
        num_layers=2,
        caption_channels=text_dim,
        rope_type="split",
    )
    model.save_pretrained(out)


def retarget(run: pathlib.Path, reference_cfg) -> None:
    """Points an imported LTX-2 run (latent tokens, patch 1) at the bounce world's pixel tokens, whose
    patches hold as many values as its input projection takes: the parameters keep their shapes."""
    cfg = json.loads((run / "config.json").read_text())
    ref = reference_cfg.to_dict()
    video_in, audio_in = cfg["model"]["video"]["channels"], cfg["model"]["audio"]["channels"]
    rv, ra = ref["model"]["video"], ref["model"]["audio"]
    if video_in != int(np.prod(rv["patch"])) * 3 or audio_in != ra["patch"] * ra["channels"]:
        raise ValueError(
            f"the imported model takes {video_in} / {audio_in} values per token; the bounce world's "
            f"patches hold {int(np.prod(rv['patch'])) * 3} / {ra['patch'] * ra['channels']}"
        )
    cfg["model"]["video"].update(patch=rv["patch"], channels=3)
    cfg["model"]["audio"].update(patch=ra["patch"], channels=ra["channels"])
    cfg["data"] = dict(ref["data"], text_len=ref["model"]["text"]["max_len"])
    cfg["train"].update(batch_size=ref["train"]["batch_size"], eval_every=0)  # held-out sampling reads token ids, not embeddings
    cfg["mesh"] = ref["mesh"]
    cfg["sample"] = ref["sample"]
    (run / "config.json").write_text(json.dumps(cfg, indent=2))


def jav(*args, log, kill_at_step: int = 0) -> str:
    """Runs `python ARGS` here -> its output. kill_at_step: SIGTERM it once its log passes that step
    (the trainer saves and exits, as on a preempted machine)."""
    log(f"$ {' '.join(args)}")
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        log("  " + line.rstrip())
        step = re.match(r"step\s+(\d+)/", line)
        if kill_at_step and step and int(step.group(1)) >= kill_at_step and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            log(f"sent SIGTERM after step {step.group(1)}")
    if proc.wait():
        raise RuntimeError(f"{' '.join(args)} failed:\n{''.join(lines)[-4000:]}")
    return "".join(lines)


def held_out_loss(run, data, num_batches: int = 8, weights: str = "params") -> float:
    """The flow loss of a run's weights on `data` (a fixed draw of batches, noise and tasks)."""
    import jax
    from flax import nnx

    from jav.clip_tokens import TokenLayout
    from jav.data.loader import make_loader, text_input_for
    from jav.runs import load_run
    from jav.train.step import batch_loss

    cfg, model, _ = load_run(run, weights=weights)
    layout = TokenLayout.from_config(cfg)
    loader = make_loader(str(data), batch_size=16, seed=123, text_input=text_input_for(cfg.model.text), text_dim=cfg.model.text.dim)
    graphdef, state = nnx.split(model)
    loss = jax.jit(lambda s, b, k: batch_loss(nnx.merge(graphdef, s), b, k, layout, cfg.flow)[0])
    return float(np.mean([loss(state, next(loader), jax.random.key(i)) for i in range(num_batches)]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lora_finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/lora")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--num", type=int, default=512, help="bounce clips in the fine-tuning shards")
    parser.add_argument("--text-run", default="runs/reference/run", help="the run whose built-in text encoder embeds the captions")
    parser.add_argument("--json", default="", help="append the result as one JSON line here")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731

    from configs import bounce_reference
    from jav.runs import load_config

    ref = bounce_reference.get_config()
    text_dim = load_config(args.text_run).model.text.dim
    video_in = int(np.prod(ref.model.video.patch)) * 3
    audio_in = ref.model.audio.patch * ref.model.audio.channels
    if not (out / "hf" / "config.json").exists():
        tiny_ltx2(out / "hf", video_in, audio_in, text_dim)
    if not (out / "imported" / "checkpoints").exists():
        jav("-m", "jav.convert", "ltx2", str(out / "hf"), "--workdir", str(out / "imported"), log=log)
        retarget(out / "imported", ref)
    if not (out / "data" / "manifest.json").exists():
        jav(
            "-m",
            "jav.data.synthetic",
            "--out",
            str(out / "data"),
            "--num",
            str(args.num),
            "--seed",
            "5000000",
            "--text-encoder",
            f"builtin:{args.text_run}",
            "--text-len",
            str(ref.model.text.max_len),
            log=log,
        )
    if not (out / "heldout" / "manifest.json").exists():
        jav(
            "-m",
            "jav.data.synthetic",
            "--out",
            str(out / "heldout"),
            "--num",
            "128",
            "--seed",
            "1000000",
            "--text-encoder",
            f"builtin:{args.text_run}",
            "--text-len",
            str(ref.model.text.max_len),
            log=log,
        )

    train = [
        "-m",
        "jav.train",
        "--config",
        f"configs/lora.py:{out / 'imported'}",
        "--workdir",
        str(out / "run"),
        f"--config.data.dir={out / 'data'}",
        f"--config.model.lora.rank={args.rank}",
        f"--config.model.lora.alpha={float(args.rank)}",
        f"--config.train.steps={args.train_steps}",
        "--config.train.ema_decay=0.0",
        "--config.train.log_every=10",
    ]
    start = time.time()
    killed = jav(*train, log=log, kill_at_step=args.train_steps // 2)  # preempted halfway: saves and exits
    rest = jav(*train, log=log)
    seconds = time.time() - start
    lines = (killed + rest).splitlines()
    trained = next((m for m in lines if "trains " in m), "")
    resumed = next((m for m in rest.splitlines() if m.startswith("resumed from")), "")
    metrics = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = {m["step"]: m["loss"] for m in metrics}
    jav("-m", "jav.convert", "merge-lora", str(out / "run"), "--workdir", str(out / "merged"), "--weights", "params", log=log)
    result = dict(
        steps=args.train_steps,
        rank=args.rank,
        seconds=round(seconds, 1),
        trained=trained.split("; trains ")[-1] if trained else "",
        resumed=resumed,
        first_logged_loss=losses[min(losses)],
        last_logged_loss=losses[max(losses)],
        heldout_loss_imported=held_out_loss(out / "imported", out / "heldout", weights="ema"),
        heldout_loss_lora=held_out_loss(out / "run", out / "heldout"),
        heldout_loss_merged=held_out_loss(out / "merged", out / "heldout", weights="ema"),
    )
    log(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(dict(result, date=time.strftime("%Y-%m-%d"))) + "\n")
    return result


if __name__ == "__main__":
    main()
