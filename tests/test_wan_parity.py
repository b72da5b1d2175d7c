"""Wan 2.1's transformer as jav's video branch: a small random diffusers
`WanTransformer3DModel` (configs/wan.py:tiny sizes, seeded), saved and converted by
`python -m jav.convert wan`, gives diffusers' output from jav's video branch on several
clip shapes (frame counts and sizes; a timestep per sample, and one per token as Wan 2.2
TI2V passes them) in float32 and bfloat16; the freshly initialised audio branch does not
touch the video; jav -> safetensors -> jav is bit-exact; every tensor of the full-size
1.3B and 14B models has its jav parameter.

Text masks: diffusers' WanTransformer3DModel.forward takes none. Wan's pipeline
zero-pads the umT5 states to a fixed length and every block attends to all of them, so
the captions here are zero-padded the same way (the second one shorter) and jav is given
an all-true mask.
"""

import copy
import functools
import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
diffusers = pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from configs import wan  # noqa: E402
from jav.convert import wan as convert  # noqa: E402
from jav.convert.__main__ import main as convert_cli  # noqa: E402
from jav.convert.safetensors_io import SafetensorsReader  # noqa: E402
from jav.models import patch, rope  # noqa: E402
from jav.runs import load_run  # noqa: E402

T = wan.SIZES["tiny"]
PATCH = (1, 2, 2)
# (latent frames, height, width) before patching, and whether timesteps are per sample or per token
SHAPES = [((3, 4, 6), "sample"), ((2, 4, 64), "sample"), ((5, 6, 4), "token")]
TEXT_LEN, PAD = 7, 3  # the second caption is 3 tokens shorter, zero-padded
RTOL = {"float32": 1e-5, "bfloat16": 2e-2}


def tiny_reference() -> "diffusers.WanTransformer3DModel":
    """diffusers' class at configs/wan.py's tiny sizes, seed 0, float32; its norms' scales
    and biases (ones and zeros when built) drawn too, so that their mapping is checked."""
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=PATCH,
        num_attention_heads=T["heads"],
        attention_head_dim=T["dim"] // T["heads"],
        in_channels=T["channels"],
        out_channels=T["channels"],
        text_dim=T["text_dim"],
        ffn_dim=T["ffn_dim"],
        num_layers=T["depth"],
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def reference():
    return tiny_reference()


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """The reference saved as diffusers saves it, converted by the command line -> (folder, run)."""
    root = tmp_path_factory.mktemp("wan")
    reference.save_pretrained(root / "hf")
    convert_cli(["wan", str(root / "hf"), "--workdir", str(root / "run")])
    return root / "hf", root / "run"


@pytest.fixture(scope="module")
def loaded(converted):
    """The converted run, loaded -> (cfg, model, step)."""
    return load_run(converted[1])


@pytest.fixture(scope="module")
def converted_bf16(reference, tmp_path_factory):
    """The reference in bfloat16, saved in several shards with their index and converted (the
    run's dtype is the weights') -> (model, run)."""
    root = tmp_path_factory.mktemp("wan_bf16")
    model = copy.deepcopy(reference).to(torch.bfloat16)
    model.save_pretrained(root / "hf", max_shard_size="20KB")
    assert len(list((root / "hf").glob("*.safetensors"))) > 1 and list((root / "hf").glob("*.safetensors.index.json"))
    convert.to_jav(root / "hf", root / "run")
    return model, root / "run"


def inputs(seed: int, shape, timesteps: str, dtype=np.float32) -> dict:
    """Wan-layout inputs: video [B, C, F, H, W], zero-padded captions, sigmas per sample [B]
    or per token [B, N]; and audio tokens for jav's other branch."""
    rng = np.random.default_rng(seed)
    b, (f, h, w) = 2, shape
    n = f * (h // PATCH[1]) * (w // PATCH[2])
    text = rng.normal(size=(b, TEXT_LEN, T["text_dim"]))
    text[1, TEXT_LEN - PAD :] = 0.0
    t = rng.uniform(size=(b,) if timesteps == "sample" else (b, n))
    cast = lambda a: np.asarray(a, np.float32).astype(dtype).astype(np.float32)  # values both sides hold exactly
    return dict(
        video=cast(rng.normal(size=(b, T["channels"], f, h, w))),
        text=cast(text),
        t=np.asarray(t, np.float32),
        audio=cast(rng.normal(size=(b, 6, T["audio_channels"]))),
    )


def run_reference(model, inp, dtype=torch.float32) -> np.ndarray:
    with torch.no_grad():
        out = model(
            hidden_states=torch.from_numpy(inp["video"]).to(dtype),
            timestep=torch.from_numpy(inp["t"] * np.float32(1000)),  # diffusers takes sigma x 1000
            encoder_hidden_states=torch.from_numpy(inp["text"]).to(dtype),
            return_dict=False,
        )[0]
    return out.float().numpy()


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, state, x, t, text, mask, pos):
    return nnx.merge(graphdef, state)(x, t, text, mask, pos=pos)


