"""The run of record on the bounce world: a joint model whose sounds land on their frames.

    python -m jav.data.synthetic --out runs/reference/data --num 2000
    python -m jav.train --config configs/bounce_reference.py --workdir runs/reference/run \
        --config.data.dir=runs/reference/data
    python -m benchmarks.sync_probe --workdirs runs/reference/run --num 64
    python -m jav.evaluate --workdir runs/reference/run --num 64 --task t2va,v2a,a2v --out runs/reference/samples

Pixel / log-mel space like configs/bounce_demo.py, with what the synchrony
measurements of benchmarks/RESULTS.md ("Synchrony") found the coupling needs:
- 1x8x8 video patches: one token frame per video frame (8 per second), so a
  contact's time is where a disc is in a frame, not inside a token's channels;
- `joint.aligned` with `frame_tokens=16` and `aligned_read="pair"`: each sound
  token reads, beside the cross-attention, the two frames around its instant
  with every token of each in its place and its phase between them;
- `flow.loss_space="geometric"`: the velocity error weighted by t, so the
  high-noise steps, where the video is the only source of timing, are trained;
- 2,400 steps: at 600 the bursts land near contacts but for one contact in
  four, at 1,200 for about every one (V2A event F1 0.22 -> 0.69).
About 75 minutes on this project's 2-core CPU alone (0.55 steps/s), resumable.
It is the teacher of the distillation phase and the start of reward tuning.
"""
from configs import bounce_demo


def get_config(arg=None):
    """`arg`: a joint mode (cross_attn, joint_attn, none) for the side-by-side runs;
    with `none` the aligned path, which couples the branches, is off too."""
    cfg = bounce_demo.get_config()
    m = cfg.model
    m.video.patch = (1, 8, 8)
    m.joint.update(aligned=True, frame_tokens=16, aligned_read="pair")
    if arg:
        m.joint.mode = arg
        if arg != "cross_attn":
            m.joint.time_bias = 0.0
        if arg == "none":
            m.joint.update(aligned=False, frame_tokens=0, aligned_read="mix")
    cfg.flow.loss_space = "geometric"
    cfg.train.steps = 2400
    cfg.train.ema_decay = 0.995  # about the last 200 steps
    cfg.train.checkpoint_every = 200
    return cfg
