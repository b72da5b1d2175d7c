"""The bounce world: procedural audio-video clips of discs that beep when they hit a wall.

Implements docs/bounce_world.md (spec v1). Every clip is a pure function of
(seed, BounceParams); trajectories and contact times are exact and analytic, so
the metrics in `bounce_metrics` can be checked against ground truth.

Coordinates: a centre is (x, y) in pixels, x along columns and y along rows,
with pixel (row i, column j) covering [j, j+1) x [i, i+1). Axis 0 is x, axis 1
is y. A contact's wall is 0 for the low wall (centre at r) and 1 for the high
wall (centre at S - r).
"""

import dataclasses
import re

import numpy as np

_CAPTION = re.compile(r"a (\w+) ball(?: and a (\w+) ball)? bouncing on a (\w+) background")


@dataclasses.dataclass(frozen=True)
class BounceParams:
    """Every number of the spec; the defaults are spec v1."""

    canvas: int = 32
    fps: int = 8
    duration: float = 2.0
    sample_rate: int = 16000
    radius_frac: float = 1 / 8
    p_two: float = 0.3
    speed_range: tuple[float, float] = (0.4, 0.75)  # canvas widths per second
    noise_dbfs: float = -50.0
    burst_amplitude: float = 0.4
    burst_decay: float = 0.05  # seconds
    burst_fade_in: float = 0.002  # seconds
    supersample: int = 4
    backgrounds: dict[str, tuple[int, int, int]] = dataclasses.field(
        default_factory=lambda: {"dark": (24, 24, 24), "navy": (16, 24, 64), "olive": (48, 56, 16)}
    )
    palette: dict[str, tuple[int, int, int]] = dataclasses.field(
        default_factory=lambda: {"red": (230, 50, 50), "green": (50, 200, 70), "blue": (60, 90, 240), "yellow": (235, 210, 50)}
    )
    frequencies: dict[str, float] = dataclasses.field(
        default_factory=lambda: {  # Hz, per palette colour
            "red": 329.63,
            "green": 523.25,
            "blue": 783.99,
            "yellow": 1174.66,
        }
    )

    @property
    def radius(self) -> float:
        return self.canvas * self.radius_frac

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


@dataclasses.dataclass(frozen=True)
class Disc:
    colour: str
    radius: float
    centre: tuple[float, float]  # (x, y) at t = 0, pixels
    velocity: tuple[float, float]  # pixels per second, before any reflection


@dataclasses.dataclass(frozen=True)
class Scene:
    seed: int  # also seeds the audio noise, so render(scene) is deterministic
    background: str
    discs: tuple[Disc, ...]


@dataclasses.dataclass
class Clip:
    """One clip. metadata: seed, canvas, fps, duration, sample_rate, background and
    discs, a list of {colour, radius, centres [T, 2] (x, y per frame), contacts
    [(time, axis, wall)] sorted by time}."""

    frames: np.ndarray  # [T, S, S, 3] uint8
    audio: np.ndarray  # [N] float32 in [-1, 1]
    caption: str
    metadata: dict


def _sample_discs(rng: np.random.Generator, colours, params: BounceParams) -> tuple[Disc, ...]:
    r, size = params.radius, params.canvas
    lo, hi = params.speed_range
    discs = []
    for colour in colours:
        centre = rng.uniform(r, size - r, size=2)
        velocity = rng.uniform(lo, hi, size=2) * size * rng.choice([-1.0, 1.0], size=2)
        discs.append(Disc(str(colour), r, tuple(float(c) for c in centre), tuple(float(v) for v in velocity)))
    return tuple(discs)


def sample_scene(seed: int, params: BounceParams = BounceParams()) -> Scene:
    """The scene of clip `seed`: background, number of discs, colours and motion."""
    rng = np.random.default_rng(seed)
    background = str(rng.choice(list(params.backgrounds)))
    num_discs = 2 if rng.random() < params.p_two else 1
    colours = rng.choice(list(params.palette), size=num_discs, replace=False)
    return Scene(seed, background, _sample_discs(rng, colours, params))


def scene_for_caption(caption: str, seed: int, params: BounceParams = BounceParams()) -> Scene:
    """A scene showing exactly what `caption` says, with motion drawn from `seed`."""
    colours, background = _parse_caption(caption)
    unknown = [c for c in colours if c not in params.palette] + ([background] if background not in params.backgrounds else [])
    if unknown or len(set(colours)) != len(colours):
        raise ValueError(
            f"caption {caption!r}: unknown names {unknown} or a repeated colour; colours are {list(params.palette)}, backgrounds {list(params.backgrounds)}"
        )
    return Scene(seed, background, _sample_discs(np.random.default_rng(seed), colours, params))


def caption_for(scene: Scene) -> str:
    balls = " and ".join(f"a {d.colour} ball" for d in scene.discs)
    return f"{balls} bouncing on a {scene.background} background"