def run_jav(model, inp) -> dict:
    """jav's AVDiT on the same inputs -> {"video": [B, C, F, H, W] as diffusers lays it out, "audio": tokens}."""
    b, c, f, h, w = inp["video"].shape
    grid = (f, h // PATCH[1], w // PATCH[2])
    n = math.prod(grid)
    x = {"video": patch.patchify_video(np.moveaxis(inp["video"], 1, -1), PATCH), "audio": inp["audio"]}
    t_video = inp["t"] if inp["t"].ndim == 2 else np.repeat(inp["t"][:, None], n, axis=1)
    t = {"video": t_video, "audio": np.full(inp["audio"].shape[:2], 0.5, np.float32)}
    audio_t = np.arange(inp["audio"].shape[1], dtype=np.float32) * 0.5
    pos = {"video": rope.wan_video_positions(*grid), "audio": np.stack([audio_t, 0 * audio_t, 0 * audio_t], -1)}
    mask = np.ones(inp["text"].shape[:2], bool)
    graphdef, state = nnx.split(model)
    out = jax.tree.map(np.asarray, forward(graphdef, state, x, t, inp["text"], mask, pos))
    video = patch.unpatchify_video(out["video"], grid, PATCH, c)
    return {"video": np.moveaxis(np.asarray(video), -1, 1), "audio": out["audio"]}


def relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_rope_matches_diffusers():
    """jav's "wan" layout rotates each pair of a head by Wan's angle: diffusers' cos / sin
    tables (computed in float64) for a grid, at the real models' head dimension."""
    assert rope.wan_axis_pairs(128) == (22, 21, 21)
    grid = (5, 7, 31)
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    ref = WanRotaryPosEmbed(128, PATCH, 1024)
    cos, sin = ref(torch.zeros(1, 1, grid[0], 2 * grid[1], 2 * grid[2]))  # [1, N, 1, Dh], each value twice
    angles = np.asarray(rope.angles_for(wan.model().rope, rope.wan_video_positions(*grid)[None], 12, 128))[0]  # [N, Dh/2]
    np.testing.assert_allclose(np.cos(angles), cos[0, :, 0, 0::2].numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.sin(angles), sin[0, :, 0, 1::2].numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape,timesteps", SHAPES)
def test_wan_parity_float32(reference, loaded, shape, timesteps):
    cfg, model, step = loaded
    assert step == 0 and cfg.model.depth == T["depth"] and cfg.model.rope.layout == "wan" and cfg.model.joint.mode == "none"
    inp = inputs(1, shape, timesteps)
    want = run_reference(reference, inp)
    got = run_jav(model, inp)
    rel = relative_error(got["video"], want)
    print(f"float32 shape={shape} timesteps per {timesteps}: max abs {np.abs(got['video'] - want).max():.2e}, max rel {rel:.2e}")
    assert got["video"].shape == want.shape and rel <= RTOL["float32"], (shape, rel)
    # the audio branch beside it does not change the video (joint.mode "none")
    other = run_jav(model, dict(inp, audio=-2.0 * inp["audio"]))
    np.testing.assert_array_equal(other["video"], got["video"])


@pytest.mark.parametrize("shape,timesteps", SHAPES[:2])
def test_wan_parity_bfloat16(reference, converted_bf16, shape, timesteps):
    ref_bf16, run = converted_bf16
    cfg, model, _ = load_run(run)
    assert cfg.model.param_dtype == cfg.model.dtype == "bfloat16"
    inp = inputs(2, shape, timesteps, dtype=jax.numpy.bfloat16)
    want = run_reference(ref_bf16, inp, torch.bfloat16)
    got = run_jav(model, inp)["video"]
    rel, rel_f32 = relative_error(got, want), relative_error(got, run_reference(reference, inp))
    print(f"bfloat16 shape={shape}: max rel {rel:.2e} against diffusers in bfloat16, {rel_f32:.2e} against float32")
    assert rel <= RTOL["bfloat16"], (shape, rel)


def test_round_trip_is_bit_exact(converted, loaded, tmp_path):
    hf, run = converted
    cfg, model, _ = loaded
    convert_cli(["wan-export", str(run), "--out", str(tmp_path / "export")])
    src, back = SafetensorsReader(hf), SafetensorsReader(tmp_path / "export")
    assert src.names() == back.names()
    for name in src.names():
        assert back.dtype(name) == src.dtype(name), name
        np.testing.assert_array_equal(back[name], src[name], err_msg=name)
    hf_cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert json.loads(convert.model_config(hf_cfg).to_json()) == json.loads(cfg.model.to_json())
    # diffusers builds its class from the exported config and takes the tensors as they are
    exported = diffusers.WanTransformer3DModel.from_config(hf_cfg)
    exported.load_state_dict({name: torch.from_numpy(back[name]) for name in back.names()}, strict=True)

    convert.to_jav(tmp_path / "export", tmp_path / "run2")  # the audio branch from the same seed
    _, model2, _ = load_run(tmp_path / "run2")
    flat1, flat2 = nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(model2))
    assert [p for p, _ in flat1] == [p for p, _ in flat2]
    for (path, a), (_, b) in zip(flat1, flat2):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(path))


