"""Fine-tune a run (a trained one, or published weights converted by `python -m jav.convert`)
with LoRA adapters on its attention and MLP projections:

    python -m jav.train --config configs/lora.py:runs/reference/run --workdir runs/lora/run \
        --config.data.dir=DATA [--config.model.lora.rank=16 --config.train.trainable='lora/|audio']
    python -m jav.convert merge-lora runs/lora/run --workdir runs/lora/merged   # adapters into the kernels

`arg` is the base run's directory. The model is the base run's (its config.json) with rank-8
adapters (alpha 8) on "attn,mlp"; only the adapters train (`train.trainable="auto"`), from the
base run's EMA weights (`init_from=BASE:ema`; a converted run's EMA is its weights). The data,
mesh and sampling settings are the base run's unless overridden; the optimiser is AdamW at
1e-3 with 20 warmup steps over 300 steps (a checkpoint every 100), and the base run's
evaluation during training is kept where it had one. benchmarks/lora_finetune.py runs this on
a small LTX-2-structured model imported from diffusers' format.
"""

from jav.runs import load_config


def get_config(arg=None):
    if not arg:
        raise ValueError("name the base run's directory: --config configs/lora.py:BASE_RUN_DIR")
    cfg = load_config(arg)
    cfg.model.lora = dict(rank=8, alpha=8.0, targets="attn,mlp")
    cfg.train.trainable = "auto"
    cfg.init_from = f"{arg}:ema"
    cfg.train.update(steps=300, checkpoint_every=100, log_every=25)
    cfg.optim.update(lr=1e-3, warmup_steps=20)
    for key in ("merged_from", "teacher"):  # provenance of the base run, not of this one
        if key in cfg:
            del cfg[key]
    return cfg
