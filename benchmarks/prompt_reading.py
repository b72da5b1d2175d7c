"""How well the prompt-consistency reward model reads generated clips.

    python -m benchmarks.prompt_reading --workdir runs/reward/prompt \
        --samples runs/reference/rec/eval64/t2va,runs/reference/rec/eval64/a2v

The model (configs/prompt_reward.py) is trained on real clips; a reward reads the
model's own samples. Each `--samples` folder (what `jav.evaluate --out` writes:
NNN.json with the caption and the world's metrics beside NNN.mp4 and NNN.wav) is
read as the reward phase reads a clip: the colours, background and sounding
pitches the model sees, whether the picture agrees with the caption (its colour
set and background) and whether every sounding pitch is a named colour's,
against the world's own verdict (`colour_accuracy` of jav.data.bounce_metrics:
the visible colours are the caption's); and the prompt-consistency accuracy on
these clips: the own caption scored above each one-attribute alteration
(`jav.models.prompt_reward.altered`). Printed and, with `--json`, appended to a file.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jav import cli
from jav.clip_tokens import frames_to_model, mel_params
from jav.data import mel
from jav.media import read_mp4, read_wav
from jav.models import prompt_reward as P
from jav.runs import load_autoencoder, load_config
from jav.tokenizer import HashTokenizer


def folder_reading(scorer, folder: pathlib.Path) -> dict:
    cfg = scorer.cfg
    tok = HashTokenizer(cfg.vocab_size, cfg.max_len)
    score = jax.jit(lambda v, a: scorer(v, a))
    mels = {}  # each diffusion run's log-mel settings, read once
    rows = []
    for meta_path in sorted(folder.glob("[0-9]*.json")):
        meta = json.loads(meta_path.read_text())
        frames, _, _, _ = read_mp4(meta_path.with_suffix(".mp4"))
        wave, _ = read_wav(meta_path.with_suffix(".wav"))
        if meta["workdir"] not in mels:
            mels[meta["workdir"]] = mel_params(load_config(meta["workdir"]))
        logmel = mel.waveform_to_logmel(np.asarray(wave, np.float32), mels[meta["workdir"]])[None]
        logits = score(jnp.asarray(frames_to_model(frames)[None]), jnp.asarray(logmel))
        ids, mask = tok.encode([meta["prompt"]])
        colours, background = P.caption_attributes(cfg, jnp.asarray(ids), jnp.asarray(mask))
        agrees = P.reads(logits, colours, background)
        rows.append(
            dict(
                picture=bool(agrees["colours"][0] & agrees["background"][0]),
                sound=bool(agrees["silent"][0]),
                wins=[float(w[0]) for w in P.wins_over_alterations(logits, colours, background).values()],
                world_colour=meta["metrics"]["colour_accuracy"],
                reward=float(P.consistency(logits, colours, background)[0]),
            )
        )
    if not rows:
        raise FileNotFoundError(f"{folder} holds no NNN.json clips; pass a folder `jav.evaluate --out` wrote (OUT/TASK)")
    picture = np.array([r["picture"] for r in rows])
    world = np.array([r["world_colour"] for r in rows]) > 0.5
    return dict(
        samples=str(folder),
        clips=len(rows),
        picture_agrees=float(picture.mean()),
        sound_agrees=float(np.mean([r["sound"] for r in rows])),
        world_colour_accuracy=float(world.mean()),
        picture_agrees_with_world=float(np.mean(picture == world)),
        consistency_accuracy=float(np.mean([w for r in rows for w in r["wins"]])),
        mean_reward=float(np.mean([r["reward"] for r in rows])),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the prompt model's run directory (configs/prompt_reward.py)")
    parser.add_argument("--samples", required=True, help="comma-separated folders of generated clips (jav.evaluate --out OUT: OUT/TASK)")
    parser.add_argument("--json", default="", help="append the result to this JSON-lines file")
    args = parser.parse_args(argv)
    cfg, scorer = load_autoencoder(args.workdir)
    if cfg.model.kind != "prompt_reward":
        raise ValueError(f"--workdir {args.workdir} is a {cfg.model.kind} run; name a prompt model's run (configs/prompt_reward.py)")
    result = dict(workdir=args.workdir, samples=[folder_reading(scorer, pathlib.Path(f)) for f in cli.comma_list(args.samples)])
    for row in result["samples"]:
        print(
            f"{row['samples']} ({row['clips']} clips): picture agrees {row['picture_agrees']:.3f} (world: {row['world_colour_accuracy']:.3f}, "
            f"same verdict {row['picture_agrees_with_world']:.3f})  sound agrees {row['sound_agrees']:.3f}  "
            f"consistency accuracy {row['consistency_accuracy']:.3f}  mean reward {row['mean_reward']:.3f}"
        )
    if args.json:
        cli.append_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
