"""The bounce-world generator against its spec, docs/bounce_world.md."""

import re
import time

import numpy as np
import pytest

from jav.data import bounce
from jav.data.bounce import BounceParams

PARAMS = BounceParams()
SEEDS = range(40)


def spec_audio(contacts_by_colour: list[tuple[str, list]], params: BounceParams) -> np.ndarray:
    """The spec's noiseless soundtrack, written out independently of the generator."""
    t = np.arange(params.num_samples) / params.sample_rate
    audio = np.zeros_like(t)
    for colour, contacts in contacts_by_colour:
        for tau, _, _ in contacts:
            s = t - tau
            ramp = np.clip(s / 0.002, 0, 1)
            audio += np.where(s >= 0, 0.4 * np.sin(2 * np.pi * params.frequencies[colour] * s) * np.exp(-s / 0.05) * ramp, 0)
    return audio


def test_spec_values():
    assert (PARAMS.canvas, PARAMS.fps, PARAMS.duration, PARAMS.sample_rate) == (32, 8, 2.0, 16000)
    assert PARAMS.radius == 4.0 and PARAMS.num_frames == 16 and PARAMS.num_samples == 32000
    assert PARAMS.backgrounds == {"dark": (24, 24, 24), "navy": (16, 24, 64), "olive": (48, 56, 16)}
    assert PARAMS.palette == {"red": (230, 50, 50), "green": (50, 200, 70), "blue": (60, 90, 240), "yellow": (235, 210, 50)}
    assert PARAMS.frequencies == {"red": 329.63, "green": 523.25, "blue": 783.99, "yellow": 1174.66}


def test_same_seed_same_bytes():
    a, b, c = bounce.generate_clip(7), bounce.generate_clip(7), bounce.generate_clip(8)
    assert a.frames.tobytes() == b.frames.tobytes() and a.audio.tobytes() == b.audio.tobytes()
    assert a.caption == b.caption and repr(a.metadata) == repr(b.metadata)
    assert a.frames.tobytes() != c.frames.tobytes() and a.audio.tobytes() != c.audio.tobytes()


