"""LTX-2's vocoder in jav: a small random diffusers `LTX2Vocoder` (LTX-2.0's structure: five
upsampling stages, three residual blocks each) loaded by `jav.convert.ltx2_vocoder` gives
diffusers' waveform from the same mel spectrogram, in float32 and in bfloat16."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder  # noqa: E402

from jav.convert import ltx2_vocoder  # noqa: E402

SMALL = dict(in_channels=2 * 8, hidden_channels=32, out_channels=2)  # stereo 8-bin mel, LTX-2.0's stages and kernels


def reference():
    torch.manual_seed(0)
    return LTX2Vocoder(**SMALL).eval()


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_vocoder_matches_diffusers(dtype, tolerance):
    ref = reference().to(getattr(torch, dtype))
    mel = np.random.default_rng(0).normal(size=(2, 2, 6, 8)).astype(np.float32)  # [B, channels, frames, mel bins]
    with torch.no_grad():
        want = ref(torch.from_numpy(mel).to(getattr(torch, dtype))).float().numpy()
    tensors = {k: v.detach().float().numpy() for k, v in ref.state_dict().items()}
    jav = ltx2_vocoder.vocoder_from_tensors(tensors, dict(ref.config), dtype=dtype)
    got = np.asarray(jav(np.asarray(mel, dtype)), np.float32)
    assert got.shape == want.shape == (2, 2, 6 * 240)  # 6 frames x the 240-fold upsampling (16 kHz hop 160 -> 24 kHz)
    assert float(np.abs(got - want).max()) / float(np.abs(want).max()) <= tolerance


def test_ltx23_options_are_refused_by_name():
    with pytest.raises(ValueError, match="act_fn"):
        ltx2_vocoder.config_from_diffusers({"act_fn": "snakebeta", "antialias": True})
    ref = reference()
    tensors = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:, :4]
    with pytest.raises(ValueError, match="conv_in.weight has shape"):
        ltx2_vocoder.vocoder_from_tensors(tensors, dict(ref.config))
