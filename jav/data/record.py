"""The clip record: the one place that turns a training clip into bytes and back.

A record holds one clip: video [T, H, W, C] (uint8 pixels or float latents),
audio [Ta, Ca] float32 (normalised log-mel or latents), the caption, an optional
precomputed text embedding [L, D] with its mask [L], fps, sample rate, duration
and a JSON-serialisable curation metadata dict. Shards (`jav.data.shards`) hold
records; the loader (`jav.data.loader`) reads them; nothing else parses bytes.

Layout (little-endian):
    b"JAVR" | uint32 version | uint32 header length | header JSON | array bytes
The version sits before the JSON so that any future layout can still be told
apart and rejected with a clear message. The header names each array's dtype,
shape and byte range and carries a CRC32 of the array bytes, so truncation and
bit rot are caught here rather than showing up as a NaN loss hours later.
Encoding is deterministic: the same clip always gives the same bytes.
"""

from __future__ import annotations

import json
import struct
import zlib

import ml_dtypes
import numpy as np

FORMAT_VERSION = 1
MAGIC = b"JAVR"
_PREFIX = struct.Struct("<4sII")  # magic, version, header length
_ARRAYS = ("video", "audio", "text_emb", "text_mask")
_DTYPES = {
    "uint8": np.dtype(np.uint8),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "bool": np.dtype(np.bool_),
}
_REWRITE = "rewrite the shards with this version of jav (python -m jav.data.synthetic for the bounce world, the data_pipelines encode step otherwise)"


class RecordError(ValueError):
    """A record that cannot be read: wrong version, corrupt or truncated bytes, or an unexpected shape."""


def _check_array(name: str, x, ndim: int, dtypes: tuple[str, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != ndim or x.dtype.name not in dtypes:
        raise RecordError(
            f"encode_record: {name} must be a {ndim}-d array of dtype {' or '.join(dtypes)}, got shape {x.shape} dtype {x.dtype}; convert it before writing"
        )
    return np.ascontiguousarray(x)


def encode_record(
    *, video, audio, caption: str, fps: float, sample_rate: int, duration: float, metadata: dict | None = None, text_emb=None, text_mask=None
) -> bytes:
    """One clip -> bytes. video [T, H, W, C] uint8/float16/bfloat16/float32, audio [Ta, Ca] float32,
    text_emb [L, D] float with text_mask [L] bool (both or neither)."""
    arrays = {"video": _check_array("video", video, 4, ("uint8", "float16", "bfloat16", "float32")), "audio": _check_array("audio", audio, 2, ("float32",))}
    if (text_emb is None) != (text_mask is None):
        raise RecordError("encode_record: give text_emb and text_mask together, or neither")
    if text_emb is not None:
        arrays["text_emb"] = _check_array("text_emb", text_emb, 2, ("float16", "bfloat16", "float32"))
        arrays["text_mask"] = _check_array("text_mask", text_mask, 1, ("bool",))
        if arrays["text_mask"].shape[0] != arrays["text_emb"].shape[0]:
            raise RecordError(
                f"encode_record: text_mask {arrays['text_mask'].shape} does not match "
                f"text_emb {arrays['text_emb'].shape}; the mask has one entry per text token"
            )
    layout, offset = {}, 0
    for name, x in arrays.items():
        layout[name] = {"dtype": x.dtype.name, "shape": list(x.shape), "offset": offset, "nbytes": x.nbytes}
        offset += x.nbytes
    payload = b"".join(x.tobytes() for x in arrays.values())
    header = {
        "arrays": layout,
        "caption": str(caption),
        "fps": float(fps),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
        "metadata": metadata or {},
        "payload_nbytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
    }
    try:
        header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    except TypeError as e:
        raise RecordError(
            f"encode_record: metadata is not JSON-serialisable ({e}); convert NumPy arrays and scalars to lists and Python numbers before writing"
        ) from e
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes + payload


def decode_record(data: bytes, *, expect_video_shape=None, expect_audio_shape=None, source: str = "") -> dict:
    """bytes -> {video, audio, caption, text_emb, text_mask, fps, sample_rate, duration, metadata, version}.

    text_emb and text_mask are None when the record has none. `source` (for example
    "shards/records-00003.array_record[17]") is named in every RecordError.
    """
    where = source or "<record bytes>"
    data = memoryview(data)
    if len(data) < _PREFIX.size:
        raise RecordError(f"{where}: record is {len(data)} bytes, shorter than its {_PREFIX.size}-byte prefix (truncated); {_REWRITE}")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise RecordError(f"{where}: not a jav record (starts with {bytes(magic)!r}, expected {MAGIC!r}); the file is corrupt or not a jav shard; {_REWRITE}")
    if version != FORMAT_VERSION:
        raise RecordError(
            f"{where}: record format version {version}, but this jav reads version {FORMAT_VERSION}; {_REWRITE}, or run the jav version that wrote them"
        )
    start = _PREFIX.size + header_len
    try:
        header = json.loads(bytes(data[_PREFIX.size : start]))
        payload = data[start:]
        expected = header["payload_nbytes"]
    except (ValueError, KeyError, TypeError) as e:
        raise RecordError(f"{where}: record header is unreadable ({e}); the record is corrupt or truncated; {_REWRITE}") from e
    if len(payload) != expected:
        raise RecordError(f"{where}: record has {len(payload)} array bytes, its header says {expected} (truncated or corrupt); {_REWRITE}")
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise RecordError(f"{where}: record array bytes fail their CRC32 check (corrupt); {_REWRITE}")
    out = {name: None for name in _ARRAYS}
    for name, spec in header["arrays"].items():
        raw = payload[spec["offset"] : spec["offset"] + spec["nbytes"]]
        # copy: callers get writable arrays that do not pin the whole record's buffer
        out[name] = np.frombuffer(raw, _DTYPES[spec["dtype"]]).reshape(spec["shape"]).copy()
    for name, want in (("video", expect_video_shape), ("audio", expect_audio_shape)):
        if want is not None and tuple(out[name].shape) != tuple(want):
            raise RecordError(
                f"{where}: {name} shape {tuple(out[name].shape)}, expected {tuple(want)} "
                f"(from the manifest or config); write this clip to a shard set of its own "
                f"shape or fix the expected shape"
            )
    out.update(
        version=version,
        caption=header["caption"],
        fps=header["fps"],
        sample_rate=header["sample_rate"],
        duration=header["duration"],
        metadata=header["metadata"],
    )
    return out
