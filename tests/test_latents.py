"""Latent space end to end: tiny VAE runs -> latent shards -> a joint model trained
on them -> evaluation that decodes samples through the same VAEs."""
import json

import numpy as np
import pytest

from configs import audio_vae as audio_vae_config
from configs import test as test_config
from configs import video_vae as video_vae_config
from jav.clip_tokens import TokenLayout
from jav.data import synthetic
from jav.data.shards import open_shards
from jav.models import patch

DURATION = 9 / 8  # 9 frames at 8 fps (1 + 4 * 2), 112 log-mel frames


@pytest.fixture(scope="module")
def latent_shards(tmp_path_factory):
    from jav.train.autoencoder import train

    runs = {}
    for name, config in (("video", video_vae_config), ("audio", audio_vae_config)):
        cfg = config.get_config("tiny")
        cfg.train.steps = 1
        runs[name] = tmp_path_factory.mktemp(f"{name}_vae")
        train(cfg, str(runs[name]), log=lambda _: None)
    out = tmp_path_factory.mktemp("latents")
    synthetic.main(["--out", str(out), "--num", "6", "--duration", str(DURATION), "--latent", "--video-vae", str(runs["video"]),
                    "--audio-vae", str(runs["audio"]), "--stats-clips", "6", "--batch", "4"])
    return out


def latent_config(data_dir):
    info = json.loads((data_dir / "latent.json").read_text())
    cfg = test_config.get_config()
    vshape, ashape = tuple(info["video_latent_shape"]), tuple(info["audio_latent_shape"])
    cfg.model.video.patch, cfg.model.video.channels = (1, 1, 1), vshape[-1]
    cfg.model.audio.channels = ashape[-1]
    cfg.data = dict(world="latent", video_latent_shape=vshape, audio_latent_shape=ashape, video_time_compression=4,
                    pixel_fps=8, fps=2.0, audio_rate=25.0, canvas=32, duration=DURATION, sample_rate=16000, mel_hop=160,
                    mel_bins=64, dir=str(data_dir))
    return cfg


def test_latent_shards_are_normalised_per_channel(latent_shards):
    info = json.loads((latent_shards / "latent.json").read_text())
    manifest, source = open_shards(str(latent_shards))
    assert manifest["num_records"] == 6
    assert manifest["video_shape"] == info["video_latent_shape"] == [3, 4, 4, 16]  # 9 frames -> 3, 32 px -> 4, 16 channels
    assert manifest["audio_shape"][0] == 112 // 4 and manifest["video_dtype"] == "float32"
    from jav.data.record import decode_record

    recs = [decode_record(source[i]) for i in range(len(source))]
    for name in ("video", "audio"):
        z = np.stack([r[name] for r in recs])
        z = z.reshape(-1, z.shape[-1])
        # statistics were measured on these same six clips: zero mean and unit deviation per channel
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
    assert recs[0]["metadata"]["video_repr"]["kind"] == "video_vae_latent"


def test_latent_token_times_follow_the_causal_vae(latent_shards):
    layout = TokenLayout.from_config(latent_config(latent_shards))
    times = np.unique(layout.pos["video"][0, :, 0])
    # latent 0 is frame 0 alone; latent i holds frames 4i-3 .. 4i at 8 fps
    np.testing.assert_allclose(times, [0.0, 2.5 / 8, 6.5 / 8])
    np.testing.assert_allclose(patch.causal_latent_frame_times(2, 8, 24.0), [0.0, 4.5 / 24])


def test_train_and_evaluate_in_latent_space(latent_shards, tmp_path):
    from jav.evaluate import evaluate
    from jav.train.trainer import train

    cfg = latent_config(latent_shards)
    cfg.train.steps, cfg.train.log_every = 2, 1
    metrics = train(cfg, str(tmp_path / "run"), log=lambda _: None)
    assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
    summary = evaluate(tmp_path / "run", 2, out=tmp_path / "samples", steps=2, log=lambda _: None)
    from jav import media

    frames, fps, wave, rate = media.read_mp4(tmp_path / "samples" / "000.mp4")
    assert frames.shape == (9, 32, 32, 3) and fps == 8 and rate == 16000
    assert abs(len(wave) - DURATION * rate) < 0.05 * rate
    # the ceiling is the real clips through the VAEs' round trip, scored like the samples
    assert set(summary["reference_metrics"]) == set(summary["metrics"])
