"""What converting a full-width LTX-2 transformer into a jav run costs: time, peak
memory and disk, at a chosen number of blocks.

    python -m benchmarks.convert_ltx2 --depth 2 --repeats 3 --json runs/convert_ltx2.jsonl
    python -m benchmarks.convert_ltx2 --depth 6 --repeats 3 --json runs/convert_ltx2.jsonl   # and extrapolates to 48 blocks
    python -m benchmarks.convert_ltx2 --depth 2 --out /scratch/convert --keep --shard-gb 1

Writes a random LTX-2 transformer of `--depth` blocks at the 19B's width (configs/ltx2.py:
video 32 heads x 128, audio 32 x 64, 128 latent channels each) as diffusers writes it:
config.json (`jav.convert.ltx2.diffusers_config`) and safetensors shards of at most
`--shard-gb` with a `diffusion_pytorch_model.safetensors.index.json`, one tensor at a
time (jav's streaming writer, `jav.convert.safetensors_io.write_safetensors`: the
`safetensors` package's own writer takes a whole file's tensors at once). The tensor names and shapes are jav's (`tensor_map`), checked against diffusers'
own `LTX2VideoTransformer3DModel` built on torch's meta device where torch and diffusers
are installed, and the files are opened with the `safetensors` package where it is.
Then it runs `python -m jav.convert ltx2 SRC --workdir RUN` in a subprocess (`--repeats`
times on the one source) and reports the median wall time and CPU time (user and system:
on a machine shared with other work, the steadier of the two), the peak resident memory
and the sizes of the source and of the written run. Peak memory comes in two parts: the
kernel's maximum RSS counts every page of the converter's memory-mapped scratch files the
process has touched (page cache, which the kernel can drop, so it grows with the model),
and the anonymous part (sampled every 50 ms) is what the converter itself holds.

The full model (48 blocks, 38 GB in bfloat16) needs its source, as much again of scratch
and about 59 GB of run on disk at once, so measure two depths and extrapolate: each block
costs the same, so time and sizes grow linearly, and a converter that holds a few tensors
keeps the same peak anonymous memory at any depth. With `--json`, the rows already there
at the same width and dtype give the extrapolation to 48 blocks. Scratch files (`--out`, a
temporary folder by default) are deleted unless `--keep`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
GB = 1e9
FULL_DEPTH = 48  # LTX-2 19B's blocks
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def full_width(depth: int, dtype: str = "bfloat16"):
    """jav's model config of LTX-2 at the 19B's width with `depth` blocks."""
    from configs import ltx2

    return ltx2.model(depth=depth, dtype=dtype)


def tensor_specs(model_cfg, dtype: str) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(diffusers name, diffusers shape, dtype) of every tensor of the model, from jav's
    tensor map and the shapes of jav's parameters (the layout `to_diffusers` writes)."""
    import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy
    from flax import nnx

    from jav.convert.ltx2 import abstract_params, tensor_map

    _, state = abstract_params(model_cfg)
    shapes = {path: var.get_value().shape for path, var in nnx.to_flat_state(state)}
    specs = []
    for e in tensor_map(model_cfg.depth):
        shape = shapes[e.path][1:] if e.layer is not None else shapes[e.path]
        if e.linear_in:  # a Linear weight is [out, in]
            shape = (math.prod(shape[e.linear_in :]), math.prod(shape[: e.linear_in]))
        elif e.path[-1] in ("bias", "scale"):
            shape = (math.prod(shape),)
        specs.append((e.hf, tuple(shape), np.dtype(dtype)))
    return specs


def diffusers_shapes(hf_config: dict) -> dict[str, tuple[int, ...]] | None:
    """name -> shape of diffusers' LTX2VideoTransformer3DModel for `hf_config`, built on torch's
    meta device (no memory for the weights); None where torch or diffusers is not installed."""
    try:
        import torch
        from diffusers import LTX2VideoTransformer3DModel
    except ImportError:
        return None
    with torch.device("meta"):
        model = LTX2VideoTransformer3DModel(**{k: v for k, v in hf_config.items() if not k.startswith("_")})
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_against_diffusers(specs, hf_config: dict) -> bool:
    """Raises if the tensors to write differ from diffusers' class -> whether diffusers checked them."""
    reference = diffusers_shapes(hf_config)
    if reference is None:
        return False
    ours = {name: shape for name, shape, _ in specs}
    if ours != reference:
        wrong = sorted(n for n in set(ours) & set(reference) if ours[n] != reference[n])
        raise ValueError(
            f"the tensors differ from diffusers' LTX2VideoTransformer3DModel: only jav's {sorted(set(ours) - set(reference))[:8]}, "
            f"only diffusers' {sorted(set(reference) - set(ours))[:8]}, other shapes {[(n, ours[n], reference[n]) for n in wrong[:8]]}"
        )
    return True


