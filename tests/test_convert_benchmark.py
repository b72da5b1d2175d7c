"""benchmarks/convert_ltx2.py at a tiny width and depth (seconds): the folder it writes is laid
out as diffusers writes an LTX-2 transformer (its tensor names and shapes, safetensors shards and
their index), `python -m jav.convert ltx2` converts it into a run holding exactly those weights,
and the result row has its fields; the extrapolation is the line through two depths."""

import json
import math

import numpy as np
import pytest
from flax import nnx

from benchmarks import convert_ltx2
from configs import ltx2
from jav.convert.ltx2 import tensor_map, to_jav_tensor
from jav.convert.safetensors_io import SafetensorsReader
from jav.runs import load_run

SHARD_GB = 1e-4  # 100 kB: the tiny model in several shards
FIELDS = ("depth", "params", "source_gb", "run_gb", "seconds", "cpu_seconds", "peak_rss_gb", "peak_anon_gb", "largest_tensor_gb")


def tiny(depth: int = 2):
    return ltx2.model(**{**ltx2.TINY, "depth": depth}, dtype="bfloat16")


def test_the_source_is_sharded_as_diffusers_writes_it(tmp_path):
    src = tmp_path / "source"
    info = convert_ltx2.write_source(src, tiny(), shard_gb=SHARD_GB)
    specs = convert_ltx2.tensor_specs(tiny(), "bfloat16")
    index = json.loads((src / convert_ltx2.INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert info["files"] == len(shards) > 1 and shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in specs)
    reader = SafetensorsReader(src)
    assert {name: reader.shape(name) for name in reader.names()} == {name: shape for name, shape, _ in specs}
    assert {str(reader.dtype(name)) for name in reader.names()} == {"bfloat16"}
    assert json.loads((src / "config.json").read_text())["num_layers"] == 2
    assert info["params"] == sum(math.prod(shape) for _, shape, _ in specs)


def test_a_wrong_shape_is_caught_against_diffusers():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from jav.convert.ltx2 import diffusers_config

    specs = convert_ltx2.tensor_specs(tiny(), "bfloat16")
    assert convert_ltx2.check_against_diffusers(specs, diffusers_config(tiny()))
    name, shape, dtype = specs[0]
    with pytest.raises(ValueError, match="differ from diffusers"):
        convert_ltx2.check_against_diffusers([(name, shape[::-1] + (1,), dtype)] + specs[1:], diffusers_config(tiny()))


def test_the_benchmark_converts_and_reports_a_row(tmp_path):
    row = convert_ltx2.run(tmp_path, tiny(), shard_gb=SHARD_GB, keep=True, log=lambda _: None)
    assert all(row[key] > 0 for key in FIELDS), row
    assert row["depth"] == 2 and row["files"] > 1 and row["peak_rss_gb"] >= row["peak_anon_gb"]
    assert convert_ltx2.table([row]).count("\n") == 2

    # the run holds the source's weights, every tensor where the converter's map puts it
    reader = SafetensorsReader(tmp_path / "source")
    _, model, _ = load_run(tmp_path / "run")
    params = {path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}
    for e in tensor_map(2):
        stored = params[e.path] if e.layer is None else params[e.path][e.layer]
        np.testing.assert_array_equal(stored, to_jav_tensor(reader[e.hf], e, stored.shape), err_msg=e.hf)


def test_without_keep_the_scratch_files_go(tmp_path):
    convert_ltx2.run(tmp_path, tiny(depth=1), shard_gb=SHARD_GB, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_extrapolation_is_the_line_through_two_depths():
    rows = [
        dict(
            depth=d,
            params=10 + 5 * d,
            source_gb=1 + d,
            run_gb=2 + 2 * d,
            seconds=3 + d,
            cpu_seconds=2 + d,
            peak_anon_gb=0.5 - d / 100,  # lower at 6 blocks: noise, extrapolated flat
            peak_file_gb=d / 2,
            largest_tensor_gb=0.2,
        )
        for d in (2, 6)
    ]
    full = convert_ltx2.extrapolate(rows)
    assert full["depth"] == 48 and full["params"] == 250 and full["seconds"] == 51 and full["cpu_seconds"] == 50 and full["run_gb"] == 98
    assert full["peak_anon_gb"] == 0.48 and full["peak_anon_gb_per_block"] == 0
    assert full["peak_file_gb"] == 24 and full["peak_rss_gb"] == 24.48
    assert convert_ltx2.extrapolate(rows[:1]) is None


def test_converting_in_process_leaves_orbax_as_it_was(tmp_path):
    """The converter saves through its own NumPy handler (no copies, small chunks) and puts Orbax's back."""
    import orbax.checkpoint as ocp

    from jav.convert.ltx2 import to_jav

    before = ocp.type_handlers.get_type_handler(np.ndarray)
    convert_ltx2.write_source(tmp_path / "source", tiny(depth=1), shard_gb=SHARD_GB)
    to_jav(tmp_path / "source", tmp_path / "run")
    assert ocp.type_handlers.get_type_handler(np.ndarray) is before
    assert (tmp_path / "run" / "checkpoints" / "0" / "ema").is_dir() and not (tmp_path / "run" / ".convert").exists()
