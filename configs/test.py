"""The tiny config the test suite trains: a 2-layer model on the bounce world.

    python -m benchmarks.overfit --config configs/test.py --train-steps 1500 --out runs/overfit

Memorises a batch of two clips in about 6 minutes on a 2-core CPU (loss down
99%, samples at about 31 dB PSNR that pass the world's metrics); it exists so
that tests compile and step fast, not to generalise.
"""

from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=96,
        video_heads=2,
        audio_width=64,
        audio_heads=2,
        depth=2,
        joint="cross_attn",
        video_patch=(2, 4, 4),
        audio_patch=1,
        text_dim=32,
    )
    # x0-prediction: a 96-wide model with 96-value video patches learns far faster
    # predicting the clean clip than predicting velocity (benchmarks/RESULTS.md)
    model.prediction = "x0"
    cfg = common.experiment(model, batch_size=2, steps=800, lr=1e-3, warmup_steps=50)
    cfg.train.peak_flops_per_device = 1e11  # a fixed MFU peak: tests need not measure the CPU's
    return cfg