def test_shapes_dtypes_and_metadata():
    clip = bounce.generate_clip(3)
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (32000,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0
    meta = clip.metadata
    assert {k: meta[k] for k in ("seed", "canvas", "fps", "duration", "sample_rate")} == {
        "seed": 3,
        "canvas": 32,
        "fps": 8,
        "duration": 2.0,
        "sample_rate": 16000,
    }
    assert meta["background"] in PARAMS.backgrounds
    for disc in meta["discs"]:
        assert disc["colour"] in PARAMS.palette and disc["radius"] == 4.0
        assert disc["centres"].shape == (16, 2)
        assert all(0 <= at < 2.0 and axis in (0, 1) and wall in (0, 1) for at, axis, wall in disc["contacts"])


def test_scene_statistics():
    scenes = [bounce.sample_scene(seed) for seed in range(400)]
    two = np.mean([len(s.discs) == 2 for s in scenes])
    assert 0.24 < two < 0.36  # p_two = 0.3
    assert {s.background for s in scenes} == set(PARAMS.backgrounds)
    for scene in scenes:
        assert len({d.colour for d in scene.discs}) == len(scene.discs)
        for disc in scene.discs:
            assert all(4.0 <= c <= 28.0 for c in disc.centre)
            assert all(0.4 * 32 <= abs(v) <= 0.75 * 32 for v in disc.velocity)


def test_caption_format_and_parser():
    pattern = re.compile(
        r"a (red|green|blue|yellow) ball( and a (red|green|blue|yellow) ball)? "
        r"bouncing on a (dark|navy|olive) background"
    )
    seen_two = False
    for seed in SEEDS:
        clip = bounce.generate_clip(seed)
        assert pattern.fullmatch(clip.caption), clip.caption
        colours = [d["colour"] for d in clip.metadata["discs"]]
        expected = " and ".join(f"a {c} ball" for c in colours)
        assert clip.caption == f"{expected} bouncing on a {clip.metadata['background']} background"
        assert bounce.caption_colours(clip.caption) == (set(colours), clip.metadata["background"])
        seen_two |= len(colours) == 2
    assert seen_two
    with pytest.raises(ValueError, match="not 'a C ball"):
        bounce.caption_colours("a red cube on a dark background")


def test_scene_for_caption():
    caption = "a blue ball and a yellow ball bouncing on a olive background"
    scene = bounce.scene_for_caption(caption, seed=5)
    assert [d.colour for d in scene.discs] == ["blue", "yellow"] and scene.background == "olive"
    clip = bounce.render(scene)
    assert clip.caption == caption
    assert bounce.scene_for_caption(caption, seed=5) == scene
    with pytest.raises(ValueError, match="unknown names"):
        bounce.scene_for_caption("a pink ball bouncing on a dark background", seed=0)
    with pytest.raises(ValueError, match="repeated colour"):
        bounce.scene_for_caption("a red ball and a red ball bouncing on a dark background", seed=0)


def test_contacts_are_exact_and_complete():
    r, size = PARAMS.radius, PARAMS.canvas
    dense = np.linspace(0, PARAMS.duration, 200001)[:-1]
    for seed in SEEDS:
        for disc in bounce.sample_scene(seed).discs:
            contacts = bounce.contacts(disc)
            for at, axis, wall in contacts:
                centre = bounce.centre_at(disc, [at])[0]
                assert abs(centre[axis] - (r if wall == 0 else size - r)) < 1e-9
            # Every reversal of direction on a fine time grid is a listed contact.
            path = bounce.centre_at(disc, dense)
            for axis in range(2):
                step = np.sign(np.diff(path[:, axis]))
                reversals = dense[1:-1][step[1:] != step[:-1]]
                listed = np.array([t for t, a, _ in contacts if a == axis])
                assert len(reversals) == len(listed), (seed, axis)
                assert np.allclose(reversals, listed, atol=2e-5)


def test_discs_stay_inside_and_move_straight_between_contacts():
    r, size = PARAMS.radius, PARAMS.canvas
    for seed in SEEDS:
        for disc in bounce.sample_scene(seed).discs:
            path = bounce.centre_at(disc, np.linspace(0, 2, 4001))
            assert path.min() >= r - 1e-9 and path.max() <= size - r + 1e-9
            speed = np.abs(np.diff(path, axis=0)) / (2 / 4000)
            assert np.allclose(np.median(speed, axis=0), np.abs(disc.velocity))


def test_rendering_is_antialiased_coverage():
    # One disc on its background: each pixel is background + coverage * (colour - background).
    for seed in SEEDS:
        scene = bounce.sample_scene(seed)
        if len(scene.discs) != 1:
            continue
        clip = bounce.render(scene)
        disc = clip.metadata["discs"][0]
        background = np.array(PARAMS.backgrounds[scene.background], np.float64)
        direction = np.array(PARAMS.palette[disc["colour"]], np.float64) - background
        coverage = (clip.frames - background) @ direction / (direction @ direction)  # [T, S, S]
        assert np.allclose(coverage.sum(axis=(1, 2)), np.pi * 16, atol=0.6)
        assert ((coverage > 0.05) & (coverage < 0.95)).any(axis=(1, 2)).all()  # soft edges
        grid = np.arange(32) + 0.5
        centroid = np.stack([(coverage * grid[None, None, :]).sum((1, 2)), (coverage * grid[None, :, None]).sum((1, 2))], -1) / coverage.sum((1, 2))[:, None]
        assert np.abs(centroid - disc["centres"]).max() < 0.08
        assert np.allclose(disc["centres"], bounce.centre_at(scene.discs[0], np.arange(16) / 8))


def test_later_disc_is_drawn_on_top():
    scene = bounce.Scene(0, "dark", (bounce.Disc("red", 4.0, (16.0, 16.0), (13.0, 13.0)), bounce.Disc("blue", 4.0, (16.0, 16.0), (13.0, 13.0))))
    clip = bounce.render(scene)
    x, y = clip.metadata["discs"][1]["centres"].astype(int).T
    assert (clip.frames[np.arange(16), y, x] == PARAMS.palette["blue"]).all()
    frames = clip.frames
    assert not (frames == PARAMS.palette["red"]).all(-1).any()


def test_audio_is_bursts_at_contacts_plus_noise():
    noise_rms = 10 ** (-50 / 20)
    for seed in SEEDS:
        clip = bounce.generate_clip(seed)
        discs = [(d["colour"], d["contacts"]) for d in clip.metadata["discs"]]
        residual = clip.audio - np.clip(spec_audio(discs, PARAMS), -1, 1)
        assert abs(np.sqrt(np.mean(residual**2)) / noise_rms - 1) < 0.05, seed
        assert abs(np.mean(residual)) < 5 * noise_rms / np.sqrt(len(residual))
        for _, contacts in discs:
            for tau, _, _ in contacts:
                # Before the first burst there is only noise; 10 ms after a contact, a burst.
                after = slice(int(tau * 16000) + 80, int(tau * 16000) + 240)
                assert np.sqrt(np.mean(clip.audio[after] ** 2)) > 30 * noise_rms
        first = min(tau for _, contacts in discs for tau, _, _ in contacts)
        before = clip.audio[: int(first * 16000)]
        if len(before) > 1600:
            assert abs(np.sqrt(np.mean(before**2)) / noise_rms - 1) < 0.1


def test_generation_is_fast():
    bounce.generate_clip(0)
    best = min(_timed(bounce.generate_clip, seed) for seed in range(5))
    assert best < 0.05, f"generate_clip took {best * 1000:.1f} ms"


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
