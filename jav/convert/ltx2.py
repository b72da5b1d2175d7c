"""LTX-2's transformer (diffusers `LTX2VideoTransformer3DModel`) to a jav run
directory and back.

    python -m jav.convert ltx2 SRC --workdir OUT           # diffusers folder -> jav run (EMA = params)
    python -m jav.convert ltx2-export RUN --out DIR        # jav run -> config.json + safetensors

The jav model is configs/ltx2.py's `model()` at the sizes SRC's config.json
names; every option of the diffusers class that jav does not express is refused
by name (`model_config`). Tensors are read one at a time from the safetensors and
written into the parameter tree in place, in the source's dtype (bf16 stays
bf16): stacked layer parameters live in memory-mapped files under the workdir
until the checkpoint is written, and Orbax writes it from those files in chunks
(`numpy_saved_from_disk`), so memory holds a few tensors, not the model
(benchmarks/convert_ltx2.py measures it).

Names: a Linear's weight [out, in] is the transposed kernel of jav's `Dense`,
reshaped to its (in..., out...) axes (heads and head dims apart); block b's
tensors are row b of the stacked `groups/layers/0/...` parameters. LTX-2 keeps a
modality's cross-modal rows as (a2v scale, a2v shift, v2a scale, v2a shift,
gate); jav keeps (query shift, query scale, key shift, key scale, query gate)
(`av_dit.CROSS_NAMES`), and video queries in a2v while audio queries in v2a,
hence the row orders below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import pathlib
import shutil
from typing import NamedTuple

import ml_collections
import numpy as np
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader, read_config, write_safetensors

# jav row r of a modality's cross-modal table is LTX-2's row PERM[m][r]
PERM = {"video": (1, 0, 3, 2, 4), "audio": (3, 2, 1, 0, 4)}

# diffusers options jav expresses only at these values
REQUIRED = dict(
    patch_size=1,
    patch_size_t=1,
    audio_patch_size=1,
    audio_patch_size_t=1,
    gated_attn=False,
    audio_gated_attn=False,
    cross_attn_mod=False,
    audio_cross_attn_mod=False,
    activation_fn="gelu-approximate",
    qk_norm="rms_norm_across_heads",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    attention_bias=True,
    attention_out_bias=True,
    rope_double_precision=True,
    timestep_scale_multiplier=1000,
    cross_attn_timestep_scale_multiplier=1000,
    use_prompt_embeddings=True,
    ff_bias=True,
    audio_ff_bias=True,
    use_keyframes_abs_pos_embedding=False,
)
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def model_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """jav's model config for a diffusers LTX-2 transformer config (its config.json);
    errors name each diffusers option jav cannot express."""
    from configs import ltx2

    for key, want in REQUIRED.items():
        if key in hf and hf[key] != want:
            raise ValueError(f"diffusers config {key}={hf[key]!r}: jav's LTX-2 supports only {want!r}")
    inner, audio_inner = hf["num_attention_heads"] * hf["attention_head_dim"], hf["audio_num_attention_heads"] * hf["audio_attention_head_dim"]
    checks = [
        (hf.get("out_channels") in (None, hf["in_channels"]), "out_channels must equal in_channels"),
        (hf.get("audio_out_channels") in (None, hf["audio_in_channels"]), "audio_out_channels must equal audio_in_channels"),
        (hf["cross_attention_dim"] == inner, f"cross_attention_dim={hf['cross_attention_dim']} must be the video width {inner}"),
        (hf["audio_cross_attention_dim"] == audio_inner, f"audio_cross_attention_dim={hf['audio_cross_attention_dim']} must be the audio width {audio_inner}"),
        (
            hf["num_attention_heads"] == hf["audio_num_attention_heads"],
            "num_attention_heads must equal audio_num_attention_heads (LTX-2's cross-modal RoPE is laid out by both)",
        ),
        (hf["pos_embed_max_pos"] == hf["audio_pos_embed_max_pos"], "pos_embed_max_pos must equal audio_pos_embed_max_pos (jav has one model.rope.max_pos)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"diffusers config: {message}")
    return ltx2.model(
        video_heads=hf["num_attention_heads"],
        video_head_dim=hf["attention_head_dim"],
        audio_heads=hf["audio_num_attention_heads"],
        audio_head_dim=hf["audio_attention_head_dim"],
        depth=hf["num_layers"],
        channels=hf["in_channels"],
        audio_channels=hf["audio_in_channels"],
        text_dim=hf["caption_channels"],
        theta=hf["rope_theta"],
        max_pos=(hf["pos_embed_max_pos"], hf["base_height"], hf["base_width"]),
        pairs=hf.get("rope_type", "interleaved"),
        dtype=dtype,
    )


def diffusers_config(m) -> dict:
    """The diffusers config.json of a jav LTX-2 model config (the inverse of `model_config`)."""
    v, a = m.video, m.audio
    t, h, w = m.rope.max_pos
    return dict(
        _class_name="LTX2VideoTransformer3DModel",
        **REQUIRED,
        in_channels=v.channels,
        out_channels=v.channels,
        num_attention_heads=v.heads,
        attention_head_dim=v.width // v.heads,
        cross_attention_dim=v.width,
        audio_in_channels=a.channels,
        audio_out_channels=a.channels,
        audio_num_attention_heads=a.heads,
        audio_attention_head_dim=a.width // a.heads,
        audio_cross_attention_dim=a.width,
        num_layers=m.depth,
        caption_channels=m.text.dim,
        rope_theta=m.rope.theta,
        rope_type=m.rope.pairs,
        pos_embed_max_pos=int(t),
        audio_pos_embed_max_pos=int(t),
        base_height=int(h),
        base_width=int(w),
    )


class Entry(NamedTuple):
    hf: str  # diffusers tensor name
    path: tuple  # jav parameter path
    layer: int | None  # row of a stacked (per-block) parameter
    linear_in: int  # a Linear weight: how many of the kernel's leading axes are inputs (0: not a weight)
    perm: tuple | None  # cross-modal rows, permuted on the axis before the last


def _linear(hf: str, path: tuple, layer=None, n_in=1, perm=None) -> list[Entry]:
    return [Entry(f"{hf}.weight", path + ("kernel",), layer, n_in, perm), Entry(f"{hf}.bias", path + ("bias",), layer, 0, perm)]


def _attention(hf: str, path: tuple, layer: int) -> list[Entry]:
    out = []
    for src, dst in (("to_q", "q"), ("to_k", "k"), ("to_v", "v")):
        out += _linear(f"{hf}.{src}", path + ("proj", dst), layer)
    out += _linear(f"{hf}.to_out.0", path + ("proj", "o"), layer, n_in=2)
    out += [
        Entry(f"{hf}.norm_q.weight", path + ("proj", "q_norm", "scale"), layer, 0, None),
        Entry(f"{hf}.norm_k.weight", path + ("proj", "k_norm", "scale"), layer, 0, None),
    ]
    return out


def _time(hf: str, path: tuple) -> list[Entry]:
    return _linear(f"{hf}.timestep_embedder.linear_1", path + ("fc1",)) + _linear(f"{hf}.timestep_embedder.linear_2", path + ("fc2",))


def tensor_map(depth: int) -> list[Entry]:
    """Every diffusers tensor of an LTX-2 transformer of `depth` blocks and its jav parameter."""
    out = []
    for m, pre in (("video", ""), ("audio", "audio_")):
        out += _linear(f"{pre}proj_in", ("embed", m))
        out += _time(f"{pre}time_embed.emb", ("time", m)) + _linear(f"{pre}time_embed.linear", ("adaln", m, "proj"))
        scale_shift, gate = {
            "video": ("av_cross_attn_video_scale_shift", "av_cross_attn_video_a2v_gate"),
            "audio": ("av_cross_attn_audio_scale_shift", "av_cross_attn_audio_v2a_gate"),
        }[m]
        out += _time(f"{scale_shift}.emb", ("cross_adaln", m, "time"))
        out += _linear(f"{scale_shift}.linear", ("cross_adaln", m, "adaln", "proj"), perm=PERM[m][:4])
        out += _time(f"{gate}.emb", ("cross_adaln", m, "gate_time")) + _linear(f"{gate}.linear", ("cross_adaln", m, "gate_adaln", "proj"))
        out += _linear(f"{pre}caption_projection.linear_1", ("caption", m, "fc1")) + _linear(f"{pre}caption_projection.linear_2", ("caption", m, "fc2"))
        out += [Entry(f"{pre}scale_shift_table", ("final", m, "table"), None, 0, None)] + _linear(f"{pre}proj_out", ("final", m, "proj"))
    for b in range(depth):
        blk, layer = f"transformer_blocks.{b}", ("groups", "layers", 0)
        for m, pre in (("video", ""), ("audio", "audio_")):
            out += _attention(f"{blk}.{pre}attn1", layer + (m, "self_attn"), b)
            out += _attention(f"{blk}.{pre}attn2", layer + (m, "text_attn"), b)
            ff = f"{blk}.{pre}ff.net"
            out += _linear(f"{ff}.0.proj", layer + (m, "mlp", "up"), b) + _linear(f"{ff}.2", layer + (m, "mlp", "down"), b)
            out += [
                Entry(f"{blk}.{pre}scale_shift_table", layer + (m, "table"), b, 0, None),
                Entry(f"{blk}.{m}_a2v_cross_attn_scale_shift_table", layer + (m, "cross_table"), b, 0, PERM[m]),
            ]
        out += _attention(f"{blk}.audio_to_video_attn", layer + ("cross", "a2v"), b)
        out += _attention(f"{blk}.video_to_audio_attn", layer + ("cross", "v2a"), b)
    return out


def to_jav_tensor(x: np.ndarray, e: Entry, shape: tuple) -> np.ndarray:
    """A diffusers tensor -> the jav parameter (one block's row) of `shape`."""
    if e.linear_in:
        x = x.T
    x = x.reshape(shape)
    if e.perm is not None:
        x = np.take(x, e.perm, axis=-2)
    return x


def to_hf_tensor(x: np.ndarray, e: Entry, shape: tuple) -> np.ndarray:
    """A jav parameter (one block's row) -> the diffusers tensor of `shape` (inverse of `to_jav_tensor`)."""
    if e.perm is not None:
        x = np.take(x, np.argsort(e.perm), axis=-2)
    if e.linear_in:
        return x.reshape(math.prod(x.shape[: e.linear_in]), -1).T.reshape(shape)
    return x.reshape(shape)


def hf_shape(e: Entry, shape: tuple) -> tuple:
    """The diffusers shape of the tensor whose jav parameter (one block's row) has `shape`."""
    if e.linear_in:
        return (math.prod(shape[e.linear_in :]), math.prod(shape[: e.linear_in]))
    if e.path[-1] in ("bias", "scale"):
        return (math.prod(shape),)
    return tuple(shape)


def abstract_params(cfg_model) -> tuple[nnx.GraphDef, nnx.State]:
    from jav.models import AVDiT

    return nnx.split(nnx.eval_shape(lambda: AVDiT(cfg_model, rngs=nnx.Rngs(0))))


def main_dtype(reader: SafetensorsReader) -> str:
    """The dtype most of the weights are stored in (their float type), as a jav dtype name."""
    counts = {}
    for name in reader.names():
        dt = reader.dtype(name)
        counts[dt] = counts.get(dt, 0) + math.prod(reader.shape(name))
    return max(counts, key=counts.get).name


# The converted checkpoint's OCDBT data files and zarr chunks, each held in memory until
# written (Orbax's defaults: data files of 2 GiB, chunks of a whole array up to that size).
SAVE_FILE_BYTES = 256 << 20
SAVE_CHUNK_BYTES = 64 << 20


@contextlib.contextmanager
def numpy_saved_from_disk():
    """Inside this block Orbax saves NumPy arrays without holding the model in memory.

    Orbax copies each array it saves, so that an asynchronous save never sees the caller
    change it: for the converter's memory-mapped parameters, saved synchronously and never
    changed, that copy is the model twice over (params and EMA), so here it writes from the
    memory maps themselves, in chunks of SAVE_CHUNK_BYTES and data files of SAVE_FILE_BYTES.
    The handler replaced is Orbax's global one for NumPy arrays (put back on leaving): the
    process saves nothing else meanwhile."""
    import orbax.checkpoint as ocp

    handlers = ocp.type_handlers

    class Handler(handlers.NumpyHandler):
        async def serialize(self, values, infos, args=None):
            for info in infos:
                info.ocdbt_target_data_file_size = SAVE_FILE_BYTES
            args = [
                dataclasses.replace(a, chunk_byte_size=min(a.chunk_byte_size or SAVE_CHUNK_BYTES, SAVE_CHUNK_BYTES))
                for a in args or [ocp.SaveArgs()] * len(values)
            ]
            return await super().serialize(values, infos, args)

    def register(handler):
        absl = logging.getLogger("absl")  # Orbax warns of every handler it replaces
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            handlers.register_type_handler(np.ndarray, handler, override=True)
        finally:
            absl.setLevel(level)

    previous = handlers.get_type_handler(np.ndarray)
    register(Handler(deepcopy_host_arrays=False))
    try:
        yield
    finally:
        register(previous)


def to_jav(src, workdir, dtype: str | None = None) -> ml_collections.ConfigDict:
    """Converts a diffusers LTX-2 transformer folder `src` into the jav run directory
    `workdir` (config.json and step 0 with EMA = params) -> the run's config.
    `dtype`: the parameters' dtype (default: the weights' own)."""
    from configs import ltx2

    src, workdir = pathlib.Path(src), pathlib.Path(workdir)
    hf_cfg = read_config(src)
    reader = SafetensorsReader(src)
    dtype = dtype or main_dtype(reader)
    cfg = ltx2.get_config()
    cfg.model = model_config(hf_cfg, dtype)
    # LTX-2's STG block (configs/ltx2.py) where the converted model has it; a shallower
    # LTX-2-shaped model samples without STG until given blocks of its own (sample.stg_blocks)
    cfg.sample.stg_blocks = tuple(b for b in cfg.sample.stg_blocks if b < cfg.model.depth)
    if not cfg.sample.stg_blocks:
        cfg.sample.stg_scale = 0.0
    _, state = abstract_params(cfg.model)
    flat = dict(nnx.to_flat_state(state))
    entries = tensor_map(cfg.model.depth)
    missing = sorted(set(e.hf for e in entries) - set(reader.names()))
    unused = sorted(set(reader.names()) - set(e.hf for e in entries))
    if missing or unused:
        raise ValueError(f"{src}: tensors jav needs but the checkpoint lacks: {missing[:8]}; tensors jav has no place for: {unused[:8]}")
    if set(e.path for e in entries) != set(flat):
        raise ValueError(f"the LTX-2 tensor map misses jav parameters: {sorted(set(flat) - set(e.path for e in entries))[:8]}")

    write_run(workdir, cfg, flat, entries, reader, to_jav_tensor)
    return cfg


def write_run(workdir: pathlib.Path, cfg, flat: dict, entries, reader, to_jav, preset: dict | None = None) -> None:
    """A converted run at step 0 (EMA = params) in `workdir`: each of jav's parameters `flat`
    (path -> abstract variable) not in `preset` (path -> array) is staged in a memory-mapped
    .npy file under WORKDIR/.convert and filled from `reader`'s tensors by `entries`
    (`to_jav(tensor, entry, shape)`), so memory holds a few tensors, not the model."""
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = workdir / ".convert"
    scratch.mkdir(exist_ok=True)
    arrays = dict(preset or {})
    for i, (path, var) in enumerate(flat.items()):
        if path not in arrays:
            value = var.get_value()
            arrays[path] = np.lib.format.open_memmap(scratch / f"{i}.npy", mode="w+", dtype=np.dtype(value.dtype), shape=value.shape)
    for e in entries:
        target = arrays[e.path] if e.layer is None else arrays[e.path][e.layer]
        target[...] = to_jav(reader[e.hf], e, target.shape)
    params = nnx.from_flat_state([(path, var.replace(arrays[path])) for path, var in flat.items()])
    save_converted(workdir, cfg, params)
    del params, arrays
    shutil.rmtree(scratch)


def save_converted(workdir, cfg, params) -> None:
    """Writes a converted run: `cfg` as workdir/config.json and step 0 with `params` (an
    nnx.State, NumPy or JAX arrays) as both the weights and their EMA."""
    from jav.train.checkpoint import Checkpointer  # the training side, loaded only to write a run

    (pathlib.Path(workdir) / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    with numpy_saved_from_disk(), Checkpointer(workdir, async_save=False) as ckpt:
        ckpt.save(0, params=params, ema=params, opt_state={}, data_state=None, config=cfg, force=True)
        ckpt.wait()


def to_diffusers(run, out, weights: str = "ema", step: int | None = None) -> pathlib.Path:
    """Writes a jav LTX-2 run's `weights` as a diffusers transformer folder `out`
    (config.json and diffusion_pytorch_model.safetensors) -> the safetensors path."""
    from jav.runs import load_run

    cfg, model, _ = load_run(run, weights=weights, step=step)
    flat = {path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}
    hf_cfg = diffusers_config(cfg.model)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    entries = {e.hf: e for e in tensor_map(cfg.model.depth)}
    shapes = {n: hf_shape(e, flat[e.path].shape[1:] if e.layer is not None else flat[e.path].shape) for n, e in entries.items()}

    def tensor(name: str) -> np.ndarray:
        e = entries[name]
        x = flat[e.path] if e.layer is None else flat[e.path][e.layer]
        return to_hf_tensor(x, e, shapes[name])

    path = out / WEIGHTS_NAME
    write_safetensors(path, [(n, shapes[n], flat[e.path].dtype) for n, e in sorted(entries.items())], tensor, metadata={"format": "pt"})
    return path


# diffusers' LTX2VideoTransformer3DModel.forward arguments `forward` reads (scalars as 0-d arrays)
FORWARD_ARRAYS = (
    "hidden_states",
    "audio_hidden_states",
    "encoder_hidden_states",
    "audio_encoder_hidden_states",
    "timestep",
    "audio_timestep",
    "encoder_attention_mask",
    "audio_encoder_attention_mask",
)
FORWARD_SCALARS = ("num_frames", "height", "width", "fps", "audio_num_frames")


def forward_inputs(arrays: dict) -> tuple[dict, dict, dict, dict, dict]:
    """diffusers-named forward inputs -> jav's (x, t, text, text_mask, pos). Timesteps are diffusers'
    (sigma x 1000), one per clip [B] or per token [B, N]; masks 1 = keep."""
    from jav.models import rope

    missing = [k for k in FORWARD_ARRAYS + FORWARD_SCALARS if k not in arrays]
    if missing:
        raise ValueError(f"the inputs lack {missing}: name them as the arguments of diffusers' LTX2VideoTransformer3DModel.forward")
    f32 = lambda k: np.asarray(arrays[k], np.float32)  # noqa: E731
    x = {"video": f32("hidden_states"), "audio": f32("audio_hidden_states")}
    grid = tuple(int(arrays[k]) for k in ("num_frames", "height", "width"))
    audio_len = int(arrays["audio_num_frames"])
    if x["video"].shape[1] != math.prod(grid) or x["audio"].shape[1] != audio_len:
        raise ValueError(
            f"hidden_states has {x['video'].shape[1]} tokens for num_frames x height x width = {math.prod(grid)}, "
            f"audio_hidden_states {x['audio'].shape[1]} for audio_num_frames = {audio_len}: they must agree"
        )
    t = {}
    for m, key in (("video", "timestep"), ("audio", "audio_timestep")):
        sigma = f32(key) / 1000.0
        t[m] = np.broadcast_to(sigma.reshape(sigma.shape + (1,) * (2 - sigma.ndim)), x[m].shape[:2]).copy()
    text = {"video": f32("encoder_hidden_states"), "audio": f32("audio_encoder_hidden_states")}
    text_mask = {"video": f32("encoder_attention_mask") > 0, "audio": f32("audio_encoder_attention_mask") > 0}
    pos = {"video": rope.ltx2_video_positions(*grid, fps=float(arrays["fps"])), "audio": rope.ltx2_audio_positions(audio_len)}
    return x, t, text, text_mask, pos


def forward(run, inputs, out, weights: str = "ema", step: int | None = None) -> dict:
    """A converted (or trained) LTX-2 run on diffusers-named inputs (an .npz) -> {"video", "audio"}
    velocities in diffusers' token layout, also written to the .npz `out`."""
    import jax

    from jav.runs import load_run

    with np.load(inputs) as f:
        arrays = {k: f[k] for k in f.files}
    x, t, text, text_mask, pos = forward_inputs(arrays)
    _, model, _ = load_run(run, weights=weights, step=step)
    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda s, x, t, text, text_mask, pos: nnx.merge(graphdef, s)(x, t, text, text_mask, pos=pos))
    result = {k: np.asarray(v, np.float32) for k, v in apply(state, x, t, text, text_mask, pos).items()}
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **result)
    return result
