"""Sampling clips from a model in memory: batches of prompts (and optional condition
files) -> uint8 frames and waveforms, one jitted sampler for every batch, and the
files `jav.sample` and `jav.evaluate` write per clip. The command-line tools build
on this module; it imports none of them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pathlib
import sys
import tempfile
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jav import samplers
from jav.clip_tokens import TokenLayout, arrays_to_clip, frames_to_model, mel_params, pixel_fps
from jav.data import mel
from jav.generate import generate
from jav.latents import codec_from_config
from jav.media import read_image, read_mp4, read_wav, write_mp4, write_wav


class ProgressPrinter:
    """A host callback that redraws `label: step n/N` in place on a terminal, and
    writes a line at every quarter of the steps into a log file.

    The sampler's `on_step` is a static argument of its jitted function, so one
    printer per step count (`progress_printer`) serves every batch and every call
    (only its `label` changes) and the sampler compiles once, not once per batch.
    """

    def __init__(self, label: str, num_steps: int):
        self.label, self.num_steps = label, num_steps
        self.tty = sys.stderr.isatty()
        self.every = max(1, num_steps // 4)

    def __call__(self, done):
        done, n = int(done), self.num_steps
        if self.tty:
            print(f"\r{self.label}: step {done}/{n}", end="\n" if done == n else "", file=sys.stderr, flush=True)
        elif done % self.every == 0 or done == n:
            print(f"{self.label}: step {done}/{n}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def progress_printer(num_steps: int) -> ProgressPrinter:
    """The one printer of `num_steps`-step sampling in this process."""
    return ProgressPrinter("batch", num_steps)


def video_from_file(cfg, path: str) -> np.ndarray:
    """`--video` mp4 -> the model's number of frames [T, H, W, 3] uint8, at its size and frame rate."""
    frames, fps, _, _ = read_mp4(path)
    want_fps, n = pixel_fps(cfg), int(round(cfg.data.duration * pixel_fps(cfg)))
    size = (cfg.data.canvas, cfg.data.canvas)
    if frames.shape[1:3] != size:
        raise ValueError(f"--video {path} is {frames.shape[2]}x{frames.shape[1]}; this model makes {size[1]}x{size[0]} video (data.canvas)")
    if abs(fps - want_fps) > 1e-3:
        raise ValueError(
            f"--video {path} runs at {fps:g} fps; this model's video is {want_fps:g} fps: resample it first (e.g. ffmpeg -i IN -r {want_fps:g} OUT)"
        )
    if len(frames) < n:
        raise ValueError(f"--video {path} has {len(frames)} frames; this model needs {n} ({cfg.data.duration:g} s at {want_fps:g} fps)")
    return frames[:n]


def conditions_from_files(cfg, layout: TokenLayout, batch: int, image: str | None, audio: str | None, video: str | None = None) -> dict:
    """`--image` / `--video` / `--audio` files -> model-space `first_frame` / `video` / `audio`
    arrays for `generate` (through the shards' VAEs in latent space)."""
    out = {}
    codec = codec_from_config(cfg) if (image or audio or video) else None
    pt = layout.video_patch[0]
    if image:
        frame = read_image(image)
        want = (cfg.data.canvas, cfg.data.canvas) if codec.latent else layout.video_shape[1:3]
        if frame.shape[:2] != tuple(want):
            raise ValueError(f"--image {image} is {frame.shape[1]}x{frame.shape[0]}; this model makes {want[1]}x{want[0]} video (data.canvas)")
        if codec.latent and pt != 1:
            raise ValueError(f"I2VA in latent space needs model.video.patch[0]=1 (the image is the first latent frame), got {pt}")
        x = codec.encode_video(frames_to_model(frame)[None, None])  # [1, 1, ...]: a causal VAE encodes the first frame alone
        # In pixel space the first temporal patch holds `pt` frames: all start as the image.
        out["first_frame"] = np.broadcast_to(x, (batch, pt) + x.shape[2:]).copy()
    if video:
        x = codec.encode_video(frames_to_model(video_from_file(cfg, video))[None])  # [1, T, ...]
        out["video"] = np.broadcast_to(x, (batch,) + x.shape[1:]).copy()
    if audio:
        wave, _ = read_wav(audio, cfg.data.sample_rate)
        n = int(round(cfg.data.duration * cfg.data.sample_rate))
        wave = np.pad(wave[:n], (0, max(0, n - len(wave))))
        a = codec.encode_audio(mel.waveform_to_logmel(wave, mel_params(cfg))[None])[0]
        out["audio"] = np.broadcast_to(a[None], (batch,) + a.shape).copy()
    return out


def clip_decoder(cfg) -> Callable:
    """The model's output space -> clips: a function from model-space video [B, ...] and
    audio [B, ...] to [(uint8 frames [T, H, W, 3], waveform)], through the run's codec (in latent
    space the shards' VAEs decode first; jav.latents), then rescaling and the vocoder."""
    mp, codec = mel_params(cfg), codec_from_config(cfg)

    def decode(video, audio):
        video, logmel = codec.decode(video, audio)
        return [arrays_to_clip(v, a, mp) for v, a in zip(video, logmel)]

    return decode


def clip_keys(seeds: Sequence[int]) -> jax.Array:
    """[B] keys, one per clip seed: a clip's noise depends on its seed alone."""
    return jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds, np.uint32)))


