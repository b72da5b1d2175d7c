"""Distil a trained run into a student that samples in 4 network passes.

    python -m jav.train --config configs/distill.py:runs/demo/run --workdir runs/demo/distill
    python -m jav.evaluate --workdir runs/demo/distill --num 64 --tasks t2va,v2a

`arg` is the teacher's run directory. The student is the teacher's model (read
from its config.json, trained on its data) with the guidance scales as an input
and its output the mean velocity over a step (jav/train/distill.py), starting from
the teacher's EMA weights. It samples with `sample.steps` = 4 Euler steps of one
pass each at the teacher's sampling guidance (any scales inside
`distill.guidance` work: `jav.sample --cfg-video S`), against the teacher's 32
steps of up to three passes. `--config.model.interval_embed=False` distils the
guidance only (one pass per step, the teacher's number of steps).
"""

from jav.runs import load_config
from jav.train.distill import student_config


def get_config(arg=None):
    if not arg:
        raise ValueError("name the teacher's run directory: --config configs/distill.py:TEACHER_RUN_DIR")
    return student_config(load_config(arg), arg)
