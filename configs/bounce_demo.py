"""The demo: a small joint audio-video model trained on the bounce world in pixel /
log-mel space on CPU, whose sounds land near their frames.

    make demo    # shards, this config, samples of held-out captions, their metrics

or step by step (each command resumes if interrupted):

    python -m jav.data.synthetic --out runs/demo/data --num 2000
    python -m jav.train --config configs/bounce_demo.py --workdir runs/demo/run --config.data.dir=runs/demo/data
    python -m jav.evaluate --workdir runs/demo/run --num 16 --tasks t2va,v2a --out runs/demo/samples

Pixel-space video (32x32 RGB, 8 fps, patches of 1x8x8: 256 tokens) and log-mel
audio (64 bins, 100 frames/s, patches of 4 frames: 50 tokens), cross-attention
coupling in every layer, x0-prediction, with what the synchrony measurements
(benchmarks/RESULTS.md, "Synchrony") found the coupling needs:
- one token frame per video frame (patches 1x8x8), so a contact's time is where a
  disc is in a frame, not inside a token's channels;
- `joint.aligned` with `frame_tokens=16` and `aligned_read="pair"`: beside the
  cross-attention, each sound token reads the two frames around its instant, every
  token of each in its place, and its phase between them;
- `flow.loss_space="geometric"`: the velocity error weighted by t, so that the
  high-noise steps, where the video is the only source of timing, are trained.
The audio's noise level is drawn apart from the video's (`flow.sigma.audio="tokens"`),
so the video branch also learns from sound cleaner than itself, and sampling uses
cross-modal guidance 3 (`sample.modality`): what the run of record found. 1,000
steps of 16 clips fit `make demo` in 20 minutes on a 2-core CPU (about 1.5 steps/s):
on 64 held-out real videos (V2A) the bursts it makes land 28 ms from the contacts
(event F1 0.60; unrelated sound 201 ms, 0.34), while its own videos (T2VA) do not yet
bounce like the world's. The run of record (configs/bounce_reference.py) is this
config trained 4.8 times as long.
`arg` picks the joint mode (`configs/bounce_demo.py:joint_attn`, `:none`) for
side-by-side runs; `none` also turns the aligned path (a coupling) off.
The VAE-latent version of the same world is configs/bounce_latent.py.
"""

from configs import common


def get_config(arg=None):
    model = common.model(
        video_width=128,
        video_heads=4,
        audio_width=64,
        audio_heads=2,
        depth=4,
        joint=arg or "cross_attn",
        video_patch=(1, 8, 8),
        audio_patch=4,
        text_dim=64,
    )
    model.prediction = "x0"
    if model.joint.mode != "none":
        model.joint.update(aligned=True, frame_tokens=16, aligned_read="pair")
    cfg = common.experiment(model, batch_size=16, steps=1000, lr=1e-3, warmup_steps=50)
    cfg.flow.loss_space = "geometric"
    cfg.flow.sigma.audio = "tokens"
    cfg.sample.modality = 3.0
    cfg.train.ema_decay = 0.99  # a short run: average about the last 100 steps
    cfg.train.checkpoint_every = 100
    # Text guidance on video only: it lifts colour accuracy (0.69 -> 0.75) and, since
    # pitch is judged against the visible discs, pitch agreement (0.78 -> 0.92); on
    # audio as well it adds spurious bursts (18 onsets per clip against 3.3 real).
    cfg.sample.text_video = 3.0
    # held-out T2VA and V2A samples at steps 500 and 1,000 (WORKDIR/evals; in TensorBoard and the report)
    cfg.train.eval_every = 500
    cfg.eval.update(num=4, tasks="t2va,v2a", media=2)
    return cfg
