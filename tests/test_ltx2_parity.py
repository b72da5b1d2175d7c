"""LTX-2's transformer in jav: a small random diffusers `LTX2VideoTransformer3DModel`
(same structure as the 19B, 2 blocks) converted by `jav.convert.ltx2` gives the
same video and audio velocities as diffusers, for several clip shapes, caption
padding and per-token timesteps; jav -> safetensors -> jav is bit-exact."""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
diffusers = pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from configs import ltx2  # noqa: E402
from jav.convert import ltx2 as convert  # noqa: E402
from jav.convert.__main__ import main as convert_cli  # noqa: E402
from jav.convert.safetensors_io import SafetensorsReader  # noqa: E402
from jav.models import rope  # noqa: E402
from jav.runs import load_run  # noqa: E402
from ltx2_reference import tiny_transformer  # noqa: E402

T = ltx2.TINY
FPS = 24.0
SHAPES = [((3, 2, 4), 10), ((2, 3, 3), 7)]  # (latent frames, height, width), audio latents
RTOL = 1e-5


def reference(rope_type: str):
    return tiny_transformer(rope_type)


def inputs(seed: int, grid, audio_len: int):
    rng = np.random.default_rng(seed)
    b, n, text_len = 2, int(np.prod(grid)), 5
    f32 = np.float32
    return dict(
        video=rng.normal(size=(b, n, T["channels"])).astype(f32),
        audio=rng.normal(size=(b, audio_len, T["audio_channels"])).astype(f32),
        text_video=rng.normal(size=(b, text_len, T["text_dim"])).astype(f32),
        text_audio=rng.normal(size=(b, text_len, T["text_dim"])).astype(f32),
        mask_video=np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], f32),
        mask_audio=np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], f32),
        t_video=rng.uniform(size=(b, n)).astype(f32),  # a timestep per token
        t_audio=rng.uniform(size=(b, audio_len)).astype(f32),
    )


def run_reference(model, inp, grid, audio_len):
    tt = {k: torch.from_numpy(v) for k, v in inp.items()}
    with torch.no_grad():
        out = model(
            hidden_states=tt["video"],
            audio_hidden_states=tt["audio"],
            encoder_hidden_states=tt["text_video"],
            audio_encoder_hidden_states=tt["text_audio"],
            timestep=torch.from_numpy(inp["t_video"] * np.float32(1000)),  # diffusers takes sigma x 1000
            audio_timestep=torch.from_numpy(inp["t_audio"] * np.float32(1000)),
            encoder_attention_mask=tt["mask_video"],
            audio_encoder_attention_mask=tt["mask_audio"],
            num_frames=grid[0],
            height=grid[1],
            width=grid[2],
            fps=FPS,
            audio_num_frames=audio_len,
            return_dict=False,
        )
    return {"video": out[0].numpy(), "audio": out[1].numpy()}


def run_jav(model, inp, grid, audio_len):
    graphdef, state = nnx.split(model)
    x = {"video": inp["video"], "audio": inp["audio"]}
    t = {"video": inp["t_video"], "audio": inp["t_audio"]}
    text = {"video": inp["text_video"], "audio": inp["text_audio"]}
    text_mask = {"video": inp["mask_video"] > 0, "audio": inp["mask_audio"] > 0}
    pos = {"video": rope.ltx2_video_positions(*grid, fps=FPS), "audio": rope.ltx2_audio_positions(audio_len)}
    apply = jax.jit(lambda s, x, t, text, text_mask, pos: nnx.merge(graphdef, s)(x, t, text, text_mask, pos=pos))
    return jax.tree.map(np.asarray, apply(state, x, t, text, text_mask, pos))


def test_positions_match_reference():
    m = reference("split")
    coords = m.rope.prepare_video_coords(1, 3, 2, 4, "cpu", fps=FPS)  # [1, 3, N, 2] patch bounds
    mid = ((coords[..., 0] + coords[..., 1]) / 2.0)[0].T.numpy()
    np.testing.assert_array_equal(rope.ltx2_video_positions(3, 2, 4, FPS), mid)
    coords = m.audio_rope.prepare_audio_coords(1, 10, "cpu")
    mid = ((coords[..., 0] + coords[..., 1]) / 2.0)[0, 0].numpy()
    np.testing.assert_array_equal(rope.ltx2_audio_positions(10)[:, 0], mid)


