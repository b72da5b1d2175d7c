"""The run of record on the bounce world: configs/bounce_demo.py trained four
times as long (2,400 steps), so that its sounds land on their frames.

    python -m jav.data.synthetic --out runs/reference/data --num 2000
    python -m jav.train --config configs/bounce_reference.py --workdir runs/reference/run \
        --config.data.dir=runs/reference/data
    python -m benchmarks.sync_probe --workdirs runs/reference/run --num 64
    python -m jav.evaluate --workdir runs/reference/run --num 64 --task t2va,v2a,a2v --out runs/reference/samples

At 600 steps (the demo) the bursts land near contacts but for one contact in
four, at 1,200 for about every one (V2A event F1 0.22 -> 0.69,
benchmarks/RESULTS.md, "Synchrony"). About 75 minutes on the project's 2-core
CPU alone, resumable. It is the teacher of the distillation phase and the start
of reward tuning. `arg` picks the joint mode as in configs/bounce_demo.py.
"""
from configs import bounce_demo


def get_config(arg=None):
    cfg = bounce_demo.get_config(arg)
    cfg.train.steps = 2400
    cfg.train.ema_decay = 0.995  # about the last 200 steps
    cfg.train.checkpoint_every = 200
    return cfg