def sample_clips(
    model,
    cfg,
    prompts: Sequence[str],
    *,
    seed: int,
    steps: int,
    batch_size: int,
    guidance: samplers.Guidance = samplers.NO_GUIDANCE,
    image: str | None = None,
    audio: str | None = None,
    video: str | None = None,
    conditions: dict | None = None,
    log=print,
    text_encoder=None,
    seeds: Sequence[int] | None = None,
    sampler: str = "ode",
    noise_level: float = 0.7,
    two_stage: bool = False,
    negatives: Sequence[str] | None = None,
    mesh=None,
    rules=(),
    show_steps: bool = True,
    profile=None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prompts -> [(uint8 frames [T, H, W, 3], waveform)], in batches of `batch_size`
    (the last batch padded, so one compile serves all). Clip i's noise comes from
    its own seed, `seeds[i]` (default `seed + i`), so it reproduces alone or in any
    batch. `image` / `video` / `audio`: one condition file for every prompt; `conditions`:
    per-prompt model-space arrays, {"first_frame" | "video" | "audio": [len(prompts), ...]}
    (see `generate.conditions`). `text_encoder`: the frozen encoder of a model
    trained on precomputed text (see generate). `sampler` / `noise_level`: the ODE or
    the SDE sampler; the steps fall where `cfg.sample.schedule` says (`jav.samplers.SCHEDULES`);
    `two_stage`: the video first, then its soundtrack (see generate);
    `negatives`: a negative prompt per prompt ("" for none; see generate); `mesh` / `rules`:
    each batch split over the mesh's batch axes, for a model loaded onto it (see generate);
    `show_steps`: the in-place step counter of each batch (off inside a training run's log).
    `profile`: a directory for a `jax.profiler` trace of one batch, the second (the first
    compiles) or the only one (then with its compile)."""
    seeds = [seed + i for i in range(len(prompts))] if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt")
    if negatives is not None and len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: give one per prompt ('' for none)")
    layout = TokenLayout.from_config(cfg)
    to_clips = clip_decoder(cfg)
    cond = conditions_from_files(cfg, layout, batch_size, image, audio, video)
    out = []
    num_batches = -(-len(prompts) // batch_size)
    progress = progress_printer(steps) if show_steps else None
    started = time.time()
    for b in range(num_batches):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        chunk, chunk_seeds = list(prompts[rows]), seeds[rows]
        pad = batch_size - len(chunk)
        padded = chunk + [chunk[-1]] * pad
        negative = None if negatives is None else list(negatives[rows]) + [negatives[rows][-1]] * pad
        for name, value in (conditions or {}).items():
            value = np.asarray(value[rows])
            cond[name] = np.concatenate([value, np.repeat(value[-1:], pad, axis=0)]) if pad else value
        start = time.time()
        if progress is not None:
            progress.label = f"batch {b + 1}/{num_batches}"
        traced = profile is not None and b == min(1, num_batches - 1)
        with jax.profiler.trace(str(profile)) if traced else contextlib.nullcontext():
            video, wave_mel = generate(
                model,
                layout,
                padded,
                clip_keys(chunk_seeds + [chunk_seeds[-1]] * pad),
                num_steps=steps,
                flow_cfg=cfg.flow,
                guidance=guidance,
                schedule=samplers.schedule_from(cfg),
                on_step=progress,
                text_encoder=text_encoder,
                sampler=sampler,
                noise_level=noise_level,
                two_stage=two_stage,
                negative_captions=negative,
                mesh=mesh,
                rules=rules,
                **cond,
            )
            jax.block_until_ready((video, wave_mel))
        if traced:
            log(f"profiled batch {b + 1}{' (with its compile)' if b == 0 else ''} into {profile} (TensorBoard's profile plugin or Perfetto)")
        out.extend(to_clips(video[: len(chunk)], wave_mel[: len(chunk)]))
        rate = len(out) / (time.time() - started)
        eta = (len(prompts) - len(out)) / rate
        log(
            f"batch {b + 1}/{num_batches}: {len(chunk)} clips in {time.time() - start:.1f}s; {len(out)}/{len(prompts)} done, {rate:.2f} clips/s, ETA {eta:.0f}s"
        )
    return out


def write_sample(out_dir, index: int, frames: np.ndarray, wave: np.ndarray, cfg, info: dict) -> epath.Path:
    """OUT/iii.mp4, OUT/iii.wav and OUT/iii.json -> the mp4's path. OUT may be local or
    gs:// (etils.epath): PyAV and wave write local files, copied there."""
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{index:03d}"
    if "://" not in str(out_dir):
        write_mp4(out_dir / f"{name}.mp4", frames, pixel_fps(cfg), wave, cfg.data.sample_rate)
        write_wav(out_dir / f"{name}.wav", wave, cfg.data.sample_rate)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_mp4(pathlib.Path(tmp) / f"{name}.mp4", frames, pixel_fps(cfg), wave, cfg.data.sample_rate)
            write_wav(pathlib.Path(tmp) / f"{name}.wav", wave, cfg.data.sample_rate)
            for suffix in (".mp4", ".wav"):
                epath.Path(tmp, name + suffix).copy(out_dir / (name + suffix), overwrite=True)
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=2))
    return out_dir / f"{name}.mp4"
