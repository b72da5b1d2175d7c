"""The sync reward model (jav/models/sync_reward.py): its training negatives are the
clip's own sound shifted by whole frames or another clip's sound, its AUC is the
pairwise definition, and configs/sync_reward.py:tiny trains through `python -m
jav.train`'s phase registry, logs its held-out scores and loads back as a scorer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sync_reward as configs
from jav.models import sync_reward as S
from jav.data.bounce_stream import heldout_batch
from jav.runs import load_autoencoder
from jav.train import loop
from jav.train.__main__ import phase_of


def test_examples_are_windows_from_inside_the_clip_moved_by_whole_frames():
    m = configs.get_config("tiny").model  # 16-frame windows, max_shift 2: classes -2 .. 2 frames, then unrelated
    video = jnp.arange(3 * 20, dtype=jnp.float32).reshape(3, 20, 1, 1, 1) * jnp.ones((1, 1, 32, 32, 3))
    logmel = jnp.arange(3 * 250 * 2, dtype=jnp.float32).reshape(3, 250, 2)  # 2.5 s: 12.5 log-mel frames a video frame
    v, a = S.crops(m, video, logmel, jnp.array([2, 4, 5]))
    np.testing.assert_array_equal(v[:, :, 0, 0, 0], video[:, 2:18, 0, 0, 0])  # frames 2 .. 17 of each clip
    assert a.shape == (3, 200, 2)
    np.testing.assert_array_equal(a[0], logmel[0, 25:225])  # in sync: the same 2 s (2 frames in = 25 log-mel frames)
    np.testing.assert_array_equal(a[1], logmel[1, 50:250])  # class 4: the sound 2 frames (250 ms) late
    np.testing.assert_array_equal(a[2], logmel[1, 25:225])  # unrelated: the previous clip's sound, in sync with its picture
    np.testing.assert_array_equal(S.crops(m, video, logmel, jnp.array([0, 0, 0]))[1][2], logmel[2, 0:200])  # 2 frames early
    with pytest.raises(ValueError, match="at least 20 frames"):
        S.crops(m, video[:, :18], logmel[:, :225], jnp.array([2, 2, 2]))


def test_event_labels_are_the_worlds_contact_frames_and_move_with_the_sound():
    from jav.data import bounce
    from jav.data.bounce_stream import clip_arrays, contact_frames

    params = bounce.BounceParams()
    clip = bounce.generate_clip(5, params)
    events = contact_frames(clip, params)
    times = [t for d in clip.metadata["discs"] for t, _, _ in d["contacts"]]
    assert events.shape == (params.num_frames,) and set(np.flatnonzero(events)) == {int(t * params.fps) for t in times}
    np.testing.assert_array_equal(clip_arrays(5, params, ("events",))["events"], events)

    m = configs.get_config("tiny").model
    video, logmel = jnp.zeros((3, 20, 32, 32, 3)), jnp.zeros((3, 250, 2))
    long_events = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 20)), jnp.float32)
    *_, picture, sound = S.crops(m, video, logmel, jnp.array([2, 4, 5]), long_events)
    np.testing.assert_array_equal(picture, long_events[:, 2:18])  # the picture's frames
    np.testing.assert_array_equal(sound[0], long_events[0, 2:18])  # in sync: the same frames
    np.testing.assert_array_equal(sound[1], long_events[1, 4 : 22 - 2])  # 2 frames late: the events 2 frames on
    np.testing.assert_array_equal(sound[2], long_events[1, 2:18])  # unrelated: the previous clip's
    positive = jnp.array([True, False, True, False])
    assert float(S.labelled_auc(jnp.array([3.0, 1.0, 2.0, 2.0]), positive)) == pytest.approx(0.875)


def test_auc_is_the_pairwise_probability():
    rng = np.random.default_rng(0)
    pos = rng.normal(1, 1, 50)
    neg = np.concatenate([rng.normal(0, 1, 40), pos[:5]])  # some ties
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    np.testing.assert_allclose(float(S.auc(jnp.asarray(pos), jnp.asarray(neg))), expected, rtol=1e-6)


def test_tiny_config_trains_scores_and_loads(tmp_path):
    cfg = configs.get_config("tiny")
    lines = []
    last = loop.run(cfg, tmp_path, phase_of(cfg), log=lines.append)
    assert last["step"] == 4
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scores = rows[-1]
    for key in ("eval_accuracy", "eval_offset_within_frame", "eval_auc_250ms", "eval_auc_unrelated", "eval_event_auc_picture", "eval_event_auc_sound"):
        assert 0.0 <= scores[key] <= 1.0, (key, scores)
    assert any("held-out" in line and "auc_250ms" in line for line in lines), lines
    assert all("event_loss" in r for r in rows if "loss" in r)  # the tiny config trains the event heads too
    _, model = load_autoencoder(tmp_path)
    clip = {k: jnp.asarray(v) for k, v in heldout_batch(cfg.data, 2).items()}
    reward = S.reward(model, clip["video"], clip["logmel"])
    assert reward.shape == (2,) and bool(jnp.all(reward <= 0))
    offsets = S.predicted_offset(model, clip["video"], clip["logmel"])
    assert bool(jnp.all(jnp.abs(offsets) <= cfg.model.max_shift))

    # jav.evaluate --sync-model: the model's reading of a clip as jav.evaluate writes it (uint8 frames, a waveform)
    from configs import test as test_config
    from jav.clip_tokens import clip_to_arrays, mel_params
    from jav.data.bounce import generate_clip
    from jav.evaluate import learned_sync

    diffusion_cfg, real = test_config.get_config(), generate_clip(1_000_000)
    got = learned_sync(model, real.frames, real.audio, diffusion_cfg)
    video, logmel = clip_to_arrays(real.frames, real.audio, mel_params(diffusion_cfg))
    assert got["learned_sync"] == pytest.approx(float(jnp.exp(S.reward(model, video[None], logmel[None])[0])), rel=1e-5)
    assert 0 < got["learned_sync"] < 1 and abs(got["learned_offset_frames"]) <= cfg.model.max_shift


def test_wrong_shapes_are_named():
    m = configs.get_config("tiny").model
    model = S.init_model(m, jax.random.key(0))
    with pytest.raises(ValueError, match=r"video .*\(1, 16, 24, 24, 3\)"):
        model(jnp.zeros((1, 16, 24, 24, 3)), jnp.zeros((1, 200, 64)))


def test_a_whole_clip_is_scored_without_its_edge_frames():
    """The model learned from windows inside longer clips: `reward` and `predicted_offset`
    read a whole clip without EDGE_FRAMES frames at each end, its log-mel over the same span,
    so nothing in the edge frames moves the reading."""
    m = configs.get_config("tiny").model
    model = S.init_model(m, jax.random.key(0))
    t, e = m.video_shape[0] + 2 * S.EDGE_FRAMES, S.EDGE_FRAMES
    ta = t * 25 // 2  # 12.5 log-mel frames per video frame, as at 8 fps and hop 160
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.uniform(-1, 1, (2, t) + tuple(m.video_shape[1:])), jnp.float32)
    logmel = jnp.asarray(rng.normal(size=(2, ta, m.n_mels)), jnp.float32)
    v, a = S.inner(video, logmel)
    assert v.shape[1] == t - 2 * e and a.shape[1] == round((t - 2 * e) * ta / t)
    np.testing.assert_array_equal(np.asarray(v), np.asarray(video[:, e : t - e]))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(logmel[:, round(e * ta / t) :][:, : a.shape[1]]))
    edges_changed = video.at[:, :e].set(1.0).at[:, t - e :].set(-1.0)
    np.testing.assert_allclose(np.asarray(S.reward(model, edges_changed, logmel)), np.asarray(S.reward(model, video, logmel)), rtol=1e-6)
    inside_changed = video.at[:, t // 2].set(1.0)
    assert not np.allclose(np.asarray(S.reward(model, inside_changed, logmel)), np.asarray(S.reward(model, video, logmel)))
    with pytest.raises(ValueError, match="too short to score"):
        S.inner(video[:, : 2 * e + 1], logmel)


def test_event_agreement_is_the_soft_event_f1_of_the_heads():
    """The second reading (reward.models.sync.reading="event_agreement"): per clip,
    2 sum(p_v p_a) / (sum p_v + sum p_a) of the event heads' per-frame probabilities on
    the clip without its edge frames."""
    m = configs.get_config("tiny").model
    model = S.init_model(m, jax.random.key(1))
    t = m.video_shape[0] + 2 * S.EDGE_FRAMES
    rng = np.random.default_rng(1)
    video = jnp.asarray(rng.uniform(-1, 1, (3, t) + tuple(m.video_shape[1:])), jnp.float32)
    logmel = jnp.asarray(rng.normal(size=(3, t * 25 // 2, m.n_mels)), jnp.float32)
    _, _, picture, sound = model.embeddings(*S.inner(video, logmel), with_events=True)
    p_v, p_a = 1 / (1 + np.exp(-np.asarray(picture, np.float64))), 1 / (1 + np.exp(-np.asarray(sound, np.float64)))
    expected = 2 * (p_v * p_a).sum(-1) / (p_v.sum(-1) + p_a.sum(-1) + 1e-3)
    got = np.asarray(S.event_agreement(model, video, logmel))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got.shape == (3,) and np.all((got > 0) & (got < 1))
    assert "event_agreement" in S.READINGS
