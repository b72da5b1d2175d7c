"""Held-out denoising loss of trained runs: the training objective on clips none of
them saw, with the same clips, timesteps and noise for every run. Sampled metrics
(jav.evaluate) move by 0.1-0.5 in colour accuracy between training seeds of the
demo; this loss compares runs trained on different data with far less noise.

    python -m jav.data.synthetic --out runs/heldout --num 256 --seed 1000000   # held-out clips
    python -m benchmarks.heldout_loss --data runs/heldout --workdirs RUN [RUN ...] [--json OUT]

Prints one line per run (its EMA weights at the last checkpoint): the mean loss and
its video and audio parts over `--repeats` passes of the held-out clips, each pass
with its own fixed key.
"""

from __future__ import annotations

import argparse
import json

import jax
import ml_collections
import numpy as np
from flax import nnx

from jav.clip_tokens import TokenLayout
from jav.data.loader import make_dataset, text_input_for
from jav.data.shards import open_shards
from jav.runs import load_run
from jav.train.step import batch_loss


def heldout_loss(workdir: str, data: str, batch_size: int = 16, repeats: int = 4) -> dict:
    """{"loss", "video", "audio", "clips", "step"} of run `workdir` on the shards in `data`."""
    cfg, model, step = load_run(workdir)
    layout = TokenLayout.from_config(cfg)
    flow_cfg = ml_collections.FrozenConfigDict(cfg.flow)
    text = cfg.model.text
    ds = make_dataset(
        data, batch_size=batch_size, seed=0, tokenizer_vocab=text.vocab_size, tokenizer_len=text.max_len, text_input=text_input_for(text), text_dim=text.dim
    )
    batches = len(open_shards(data)[1]) // batch_size
    if batches == 0:
        raise ValueError(f"{data} holds fewer clips than one batch of {batch_size}; write more or pass a smaller --batch")

    graphdef, state = nnx.split(model)

    @jax.jit
    def loss(state, batch, key):
        return batch_loss(nnx.merge(graphdef, state), batch, key, layout, flow_cfg)

    sums = {"loss": [], "video": [], "audio": []}
    for r in range(repeats):
        for b in range(batches):
            total, aux = loss(state, ds[b], jax.random.fold_in(jax.random.key(r), b))
            sums["loss"].append(float(total))
            for part in ("video", "audio"):
                sums[part].append(float(aux[f"loss_{part}"]) if f"loss_{part}" in aux else float("nan"))
    return {k: float(np.mean(v)) for k, v in sums.items()} | {"clips": batches * batch_size, "step": step}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="held-out shards (python -m jav.data.synthetic --seed 1000000 ...)")
    parser.add_argument("--workdirs", nargs="+", required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="passes over the clips, each with other timesteps and noise")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = {}
    for workdir in args.workdirs:
        r = results[workdir] = heldout_loss(workdir, args.data, args.batch, args.repeats)
        print(
            f"{workdir}: held-out loss {r['loss']:.4f} (video {r['video']:.4f}, audio {r['audio']:.4f}) "
            f"on {r['clips']} clips x {args.repeats}, step {r['step']}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