def shard(specs, shard_bytes: float) -> list[list]:
    """`specs` in order, cut into shards of at most `shard_bytes` (a larger tensor alone)."""
    shards, size = [[]], 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * spec[2].itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def write_source(src, model_cfg, dtype: str = "bfloat16", shard_gb: float = 2.0, seed: int = 0) -> dict:
    """Writes a random LTX-2 transformer folder `src` as diffusers does (config.json, safetensors
    shards and their index, or one file when it fits one shard), one tensor in memory at a time
    -> {params, source_bytes, largest_tensor, largest_bytes, files, diffusers_checked}."""
    from jav.convert.ltx2 import WEIGHTS_NAME, diffusers_config
    from jav.convert.safetensors_io import write_safetensors

    src = pathlib.Path(src)
    src.mkdir(parents=True, exist_ok=True)
    hf_config = diffusers_config(model_cfg)
    specs = tensor_specs(model_cfg, dtype)
    checked = check_against_diffusers(specs, hf_config)
    (src / "config.json").write_text(json.dumps(hf_config, indent=2))
    shapes = {name: shape for name, shape, _ in specs}
    rng = np.random.default_rng(seed)

    def random_tensor(name: str) -> np.ndarray:
        x = rng.standard_normal(shapes[name], dtype=np.float32)
        x *= 0.02
        return x.astype(dtype)

    shards = shard(specs, shard_gb * GB)
    if len(shards) == 1:
        names = [WEIGHTS_NAME]
    else:
        stem = WEIGHTS_NAME.removesuffix(".safetensors")
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, part in zip(names, shards):
        write_safetensors(src / name, part, random_tensor, metadata={"format": "pt"})
    total = sum(math.prod(shape) * dt.itemsize for _, shape, dt in specs)
    if len(shards) > 1:
        weight_map = {spec[0]: name for name, part in zip(names, shards) for spec in part}
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (src / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    check_files(src, names, shapes)
    largest = max(specs, key=lambda s: math.prod(s[1]))
    return dict(
        params=sum(math.prod(shape) for _, shape, _ in specs),
        source_bytes=folder_bytes(src),
        largest_tensor=largest[0],
        largest_bytes=math.prod(largest[1]) * largest[2].itemsize,
        files=len(names),
        diffusers_checked=checked,
    )


def check_files(src: pathlib.Path, names: list[str], shapes: dict) -> None:
    """The written files open with the `safetensors` package (headers only), where it is installed,
    and hold exactly the tensors of `shapes`."""
    try:
        from safetensors import safe_open
    except ImportError:
        return
    found = {}
    for name in names:
        with safe_open(str(src / name), framework="numpy") as f:
            found.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    if found != shapes:
        raise ValueError(f"{src}: the safetensors package reads other tensors than were written")


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


def _proc_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/PID/status in bytes ({} once the process is gone)."""
    try:
        lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


def convert(src, workdir, log_path, poll_s: float = 0.05) -> dict:
    """Runs `python -m jav.convert ltx2 SRC --workdir WORKDIR` -> {seconds, cpu_seconds (user and
    system: what a machine shared with other work slows least), peak_rss_bytes (the
    kernel's maximum resident set), and sampled every `poll_s`: sampled_rss_bytes, peak_anon_bytes
    (what the process holds itself), peak_file_bytes (pages of mapped files: libraries and the
    converter's scratch memmaps)}; raises with the log's tail if it fails."""
    command = [sys.executable, "-m", "jav.convert", "ltx2", str(src), "--workdir", str(workdir)]
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            for key, value in _proc_status(process.pid).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)
            time.sleep(poll_s)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = pathlib.Path(log_path).read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{tail}")
    return dict(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        sampled_rss_bytes=peaks["VmRSS"],
        peak_anon_bytes=peaks["RssAnon"],
        peak_file_bytes=peaks["RssFile"],
    )


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(out, model_cfg, dtype: str = "bfloat16", shard_gb: float = 2.0, repeats: int = 1, keep: bool = False, log=print) -> dict:
    """Writes the source under `out`/source and converts it into `out`/run `repeats` times ->
    the result row: the median time, the largest peaks."""
    out = pathlib.Path(out)
    src, workdir, log_path = out / "source", out / "run", out / "convert.log"
    for path in (src, workdir):
        if path.exists():
            raise FileExistsError(f"{path} exists: name an empty --out")
    try:
        start = time.perf_counter()
        source = write_source(src, model_cfg, dtype, shard_gb)
        write_seconds = time.perf_counter() - start
        log(f"wrote {src}: {source['params']:,} parameters in {source['files']} file(s), {write_seconds:.0f} s")
        measured = []
        for i in range(repeats):
            shutil.rmtree(workdir, ignore_errors=True)
            measured.append(convert(src, workdir, log_path))
            log(f"converted in {measured[-1]['seconds']:.1f} s, peak RSS {measured[-1]['peak_rss_bytes'] / GB:.2f} GB")
        run_bytes = folder_bytes(workdir)
    finally:
        if not keep:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            log_path.unlink(missing_ok=True)
    peak = {key: max(m[key] for m in measured) / GB for key in measured[0] if key.endswith("_bytes")}
    v, a = model_cfg.video, model_cfg.audio
    return dict(
        benchmark="convert_ltx2",
        depth=model_cfg.depth,
        width=dict(video=v.width, video_heads=v.heads, audio=a.width, audio_heads=a.heads, channels=v.channels, audio_channels=a.channels),
        dtype=dtype,
        params=source["params"],
        files=source["files"],
        source_gb=source["source_bytes"] / GB,
        run_gb=run_bytes / GB,
        seconds=float(np.median([m["seconds"] for m in measured])),
        seconds_each=[round(m["seconds"], 2) for m in measured],
        cpu_seconds=float(np.median([m["cpu_seconds"] for m in measured])),
        peak_rss_gb=peak["peak_rss_bytes"],
        peak_anon_gb=peak["peak_anon_bytes"],
        peak_file_gb=peak["peak_file_bytes"],
        sampled_rss_gb=peak["sampled_rss_bytes"],
        largest_tensor=source["largest_tensor"],
        largest_tensor_gb=source["largest_bytes"] / GB,
        write_seconds=write_seconds,
        diffusers_checked=source["diffusers_checked"],
        cpu=cpu_name(),
        cores=len(os.sched_getaffinity(0)),  # those it may run on
        machine_cores=os.cpu_count(),
        date=datetime.date.today().isoformat(),
    )


COLUMNS = (
    ("depth", "depth", "d"),
    ("params", "parameters", ","),
    ("source_gb", "source GB", ".2f"),
    ("run_gb", "run GB", ".2f"),
    ("seconds", "seconds", ".1f"),
    ("cpu_seconds", "CPU s", ".1f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
    ("peak_anon_gb", "peak anon GB", ".2f"),
    ("largest_tensor_gb", "largest tensor GB", ".3f"),
)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(format(row[key], spec) for key, _, spec in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def extrapolate(rows: list[dict], depth: int = FULL_DEPTH) -> dict | None:
    """The row at `depth` blocks on the line through the shallowest and deepest of `rows` (same
    width and dtype; the latest row of a depth): per-block cost times blocks; None with fewer
    than two depths. A peak memory measured lower at more blocks (noise: memory never shrinks
    with the model) is extrapolated flat, at the larger of the two; the peak RSS is that of its
    two parts, anonymous and file-backed, extrapolated apart (at most their sum)."""
    by_depth = {row["depth"]: row for row in rows}
    if len(by_depth) < 2:
        return None
    lo, hi = by_depth[min(by_depth)], by_depth[max(by_depth)]
    out = {"depth": depth, "largest_tensor_gb": hi["largest_tensor_gb"]}
    for key in ("params", "source_gb", "run_gb", "seconds", "cpu_seconds", "peak_anon_gb", "peak_file_gb"):
        per_block = (hi[key] - lo[key]) / (hi["depth"] - lo["depth"])
        base = lo[key]
        if key.startswith("peak_") and per_block < 0:
            per_block, base = 0.0, max(lo[key], hi[key])
        out[key] = base + per_block * (depth - lo["depth"])
        out[key + "_per_block"] = per_block
    out["params"] = int(round(out["params"]))
    out["peak_rss_gb"] = out["peak_anon_gb"] + out["peak_file_gb"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (LTX-2 19B has 48)")
    parser.add_argument("--dtype", default="bfloat16", help="the weights' dtype (the converter keeps it)")
    parser.add_argument("--shard-gb", type=float, default=2.0, help="largest safetensors shard, GB")
    parser.add_argument("--repeats", type=int, default=1, help="conversions of the one source (the row has the median time)")
    parser.add_argument("--out", default=None, help="scratch folder for the source and the run (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="append the result row to this file")
    parser.add_argument("--keep", action="store_true", help="keep the source and the run")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out) if args.out else pathlib.Path(tempfile.mkdtemp(prefix="convert_ltx2_"))
    out.mkdir(parents=True, exist_ok=True)
    row = run(out, full_width(args.depth, args.dtype), args.dtype, args.shard_gb, args.repeats, args.keep)
    if not args.out and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print(table([row]))
    print(json.dumps(row))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(args.json) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        same = [r for r in rows if r.get("benchmark") == "convert_ltx2" and r["width"] == row["width"] and r["dtype"] == row["dtype"]]
        full = extrapolate(same)
        if full:
            print(f"extrapolated to {FULL_DEPTH} blocks from depths {sorted({r['depth'] for r in same})}:")
            print(table([full]))
            print(
                f"per block: {full['seconds_per_block']:.1f} s ({full['cpu_seconds_per_block']:.1f} s of CPU), {full['source_gb_per_block']:.3f} GB of source, "
                f"peak anonymous memory {full['peak_anon_gb_per_block']:+.3f} GB, file-backed (memory maps) {full['peak_file_gb_per_block']:+.3f} GB"
            )


if __name__ == "__main__":
    main()
