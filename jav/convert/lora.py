"""A run trained with LoRA adapters -> a run whose kernels hold them (W + alpha / rank * A . B).

    python -m jav.convert merge-lora RUN --workdir OUT [--weights ema|params] [--step N]

OUT is a run directory like any other (config.json with model.lora.rank = 0, step 0 with
EMA = params, the source recorded in its config as `merged_from`): `jav.sample`,
`jav.evaluate`, `--config.init_from=OUT` and the export commands read it.
"""

from __future__ import annotations

import pathlib

import ml_collections
from flax import nnx

from jav.models import lora
from jav.runs import load_run
from jav.train.checkpoint import Checkpointer


def merge_run(run, workdir, weights: str = "ema", step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """Merges the adapters of `run`'s `weights` at `step` (default: the latest) into a new run
    directory `workdir` -> (its config, the number of adapters merged)."""
    cfg, model, step = load_run(run, weights=weights, step=step)
    if not (cfg.model.get("lora") and cfg.model.lora.get("rank", 0)):
        raise ValueError(f"{run} has no LoRA adapters (model.lora.rank is 0): there is nothing to merge")
    merged = lora.merge(model)
    cfg.model.lora.rank = 0
    cfg.train.trainable = "auto"
    cfg.init_from = ""
    cfg.merged_from = dict(run=str(run), step=int(step), weights=weights, adapters=merged)
    params = nnx.state(model)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    with Checkpointer(workdir, async_save=False) as ckpt:
        ckpt.save(0, params=params, ema=params, opt_state={}, data_state=None, config=cfg, force=True)
        ckpt.wait()
    return cfg, merged