@pytest.mark.parametrize("rope_type", ["split", "interleaved"])
def test_ltx2_parity_and_round_trip(tmp_path, rope_type):
    ref = reference(rope_type)
    ref.save_pretrained(tmp_path / "hf")
    convert.to_jav(tmp_path / "hf", tmp_path / "run")
    cfg, model, step = load_run(tmp_path / "run")
    assert step == 0 and cfg.model.rope.pairs == rope_type and cfg.model.depth == T["depth"]
    # LTX-2's sampling recipe comes along; its STG block (29) is past these 2 blocks: STG off
    assert cfg.sample.schedule == "ltx2" and cfg.sample.guidance_rescale == 0.7 and cfg.sample.stg_scale == 0.0 and not cfg.sample.stg_blocks

    for seed, (grid, audio_len) in enumerate(SHAPES):
        inp = inputs(seed, grid, audio_len)
        want = run_reference(ref, inp, grid, audio_len)
        got = run_jav(model, inp, grid, audio_len)
        for m in ("video", "audio"):
            err = np.abs(got[m] - want[m]).max()
            rel = err / np.abs(want[m]).max()
            print(f"{rope_type} grid={grid} audio={audio_len} {m}: max abs {err:.2e}, max rel {rel:.2e}")
            assert got[m].shape == want[m].shape
            assert rel <= RTOL, (m, grid, err, rel)

    # the same check from the command line, on inputs named as diffusers' forward arguments
    # (one timestep per clip here: the command broadcasts it over the tokens)
    grid, audio_len = SHAPES[0]
    inp = inputs(7, grid, audio_len)
    inp["t_video"], inp["t_audio"] = inp["t_video"][:, :1] * np.ones_like(inp["t_video"]), inp["t_audio"][:, :1] * np.ones_like(inp["t_audio"])
    want = run_reference(ref, inp, grid, audio_len)
    named = dict(
        hidden_states=inp["video"],
        audio_hidden_states=inp["audio"],
        encoder_hidden_states=inp["text_video"],
        audio_encoder_hidden_states=inp["text_audio"],
        timestep=inp["t_video"][:, 0] * np.float32(1000),
        audio_timestep=inp["t_audio"][:, 0] * np.float32(1000),
        encoder_attention_mask=inp["mask_video"],
        audio_encoder_attention_mask=inp["mask_audio"],
        num_frames=np.array(grid[0]),
        height=np.array(grid[1]),
        width=np.array(grid[2]),
        fps=np.array(FPS),
        audio_num_frames=np.array(audio_len),
    )
    np.savez(tmp_path / "in.npz", **named)
    convert_cli(["forward", "--workdir", str(tmp_path / "run"), "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz")])
    with np.load(tmp_path / "out.npz") as out:
        for m in ("video", "audio"):
            assert np.abs(out[m] - want[m]).max() / np.abs(want[m]).max() <= RTOL, m
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in named.items() if k != "fps"})
    with pytest.raises(SystemExit):
        convert_cli(["forward", "--workdir", str(tmp_path / "run"), "--inputs", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "x.npz")])

    # jav -> safetensors: the reference's tensors exactly; -> jav again: the same parameters
    path = convert.to_diffusers(tmp_path / "run", tmp_path / "export")
    src, back = SafetensorsReader(tmp_path / "hf"), SafetensorsReader(path)
    assert src.names() == back.names()
    for name in src.names():
        np.testing.assert_array_equal(back[name], src[name], err_msg=name)
    hf_cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert json.loads(convert.model_config(hf_cfg).to_json()) == json.loads(cfg.model.to_json())
    convert.to_jav(tmp_path / "export", tmp_path / "run2")
    _, model2, _ = load_run(tmp_path / "run2")
    for (p1, a), (p2, b) in zip(nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(model2))):
        assert p1 == p2
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(p1))


def test_unsupported_option_is_named(tmp_path):
    hf = dict(reference("split").config)
    hf["gated_attn"] = True
    with pytest.raises(ValueError, match="gated_attn=True"):
        convert.model_config(hf)


def test_full_size_tensor_map():
    """The 19B: every tensor of diffusers' default LTX-2 transformer (built on the meta
    device, no memory) has a jav parameter of configs/ltx2.py of matching shape, and the
    parameter counts agree."""
    with torch.device("meta"):
        ref = diffusers.LTX2VideoTransformer3DModel(rope_type="split")
    hf = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    cfg = convert.model_config(dict(ref.config))
    assert json.loads(cfg.to_json()) == json.loads(ltx2.get_config().model.to_json())
    _, state = convert.abstract_params(cfg)
    flat = {p: v.get_value().shape for p, v in nnx.to_flat_state(state)}
    entries = convert.tensor_map(cfg.depth)
    assert sorted(e.hf for e in entries) == sorted(hf) and {e.path for e in entries} == set(flat)
    for e in entries:
        shape = flat[e.path][1:] if e.layer is not None else flat[e.path]
        if e.linear_in:
            assert hf[e.hf] == (math.prod(shape[e.linear_in :]), math.prod(shape[: e.linear_in])), e
        else:
            assert math.prod(hf[e.hf]) == math.prod(shape), e
    count = sum(math.prod(s) for s in flat.values())
    assert count == sum(math.prod(s) for s in hf.values())
    print(f"LTX-2 transformer: {count / 1e9:.2f} B parameters")