def _parse_caption(caption: str) -> tuple[list[str], str]:
    match = _CAPTION.fullmatch(caption.strip())
    if match is None:
        raise ValueError(f"caption {caption!r} is not 'a C ball [and a C ball] bouncing on a B background'")
    first, second, background = match.groups()
    return [c for c in (first, second) if c is not None], background


def caption_colours(caption: str) -> tuple[set[str], str]:
    """(set of disc colours, background) named by a caption in the spec's format."""
    colours, background = _parse_caption(caption)
    return set(colours), background


def centre_at(disc: Disc, times, params: BounceParams = BounceParams()) -> np.ndarray:
    """Exact centre [len(times), 2] at the given times, by folding the free path into [r, S - r]."""
    times = np.asarray(times, np.float64)
    span = params.canvas - 2 * disc.radius
    free = np.asarray(disc.centre) - disc.radius + times[:, None] * np.asarray(disc.velocity)
    folded = np.mod(free, 2 * span)
    return disc.radius + np.where(folded <= span, folded, 2 * span - folded)


def contacts(disc: Disc, params: BounceParams = BounceParams()) -> list[tuple[float, int, int]]:
    """Every (time, axis, wall) in [0, duration) at which the centre reaches r or S - r."""
    span = params.canvas - 2 * disc.radius
    found = []
    for axis in range(2):
        start, velocity = disc.centre[axis] - disc.radius, disc.velocity[axis]
        if velocity == 0:
            continue
        end = start + velocity * params.duration
        # The free path crosses a wall at every multiple k * span; even k is the low wall.
        first, last = sorted((start / span, end / span))
        for k in range(int(np.ceil(first)), int(np.floor(last)) + 1):
            time = (k * span - start) / velocity
            if 0 <= time < params.duration:
                found.append((float(time), axis, k % 2))
    return sorted(found)


def _coverage(centres: np.ndarray, radius: float, params: BounceParams) -> np.ndarray:
    """Fraction [T, S, S] of each pixel inside the disc, from an n x n grid of samples per pixel."""
    n, size = params.supersample, params.canvas
    samples = (np.arange(size * n) + 0.5) / n  # [S*n]
    dx = (samples[None, :] - centres[:, 0:1]) ** 2  # [T, S*n]
    dy = (samples[None, :] - centres[:, 1:2]) ** 2
    inside = dy[:, :, None] + dx[:, None, :] <= radius**2  # [T, S*n (rows), S*n (cols)]
    return inside.reshape(-1, size, n, size, n).mean(axis=(2, 4), dtype=np.float32)


def _burst(params: BounceParams, frequency: float, onset: float) -> tuple[int, np.ndarray]:
    """(first sample index, samples from there to the clip's end) of one tone burst."""
    sr = params.sample_rate
    first = int(np.ceil(onset * sr))
    t = np.arange(first, params.num_samples) / sr - onset
    envelope = params.burst_amplitude * np.exp(-t / params.burst_decay) * np.minimum(t / params.burst_fade_in, 1.0)
    return first, envelope * np.sin(2 * np.pi * frequency * t)


def render(scene: Scene, params: BounceParams = BounceParams()) -> Clip:
    """Frames, soundtrack, caption and metadata of a scene."""
    times = np.arange(params.num_frames) / params.fps
    image = np.broadcast_to(np.asarray(params.backgrounds[scene.background], np.float32), (params.num_frames, params.canvas, params.canvas, 3))
    audio = np.zeros(params.num_samples, np.float64)
    discs_meta = []
    for disc in scene.discs:  # in order, so the later disc is drawn on top
        centres = centre_at(disc, times, params)
        alpha = _coverage(centres, disc.radius, params)[..., None]
        image = image * (1 - alpha) + np.asarray(params.palette[disc.colour], np.float32) * alpha
        hits = contacts(disc, params)
        for time, _, _ in hits:
            first, burst = _burst(params, params.frequencies[disc.colour], time)
            audio[first:] += burst
        discs_meta.append({"colour": disc.colour, "radius": disc.radius, "centres": centres, "contacts": hits})
    # dBFS here is RMS relative to 1.0 (not to a full-scale sine, which would be 3 dB quieter).
    noise_rms = 10 ** (params.noise_dbfs / 20)
    audio += noise_rms * np.random.default_rng([scene.seed, 1]).standard_normal(params.num_samples)
    metadata = {
        "seed": scene.seed,
        "canvas": params.canvas,
        "fps": params.fps,
        "duration": params.duration,
        "sample_rate": params.sample_rate,
        "background": scene.background,
        "discs": discs_meta,
    }
    return Clip(
        frames=np.clip(np.rint(image), 0, 255).astype(np.uint8), audio=np.clip(audio, -1, 1).astype(np.float32), caption=caption_for(scene), metadata=metadata
    )


def generate_clip(seed: int, params: BounceParams = BounceParams()) -> Clip:
    return render(sample_scene(seed, params), params)
