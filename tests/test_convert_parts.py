"""Published parts as jav runs: small random diffusers models of LTX-2's video VAE, audio VAE,
vocoder (plain and with bandwidth extension) and text connectors and of Wan's video VAE, saved
with `save_pretrained` and imported by `python -m jav.convert <part>`, load with
`jav.runs.load_autoencoder` as the module the in-process loader builds (the same variables
and outputs, bit for bit); `python -m jav.convert export` gives back diffusers' config.json and
every tensor of its state dict bit for bit, which diffusers loads with no key missing or
unexpected. A folder without config.json, another part's folder and training a load-only
kind are refused by name."""

import json
import re

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

import test_ltx2_audio_vae as audio_vae_case  # noqa: E402
import test_ltx2_text as text_case  # noqa: E402
import test_ltx2_video_vae as video_vae_case  # noqa: E402
import test_ltx2_vocoder as vocoder_case  # noqa: E402
import test_wan_video_vae as wan_vae_case  # noqa: E402
from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE  # noqa: E402

from jav.convert import ltx2_audio_vae, ltx2_text, ltx2_video_vae, ltx2_vocoder, wan_video_vae  # noqa: E402
from jav.convert.__main__ import main as convert  # noqa: E402
from jav.convert.safetensors_io import SafetensorsReader  # noqa: E402
from jav.models.autoencoders import model_module  # noqa: E402
from jav.runs import load_autoencoder  # noqa: E402


# two upsampling stages of one residual block each (test_ltx2_vocoder's SMALL: five stages of three)
STAGES = dict(upsample_kernel_sizes=[20, 16], upsample_factors=[10, 8], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3]])


def vocoder():
    torch.manual_seed(0)
    return vocoder_case.perturbed(LTX2Vocoder(**vocoder_case.SMALL, **STAGES))


