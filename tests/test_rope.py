"""MM-RoPE: NumPy reference, relative-position invariance, shared temporal phase."""

import jax.numpy as jnp
import numpy as np
import pytest

from jav.models import patch
from jav.models.rope import apply_rope, axis_pairs, rope_angles, rope_frequencies, temporal_only

THETA, SCALE = 10_000.0, 25.0


def numpy_rope(x, pos, head_dim):
    axis_ids, freqs = rope_frequencies(head_dim, THETA, SCALE)
    ang = pos[:, axis_ids] * freqs  # [N, Dh/2]
    half = head_dim // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], -1)


def test_apply_rope_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 2, 16)).astype(np.float32)
    pos = rng.uniform(0, 4, size=(5, 3)).astype(np.float32)
    got = apply_rope(jnp.asarray(x), rope_angles(jnp.asarray(pos)[None], 16, THETA, SCALE))
    np.testing.assert_allclose(np.asarray(got)[0], numpy_rope(x[0], pos, 16), rtol=1e-5, atol=1e-5)


def test_half_of_the_pairs_go_to_time():
    assert axis_pairs(16) == (4, 2, 2)
    assert axis_pairs(64) == (16, 8, 8)
    with pytest.raises(ValueError, match="even head dimension"):
        axis_pairs(7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_scores_depend_only_on_relative_position(axis):
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 32)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 32)), jnp.float32)

    def score(pq, pk):
        aq = rope_angles(jnp.asarray([[pq]], jnp.float32), 32, THETA, SCALE)
        ak = rope_angles(jnp.asarray([[pk]], jnp.float32), 32, THETA, SCALE)
        return float(jnp.sum(apply_rope(q, aq) * apply_rope(k, ak)))

    base_q, base_k = np.array([0.3, 2.0, 1.0]), np.array([1.1, 5.0, 3.0])
    shift = np.zeros(3)
    shift[axis] = 7.25
    assert score(base_q, base_k) == pytest.approx(score(base_q + shift, base_k + shift), rel=1e-4, abs=1e-4)
    moved = base_k.copy()
    moved[axis] += 0.5
    assert abs(score(base_q, base_k) - score(base_q, moved)) > 1e-3  # positions do matter


def test_audio_and_video_tokens_at_the_same_instant_share_temporal_phase():
    fps, hop_rate = 8, 100  # video frames / s, mel frames / s
    vpos = patch.video_positions(patch.uniform_frame_times(16, fps), (32, 32), (1, 4, 4))
    # video frame 4 and mel frame 50 are both at 0.5 s
    apos = patch.audio_positions(patch.uniform_frame_times(200, hop_rate), 1)
    v_idx = np.flatnonzero(np.isclose(vpos[:, 0], 0.5))[5]
    a_idx = np.flatnonzero(np.isclose(apos[:, 0], 0.5))[0]
    n_t = axis_pairs(32)[0]
    va = np.asarray(rope_angles(jnp.asarray(vpos), 32, THETA, SCALE))
    aa = np.asarray(rope_angles(jnp.asarray(apos), 32, THETA, SCALE))
    np.testing.assert_allclose(va[v_idx, :n_t], aa[a_idx, :n_t], rtol=1e-6)
    # cross-modal attention keeps only time: the whole rotation is then equal
    vt = np.asarray(rope_angles(temporal_only(jnp.asarray(vpos)), 32, THETA, SCALE))
    at = np.asarray(rope_angles(temporal_only(jnp.asarray(apos)), 32, THETA, SCALE))
    np.testing.assert_allclose(vt[v_idx], at[a_idx], rtol=1e-6)
    # and a token a frame later does not share it
    assert not np.allclose(vt[v_idx], at[a_idx + 12])


def test_token_time_is_the_mean_of_its_frames():
    pos = patch.audio_positions(patch.uniform_frame_times(8, 100), 4)
    np.testing.assert_allclose(pos[:, 0], [0.015, 0.055], rtol=1e-6)
    vpos = patch.video_positions(patch.uniform_frame_times(4, 8), (8, 8), (2, 4, 4))
    np.testing.assert_allclose(np.unique(vpos[:, 0]), [0.0625, 0.3125])
