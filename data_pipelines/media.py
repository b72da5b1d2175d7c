"""Reading and writing raw audio-video files for the curation pipeline (PyAV).

`probe` says what a file holds without decoding it all; `read_video` and
`read_audio` decode one time range; `resample` changes an audio rate;
`write_av` writes a Matroska file (H.264 video, FLAC audio) for the raw corpus.
Sources are local paths or a bucket's objects (gs://...): `open_container` reads
the latter through `etils.epath` as a seekable file object, so no copy is made.

Why Matroska with FLAC: AAC in mp4 delays the soundtrack by the encoder's
priming samples unless every reader honours the edit list, and that delay would
read as an audio-video offset to the sync stage. FLAC has no priming, is
lossless, and the decoded audio starts at pts 0 (checked in tests/test_corpus.py).
"""

from __future__ import annotations

import contextlib
import fractions
import math
import os
import pathlib

import av
import numpy as np
from etils import epath
from scipy import signal


def is_remote(path) -> bool:
    """A URL (gs://bucket/...) rather than a local path."""
    return "://" in os.fspath(path)


@contextlib.contextmanager
def open_container(path):
    """A PyAV input container of a local file or of a bucket's object (read as a file object)."""
    if is_remote(path):
        with epath.Path(path).open("rb") as f, av.open(f) as container:
            yield container
    else:
        with av.open(os.fspath(path)) as container:
            yield container


def file_stat(path) -> tuple[int, int | None]:
    """(size in bytes, modification time in ns or None) of a local file or a bucket's object."""
    st = epath.Path(path).stat()
    if hasattr(st, "st_size"):
        return st.st_size, st.st_mtime_ns
    mtime = getattr(st, "mtime", None)  # epath's StatResult on a bucket: seconds
    return st.length, None if mtime is None else int(mtime * 1e9)


class MediaError(ValueError):
    """A file that cannot be read (empty, truncated, unknown format, undecodable)."""


def probe(path, check_truncation: float = 0.9) -> dict:
    """Container, streams, duration, fps, resolution, sample rate, channels of a file.

    Demuxes every packet (cheap, nothing decoded except the first video frame) so that
    a truncated file shows: its packets end before the duration its header declares
    (less than `check_truncation` of it). Raises MediaError for unreadable files.
    """
    path = os.fspath(path)
    if not epath.Path(path).exists():
        raise MediaError(f"{path}: no such file")
    if file_stat(path)[0] == 0:
        raise MediaError(f"{path}: zero-byte file")
    try:
        with open_container(path) as container:
            info = {
                "container": container.format.name,
                "has_video": bool(container.streams.video),
                "has_audio": bool(container.streams.audio),
                "fps": None,
                "width": None,
                "height": None,
                "num_frames": 0,
                "sample_rate": None,
                "audio_channels": None,
            }
            declared = container.duration / av.time_base if container.duration else None
            streams = []
            if info["has_video"]:
                vs = container.streams.video[0]
                rate = vs.average_rate or vs.guessed_rate or vs.base_rate
                info.update(fps=float(rate) if rate else None, width=vs.codec_context.width, height=vs.codec_context.height)
                streams.append(vs)
            if info["has_audio"]:
                aus = container.streams.audio[0]
                info.update(sample_rate=aus.codec_context.sample_rate, audio_channels=aus.codec_context.channels)
                streams.append(aus)
            last_end = 0.0
            video_pts = []
            for packet in container.demux(*streams):
                if packet.size == 0 or packet.pts is None:
                    continue
                t0 = float(packet.pts * packet.time_base)
                dur = float((packet.duration or 0) * packet.time_base)
                last_end = max(last_end, t0 + dur)
                if packet.stream.type == "video":
                    video_pts.append(t0)
        if info["has_video"]:
            info["num_frames"] = len(video_pts)
            if video_pts and info["fps"]:
                last_end = max(last_end, max(video_pts) + 1 / info["fps"])
            if video_pts:
                with open_container(path) as container:
                    next(container.decode(video=0))  # the first frame must decode
    except MediaError:
        raise
    except (av.error.FFmpegError, StopIteration, OSError, ValueError, TypeError, ZeroDivisionError) as e:
        raise MediaError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    info["duration"] = last_end
    info["declared_duration"] = declared
    if declared and last_end < check_truncation * declared:
        raise MediaError(f"{path}: truncated (packets end at {last_end:.3f} s of a declared {declared:.3f} s)")
    if info["has_video"] and info["num_frames"] == 0:
        raise MediaError(f"{path}: video stream holds no frames")
    return info


def iter_video(path, start: float = 0.0, end: float | None = None, fps: float | None = None, max_side: int | None = None):
    """Yield frames [H, W, 3] uint8 whose timestamps lie in [start, end) (a quarter frame of
    slack), one at a time; `max_side` shrinks larger frames (keeping the aspect) as they decode."""
    slack = 0.25 / fps if fps else 1e-3
    try:
        with open_container(path) as container:
            vs = container.streams.video[0]
            if start > 0:
                container.seek(int(max(0.0, start - 1.0) / vs.time_base), stream=vs, backward=True)
            for frame in container.decode(vs):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else frame.time
                if t < start - slack:
                    continue
                if end is not None and t >= end - slack:
                    break
                if max_side and max(frame.width, frame.height) > max_side:
                    scale = max_side / max(frame.width, frame.height)
                    frame = frame.reformat(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)))
                yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise MediaError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e