def bwe_vocoder():
    """A small LTX2VocoderWithBWE (a nested jav config: two generators)."""
    torch.manual_seed(0)
    small = dict(
        in_channels=16,
        hidden_channels=32,
        **STAGES,
        bwe_in_channels=16,
        bwe_hidden_channels=16,
        bwe_upsample_kernel_sizes=[12, 8],
        bwe_upsample_factors=[6, 4],
        bwe_resnet_kernel_sizes=[3],
        bwe_resnet_dilations=[[1, 3]],
        filter_length=32,
        hop_length=8,
        window_length=32,
        num_mel_channels=8,
    )
    model = vocoder_case.perturbed(LTX2VocoderWithBWE(**small))
    with torch.no_grad():  # the STFT bases and mel filters are checkpoint buffers (zeros until loaded): give them values
        n = small["filter_length"]
        k, t = np.arange(n // 2 + 1)[:, None], np.arange(n)[None, :]
        basis = np.concatenate([np.cos(2 * np.pi * k * t / n), -np.sin(2 * np.pi * k * t / n)])[:, None, :] * np.hanning(n + 1)[:n]
        model.mel_stft.stft_fn.forward_basis.copy_(torch.from_numpy(basis.astype(np.float32)))
        model.mel_stft.mel_basis.copy_(torch.from_numpy(np.abs(np.random.default_rng(3).normal(size=(8, n // 2 + 1))).astype(np.float32)))
    return model


def _normal(shape):
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


STATES = np.random.default_rng(1).normal(size=(2, text_case.L, text_case.C, text_case.F)).astype(np.float32)
MASK = np.array([[1] * text_case.L, [0] * 3 + [1] * (text_case.L - 3)])
# command -> (the tiny diffusers model, jav's in-process loader, jav's outputs of the model on a small input)
CASES = {
    "ltx2-video-vae": (
        lambda: video_vae_case.reference(**video_vae_case.CASES["LTX-2's blocks"][0]),
        ltx2_video_vae.load_video_vae,
        lambda vae: vae.encode(_normal((1, 3, 9, 64, 64))),
    ),
    "ltx2-audio-vae": (
        lambda: audio_vae_case.reference(**audio_vae_case.CASES["causal, pixel norm"]),
        ltx2_audio_vae.load_audio_vae,
        lambda vae: vae.encode(_normal((1, 2, 17, 16))),
    ),
    "ltx2-vocoder": (vocoder, ltx2_vocoder.load_vocoder, lambda vocoder: vocoder(_normal((1, 2, 6, 8)))),
    "ltx2-vocoder (with BWE)": (bwe_vocoder, ltx2_vocoder.load_vocoder, lambda vocoder: vocoder(_normal((1, 2, 4, 8)))),
    "ltx2-connectors": (lambda: text_case.reference(**text_case.CASES["ltx2.3, per-stream projections"]), ltx2_text.load_connectors, lambda c: c(STATES, MASK)),
    "wan-vae": (
        lambda: wan_vae_case.reference(**wan_vae_case.CASES["Wan 2.1"][0]),
        wan_video_vae.load_video_vae,
        lambda vae: vae.encode(_normal((1, 3, 5, 16, 24))),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_part_converts_to_a_run_and_back_bit_for_bit(case, tmp_path):
    make, load, outputs = CASES[case]
    command = case.split()[0]
    ref = make()
    ref.save_pretrained(tmp_path / "hf")
    convert([command, str(tmp_path / "hf"), "--workdir", str(tmp_path / "run")])

    cfg, model = load_autoencoder(tmp_path / "run")
    want = load(tmp_path / "hf")  # the weights' own dtype, float32
    assert cfg.model.dtype == "float32"
    assert nnx.graphdef(model) == nnx.graphdef(want)
    same = jax.tree.map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), nnx.state(model), nnx.state(want))
    assert all(jax.tree.leaves(same))
    apply = nnx.jit(outputs)
    for got, expected in zip(jax.tree.leaves(apply(model)), jax.tree.leaves(apply(want)), strict=True):
        assert np.isfinite(got).all() and np.array_equal(got, expected)

    convert(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "config.json").read_bytes() == (tmp_path / "hf" / "config.json").read_bytes()
    exported, state_dict = SafetensorsReader(tmp_path / "out"), ref.state_dict()
    assert exported.names() == sorted(state_dict)
    for name, tensor in state_dict.items():
        x = exported[name]
        assert x.shape == tuple(tensor.shape) and x.tobytes() == tensor.numpy().tobytes(), name
    _, info = type(ref).from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_the_dtype_flag_converts_the_weights(tmp_path, capsys):
    ref = audio_vae_case.reference(**audio_vae_case.CASES["causal, pixel norm"])
    ref.save_pretrained(tmp_path / "hf")
    convert(["ltx2-audio-vae", str(tmp_path / "hf"), "--workdir", str(tmp_path / "run"), "--dtype", "bfloat16"])
    cfg, model = load_autoencoder(tmp_path / "run", weights="params")
    want = ltx2_audio_vae.load_audio_vae(tmp_path / "hf", "bfloat16")
    assert cfg.model.dtype == "bfloat16"
    same = jax.tree.map(lambda a, b: a.dtype == b.dtype == np.dtype("bfloat16") and np.array_equal(a, b), nnx.state(model), nnx.state(want))
    assert all(jax.tree.leaves(same))
    with pytest.raises(SystemExit):
        convert(["ltx2-audio-vae", str(tmp_path / "hf"), "--workdir", str(tmp_path / "run2"), "--dtype", "bf16x"])
    assert "--dtype 'bf16x' is not a dtype" in capsys.readouterr().err


@pytest.mark.parametrize("options", [{}, wan_vae_case.WAN22], ids=["Wan 2.1", "Wan 2.2"])
def test_every_full_size_wan_vae_name_comes_back(options):
    """jav's names of the full-size Wan 2.1 and 2.2 VAEs' tensors (built without memory) give back diffusers'."""
    with torch.device("meta"):
        ref = AutoencoderKLWan(**options, **({"latents_mean": [0.0] * 48, "latents_std": [1.0] * 48} if options else {}))
    names = list(ref.state_dict())
    assert [wan_video_vae.diffusers_name(wan_video_vae.jav_name(n)) for n in names] == names
    assert sum(".resample.1." in n for n in names) > 4


def test_a_folder_without_config_json_is_refused_by_name(tmp_path, capsys):
    (tmp_path / "vae").mkdir()
    with pytest.raises(SystemExit) as stop:
        convert(["ltx2-video-vae", str(tmp_path / "vae"), "--workdir", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'vae' / 'config.json'} not found" in err and "diffusers model folder" in err
    assert not (tmp_path / "run").exists()


def test_another_parts_folder_names_its_command(tmp_path, capsys):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTX2Audio"}))
    with pytest.raises(SystemExit):
        convert(["ltx2-video-vae", str(tmp_path / "vae"), "--workdir", str(tmp_path / "run")])
    assert "python -m jav.convert ltx2-audio-vae" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["ltx2_video_vae", "ltx2_connectors", "wan_video_vae"])
def test_load_only_kinds_refuse_to_train(kind):
    with pytest.raises(ValueError, match=f"model.kind='{kind}' is a published model .* not trained"):
        model_module(kind).training_loss(None, {}, None, None)


@pytest.mark.parametrize("layout", ["ltx2", "wan"])
def test_export_sends_a_transformer_run_to_its_converter(layout, tmp_path, monkeypatch):
    from jav.convert import ltx2, wan

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"phase": "diffusion", "model": {"rope": {"layout": layout}}}))
    calls = []
    for module in (ltx2, wan):
        monkeypatch.setattr(module, "to_diffusers", lambda *args, name=module.__name__: calls.append((name, args)) or tmp_path / "out")
    convert(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--weights", "params", "--step", "3"])
    assert calls == [(f"jav.convert.{layout}", (str(tmp_path / "run"), str(tmp_path / "out"), "params", 3))]


@pytest.mark.parametrize(
    "config, match",
    [
        ({"phase": "diffusion", "model": {"rope": {"layout": "jav"}}}, "jav's own .model.rope.layout='jav'. has no diffusers format"),
        ({"phase": "autoencoder", "model": {"kind": "video_vae"}, "train": {}}, "model.kind='video_vae' is jav's own and has no diffusers format"),
    ],
)
def test_export_refuses_a_run_of_jav_s_own_model(config, match, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        convert(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert re.search(match, capsys.readouterr().err)
