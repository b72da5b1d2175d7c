"""Reading and writing safetensors files one tensor at a time, without torch.

A safetensors file is an 8-byte little-endian header length, a JSON header
(name -> dtype, shape, byte offsets) and the raw tensors. Reading maps the file
and copies out only the tensor asked for; writing streams tensors to disk in
order, so converting a model holds a few tensors in memory, not the model.
A sharded checkpoint (`*.safetensors.index.json`, name -> shard) reads the same.
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
NAMES = {v: k for k, v in DTYPES.items()}


def _header(path: pathlib.Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


class SafetensorsReader:
    """`reader[name]` -> that tensor as a NumPy array; `reader.names()`, `reader.shape(name)`,
    `reader.dtype(name)`. `path` is a .safetensors file, a sharded index, or a folder holding
    either (diffusers' `diffusion_pytorch_model*.safetensors`)."""

    def __init__(self, path):
        path = pathlib.Path(path)
        if path.is_dir():
            found = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.safetensors"))
            if len(found) != 1:
                raise FileNotFoundError(f"{path}: expected one *.safetensors file or one *.safetensors.index.json, found {[p.name for p in found]}")
            path = found[0]
        if path.name.endswith(".index.json"):
            weight_map = json.loads(path.read_text())["weight_map"]
            files = {name: path.parent / shard for name, shard in weight_map.items()}
        else:
            files = None
        self._entries = {}  # name -> (file, header entry, data start)
        for file in sorted(set(files.values())) if files else [path]:
            header, start = _header(file)
            for name, entry in header.items():
                self._entries[name] = (file, entry, start)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][1]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return DTYPES[self._entries[name][1]["dtype"]]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> np.ndarray:
        file, entry, start = self._entries[name]
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        mm = np.memmap(file, dtype=np.uint8, mode="r", offset=start + begin, shape=(end - begin,))
        return np.array(mm.view(dtype).reshape(entry["shape"]))


def read_config(folder) -> dict:
    """A diffusers model folder's config.json (what `save_pretrained` writes beside the safetensors)."""
    folder = pathlib.Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        what = "does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else "has no config.json"
        raise FileNotFoundError(f"{path} not found: {folder} {what}; give a diffusers model folder (config.json and *.safetensors: save_pretrained's)")
    return json.loads(path.read_text())


def write_safetensors(path, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]], tensor: Callable[[str], np.ndarray], metadata: dict | None = None) -> None:
    """Writes `path` from `specs` (name, shape, dtype), asking `tensor(name)` for each array
    only when it is written."""
    specs = list(specs)
    header, offset = {}, 0
    for name, shape, dtype in specs:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype in specs:
            array = np.ascontiguousarray(tensor(name), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"{name}: shape {array.shape}, declared {tuple(shape)}")
            f.write(array.tobytes())