def read_video(path, start: float = 0.0, end: float | None = None, fps: float | None = None, max_side: int | None = None) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 whose timestamps lie in [start, end) (see `iter_video`)."""
    frames = list(iter_video(path, start, end, fps, max_side))
    if not frames:
        raise MediaError(f"{path}: no video frames in [{start}, {end})")
    return np.stack(frames)


def read_audio(path, start: float = 0.0, end: float | None = None, sample_rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """-> (audio [S, C] float32 of [start, end), rate). Out-of-file times are zeros (so an
    audio window shifted by the sync stage keeps its length). `sample_rate` resamples,
    `channels` 1 averages to mono, 2 duplicates mono."""
    chunks, rate, nch, cursor = [], None, None, None
    try:
        with open_container(path) as container:
            aus = container.streams.audio[0]
            rate, nch = aus.codec_context.sample_rate, aus.codec_context.channels
            if start > 1.0:
                container.seek(int((start - 1.0) / aus.time_base), stream=aus, backward=True)
            for frame in container.decode(aus):
                data = frame.to_ndarray()
                if frame.format.is_planar:
                    data = data.T  # [n, C]
                else:
                    data = data.reshape(-1, nch)
                data = _to_float(data)
                # Containers store pts coarsely (Matroska: 1 ms); decoded audio is contiguous, so
                # follow a sample cursor and trust pts only for the first frame or a real gap.
                stamped = int(round(float(frame.pts * frame.time_base) * rate)) if frame.pts is not None else None
                if cursor is None or (stamped is not None and abs(stamped - cursor) > 0.02 * rate):
                    cursor = stamped if stamped is not None else 0
                chunks.append((cursor, data))
                cursor += len(data)
                if end is not None and cursor / rate > end + 0.1:
                    break
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise MediaError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    lo = int(round(start * rate))
    hi = int(round(end * rate)) if end is not None else (chunks[-1][0] + len(chunks[-1][1]) if chunks else lo)
    out = np.zeros((max(hi - lo, 0), nch), np.float32)
    for first, data in chunks:
        a, b = max(first, lo), min(first + len(data), hi)
        if a < b:
            out[a - lo : b - lo] = data[a - first : b - first]
    if channels is not None:
        out = to_channels(out, channels)
    if sample_rate is not None and sample_rate != rate:
        out, rate = resample(out, rate, sample_rate), sample_rate
    return out, rate


def _to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return data.astype(np.float32) / 2147483648.0
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """[S, C] -> [S, channels]: 1 averages, 2 duplicates a mono track (or keeps a stereo one)."""
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    if channels == 2:
        return np.repeat(audio, 2, axis=1) if audio.shape[1] == 1 else audio[:, :2]
    raise ValueError(f"channels={channels} is not supported; use 1 (mono) or 2 (stereo)")


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling along axis 0 (exact rational ratio)."""
    if rate == target:
        return audio
    g = math.gcd(int(rate), int(target))
    return signal.resample_poly(audio, target // g, rate // g, axis=0).astype(np.float32)


def write_av(
    path,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 16,
    title: str | None = None,
    lossless: bool = False,
) -> None:
    """Matroska file: H.264 video of frames uint8 [T, H, W, 3] (even H, W) and FLAC audio [S] or [S, C] in [-1, 1].
    The video is 4:2:0 at `crf`, or with `lossless` RGB at qp 0 (libx264rgb: decodes to the same pixels).

    Either track may be None (a file without video or without audio)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="matroska", options={"fflags": "+bitexact"}) as container:
        if title:
            container.metadata["title"] = title
        vs = aus = None
        if frames is not None:
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] % 2 or frames.shape[2] % 2:
                raise ValueError(f"frames must be uint8 [T, H, W, 3] with even H, W; got {frames.dtype} {frames.shape}")
            rate = fractions.Fraction(fps).limit_denominator(1001)
            vs = container.add_stream("libx264rgb" if lossless else "libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "rgb24" if lossless else "yuv420p"
            vs.options = {"qp": "0"} if lossless else {"crf": str(crf)}
            # one encoder thread and frames already in 4:2:0 (below): with either alone, writing the same
            # clip gave different bytes in 1 to 3 of 10 writes (tests/test_corpus.py); with both, none in 60
            vs.options |= {"preset": "veryfast", "bf": "0", "threads": "1"}
        if audio is not None:
            audio = np.asarray(audio, np.float32)
            audio = audio[:, None] if audio.ndim == 1 else audio
            layout = {1: "mono", 2: "stereo"}[audio.shape[1]]
            aus = container.add_stream("flac", rate=sample_rate, layout=layout)
            aus.format = "s16"
        if vs is not None:
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if not lossless:
                    # converted to 4:2:0 here and handed over as a fresh frame: the encoder's own conversion
                    # leaves row padding uninitialised, which changed the file's bytes (not its pixels)
                    vf = av.VideoFrame.from_ndarray(vf.reformat(format="yuv420p").to_ndarray(), format="yuv420p")
                vf.pts = i
                vf.time_base = 1 / rate
                container.mux(vs.encode(vf))
            container.mux(vs.encode())
        if aus is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).round().astype(np.int16)
            block = 4096
            for first in range(0, len(pcm), block):
                chunk = np.ascontiguousarray(pcm[first : first + block].reshape(1, -1))
                af = av.AudioFrame.from_ndarray(chunk, format="s16", layout=aus.layout.name)
                af.sample_rate, af.pts, af.time_base = sample_rate, first, fractions.Fraction(1, sample_rate)
                container.mux(aus.encode(af))
            container.mux(aus.encode())
