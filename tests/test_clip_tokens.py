"""Clips to tokens and back; layouts from configs; their errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import bounce_demo, test as test_config
from jav.clip_tokens import TokenLayout, clip_to_arrays, mel_params, model_to_frames
from jav.data.bounce import generate_clip


@pytest.mark.parametrize("get", [test_config.get_config, bounce_demo.get_config])
def test_tokens_round_trip(get):
    cfg = get()
    layout = TokenLayout.from_config(cfg)
    clip = generate_clip(0)
    video, audio = clip_to_arrays(clip.frames, clip.audio, mel_params(cfg))
    assert video.shape == layout.video_shape and audio.shape == layout.audio_shape
    tokens = layout.to_tokens(jnp.asarray(video)[None], jnp.asarray(audio)[None])
    for m in tokens:
        assert tokens[m].shape[1:] == (layout.num_tokens[m], layout.token_dims[m])
        assert layout.pos[m].shape == (1, layout.num_tokens[m], 3)
    v, a = layout.from_tokens(tokens)
    np.testing.assert_array_equal(model_to_frames(np.asarray(v)[0]), clip.frames)
    np.testing.assert_allclose(np.asarray(a)[0], audio, atol=1e-5)
    # the first-frame mask marks exactly the tokens of the first temporal patch
    first = layout.first_frame
    assert first.sum() == layout.grid[1] * layout.grid[2]
    np.testing.assert_allclose(layout.pos["video"][0, first, 0], layout.pos["video"][0, 0, 0])


def test_layout_errors_name_the_key():
    cfg = test_config.get_config()
    cfg.model.video.patch = (3, 4, 4)
    with pytest.raises(ValueError, match="video T=16 is not divisible by its patch size 3"):
        TokenLayout.from_config(cfg)
    cfg = test_config.get_config()
    cfg.model.audio.channels = 80
    with pytest.raises(ValueError, match="model.audio.channels=80 must equal data.mel_bins=64"):
        TokenLayout.from_config(cfg)


def test_standardised_tokens():
    """data.video_norm / audio_norm: the world's clips become tokens of about unit
    scale (raw: about 0.26 and 0.18, under unit noise), and back exactly."""
    cfg = test_config.get_config()
    raw = TokenLayout.from_config(cfg)
    clips = [generate_clip(s) for s in range(4)]
    arrays = [clip_to_arrays(c.frames, c.audio, mel_params(cfg)) for c in clips]
    video, audio = (jnp.asarray(np.stack(x)) for x in zip(*arrays))
    cfg.data.update(video_norm=(-0.69, 0.26), audio_norm=(-0.6, 0.176))
    layout = TokenLayout.from_config(cfg)
    tokens, raw_tokens = layout.to_tokens(video, audio), raw.to_tokens(video, audio)
    for m in tokens:
        assert float(jnp.std(raw_tokens[m])) < 0.35
        assert 0.6 < float(jnp.std(tokens[m])) < 1.6 and abs(float(jnp.mean(tokens[m]))) < 0.5
    v, a = layout.from_tokens(tokens)
    np.testing.assert_allclose(np.asarray(v), np.asarray(video), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a), np.asarray(audio), atol=1e-5)
    cfg.data.audio_norm = (0.0, 0.0)
    with pytest.raises(ValueError, match=r"data.audio_norm=\(0.0, 0.0\): the standard deviation must be > 0"):
        TokenLayout.from_config(cfg)


def test_ltx2_layout_gives_ltx2s_positions():
    """With model.rope.layout="ltx2" the token layout gives LTX-2's positions: for LTX-2's own latents
    (causal 8x / 32x video VAE at 24 fps, 25 audio latents/s of 4 mel frames) exactly what
    jav.models.rope.ltx2_*_positions give (checked against diffusers in tests/test_ltx2_parity.py);
    in pixel space each token's span of frames and pixels, the time in seconds."""
    from configs import ltx2, test as test_config
    from jav.models import rope

    cfg = ltx2.get_config()
    layout = TokenLayout.from_config(cfg)
    np.testing.assert_array_equal(layout.pos["video"][0], rope.ltx2_video_positions(*layout.grid, fps=24.0))
    np.testing.assert_array_equal(layout.pos["audio"][0], rope.ltx2_audio_positions(layout.num_tokens["audio"]))

    cfg = test_config.get_config()
    jav_pos = TokenLayout.from_config(cfg).pos
    cfg.model.rope.layout = "ltx2"
    layout = TokenLayout.from_config(cfg)
    (_, ph, pw), fps = layout.video_patch, layout.fps
    v = layout.pos["video"][0]
    # the centre of a token's span of frames, frame i spanning [i, i + 1) / fps: half a frame after jav's mean frame time
    np.testing.assert_allclose(v[:, 0], jav_pos["video"][0][:, 0] + 0.5 / fps, rtol=1e-6)
    np.testing.assert_array_equal(v[:, 1], jav_pos["video"][0][:, 1] * ph + ph / 2)  # the centre of its pixels
    np.testing.assert_array_equal(v[:, 2], jav_pos["video"][0][:, 2] * pw + pw / 2)
    hop, rate = layout.mel_hop
    a = layout.pos["audio"][0][:, 0]
    np.testing.assert_allclose(np.diff(a), layout.audio_patch * hop / rate, atol=1e-6)  # one patch of mel frames apart
    np.testing.assert_allclose(a[0], layout.audio_patch * hop / rate / 2, rtol=1e-5)
