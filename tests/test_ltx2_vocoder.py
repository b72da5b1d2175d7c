"""LTX-2's vocoders in jav: small random diffusers `LTX2Vocoder`s (LTX-2.0's structure: five
upsampling stages, three residual blocks each; and with snake activations between
anti-aliasing resamplers) and an `LTX2VocoderWithBWE` (LTX-2.3: a second generator on the
first's causal log-mel, added to its waveform resampled 16 -> 48 kHz), loaded by
`jav.convert.ltx2_vocoder`, give diffusers' waveform from the same mel spectrogram."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE  # noqa: E402

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


def perturbed(model):
    """Snake parameters and the latent filters start at fixed values: move every parameter (not the buffers)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("act_fn", ["snakebeta", "snake"])
def test_snake_vocoder_with_antialiasing_matches_diffusers(act_fn):
    torch.manual_seed(0)
    ref = perturbed(
        LTX2Vocoder(**SMALL, upsample_kernel_sizes=[11, 4], upsample_factors=[5, 2], act_fn=act_fn, antialias=True, final_act_fn=None, final_bias=False)
    )
    mel = np.random.default_rng(0).normal(size=(1, 2, 5, 8)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(mel)).numpy()
    jav = ltx2_vocoder.vocoder_from_tensors({k: v.numpy() for k, v in ref.state_dict().items()}, dict(ref.config))
    got = np.asarray(jav(mel))
    assert got.shape == want.shape == (1, 2, 50)
    assert float(np.abs(got - want).max()) / float(np.abs(want).max()) <= 1e-5


def test_bandwidth_extension_matches_diffusers():
    torch.manual_seed(0)
    small = dict(
        in_channels=16,
        hidden_channels=32,
        upsample_kernel_sizes=[11, 4, 4, 4],
        upsample_factors=[5, 2, 2, 4],
        bwe_in_channels=16,
        bwe_hidden_channels=16,
        bwe_upsample_kernel_sizes=[12, 4, 4],
        bwe_upsample_factors=[6, 2, 2],
        filter_length=32,
        hop_length=8,
        window_length=32,
        num_mel_channels=8,
    )
    ref = perturbed(LTX2VocoderWithBWE(**small))
    with torch.no_grad():  # the STFT bases and mel filters are checkpoint buffers (zeros until loaded): give them values
        n = small["filter_length"]
        k, t = np.arange(n // 2 + 1)[:, None], np.arange(n)[None, :]
        window = np.hanning(n + 1)[:n]
        basis = np.concatenate([np.cos(2 * np.pi * k * t / n) * window, -np.sin(2 * np.pi * k * t / n) * window])[:, None, :]
        ref.mel_stft.stft_fn.forward_basis.copy_(torch.from_numpy(basis.astype(np.float32)))
        ref.mel_stft.mel_basis.copy_(torch.from_numpy(np.abs(np.random.default_rng(3).normal(size=(8, n // 2 + 1))).astype(np.float32)))
    mel = np.random.default_rng(0).normal(size=(1, 2, 4, 8)).astype(np.float32)  # 4 frames -> 320 samples at 16 kHz
    with torch.no_grad():
        want = ref(torch.from_numpy(mel)).numpy()
    jav = ltx2_vocoder.vocoder_from_tensors({k: v.numpy() for k, v in ref.state_dict().items()}, dict(ref.config))
    got = np.asarray(jav(mel))
    assert got.shape == want.shape == (1, 2, 960)  # 48 kHz
    assert float(np.abs(got - want).max()) / float(np.abs(want).max()) <= 1e-5


def test_bad_tensors_are_refused_by_name():
    ref = reference()
    tensors = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:, :4]
    with pytest.raises(ValueError, match="conv_in.weight has shape"):
        ltx2_vocoder.vocoder_from_tensors(tensors, dict(ref.config))