def test_export_refuses_a_video_branch_wan_cannot_hold():
    cfg = wan.get_config("tiny")
    convert.check_exportable(cfg.model)
    cfg.model.norm = "rms"
    with pytest.raises(ValueError, match="model.norm='rms'"):
        convert.check_exportable(cfg.model)


def test_unsupported_option_is_named():
    hf = dict(tiny_reference().config)
    hf["image_dim"] = 1280
    with pytest.raises(ValueError, match="image_dim=1280"):
        convert.model_config(hf)


@pytest.mark.parametrize("size", ["1.3b", "14b"])
def test_full_size_tensor_map(size):
    """Wan2.1-T2V-1.3B and -14B: every tensor of diffusers' class at that size (built on the
    meta device, no memory) has a jav parameter of configs/wan.py:SIZE of matching shape, and
    the video branch has exactly diffusers' parameter count."""
    s = wan.SIZES[size]
    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(
            num_attention_heads=s["heads"], attention_head_dim=s["dim"] // s["heads"], ffn_dim=s["ffn_dim"], num_layers=s["depth"]
        )
    hf = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert hf == convert.hf_shapes(dict(ref.config))
    cfg = convert.model_config(dict(ref.config))
    assert json.loads(cfg.to_json()) == json.loads(wan.get_config(size).model.to_json())
    _, state = convert.abstract_params(cfg)
    flat = {p: v.get_value().shape for p, v in nnx.to_flat_state(state)}
    entries = convert.tensor_map(cfg.depth)
    assert sorted(e.hf for e in entries) == sorted(hf)
    video = {p for p in flat if "audio" not in p}
    assert {e.path for e in entries} == video
    for e in entries:
        shape = flat[e.path][1:] if e.layer is not None else flat[e.path]
        assert math.prod(hf[e.hf]) == math.prod(shape), e
    count = sum(math.prod(flat[p]) for p in video)
    assert count == sum(math.prod(v) for v in hf.values())
    print(
        f"Wan {size}: {count / 1e9:.3f} B parameters in the video branch, {sum(math.prod(flat[p]) for p in set(flat) - video) / 1e6:.1f} M in the audio branch"
    )


def test_token_layout_gives_wan_positions():
    """jav's loops place a Wan run's tokens as Wan does: each video token at its latent frame,
    row and column; each audio token at its time in latent frames, so that a sound and the
    frame of its instant share the temporal phase of cross-modal attention."""
    from jav.clip_tokens import TokenLayout

    cfg = wan.get_config("tiny")
    layout = TokenLayout.from_config(cfg)
    pos = layout.pos
    np.testing.assert_array_equal(pos["video"][0], rope.wan_video_positions(*layout.grid))
    a = np.asarray(pos["audio"][0])
    seconds = cfg.data.audio_latent_shape[0] / cfg.data.audio_rate
    assert a[:, 1:].max() == 0.0 and a[0, 0] >= 0.0
    # the last audio token sits inside the clip's span of latent frames (0 .. grid t)
    assert layout.grid[0] * 0.8 < a[-1, 0] <= layout.grid[0] and a[-1, 0] == pytest.approx(
        float(np.asarray(patch.audio_positions(patch.uniform_frame_times(layout.audio_shape[0], layout.audio_frame_rate), layout.audio_patch))[-1, 0])
        * layout.grid[0]
        / seconds
    )
