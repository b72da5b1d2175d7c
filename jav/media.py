"""Reading and writing clips as files: mp4 (H.264 video + AAC audio, muxed) and wav.

Audio frames carry explicit pts so that the muxer records the AAC encoder's
priming samples and players trim them; otherwise the soundtrack plays late by
the priming length (1,024 samples, 64 ms at 16 kHz).
"""

from __future__ import annotations

import fractions
import pathlib

import av
import numpy as np
import soundfile


def write_wav(path, wave: np.ndarray, sample_rate: int) -> None:
    soundfile.write(str(path), np.clip(np.asarray(wave, np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16")


def read_wav(path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """-> mono float32 waveform (channels averaged), resampled to `sample_rate` if given, and its rate."""
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from e
    wave = wave.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        import librosa

        wave, rate = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate).astype(np.float32), sample_rate
    return wave, rate


def write_png(path, image: np.ndarray) -> None:
    """image uint8 [H, W, 3] -> PNG."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    with av.open(str(path), mode="w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def read_image(path) -> np.ndarray:
    """An image file (PNG, JPEG, ...) -> uint8 RGB [H, W, 3]."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} holds no image (no video stream); pass a PNG or JPEG")
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def write_mp4(path, frames: np.ndarray, fps: float, wave: np.ndarray | None = None, sample_rate: int = 16000, crf: int = 12) -> None:
    """frames uint8 [T, H, W, 3]; wave float32 [N] mono in [-1, 1] (optional).

    H.264 needs even sizes with yuv420p; odd sizes are padded by edge repeat.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = fractions.Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "medium"}
        audio = None
        if wave is not None:
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            samples = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
            chunk = 1024
            for start in range(0, len(samples), chunk):
                block = samples[start : start + chunk][None]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="flt", layout="mono")
                af.sample_rate = sample_rate
                af.pts = start
                af.time_base = fractions.Fraction(1, sample_rate)
                container.mux(audio.encode(af))
            container.mux(audio.encode())


def read_mp4(path) -> tuple[np.ndarray, float, np.ndarray | None, int | None]:
    """-> frames uint8 [T, H, W, 3], fps, mono waveform float32 (or None), sample rate."""
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(vstream)])
    wave, rate = None, None
    with av.open(str(path)) as container:
        if container.streams.audio:
            astream = container.streams.audio[0]
            rate = astream.rate
            chunks = []
            for f in container.decode(astream):
                start = int(round(float(f.pts * f.time_base) * rate)) if f.pts is not None else None
                data = f.to_ndarray().astype(np.float32)
                data = data.reshape(-1) if data.shape[0] == 1 else data.mean(axis=0)
                chunks.append((start, data))
            # place decoded frames at their pts; negative pts is the encoder's priming
            end = max(s + len(d) for s, d in chunks)
            wave = np.zeros(max(end, 0), np.float32)
            for s, d in chunks:
                lo = max(s, 0)
                if lo < end:
                    wave[lo : s + len(d)] = d[lo - s :]
    return frames, fps, wave, rate
