"""LTX-2's video VAE in jav: small random diffusers `AutoencoderKLLTX2Video`s loaded by
`jav.convert.ltx2_video_vae` encode to diffusers' posterior and decode to its video, in
float32 and in bfloat16. Three configurations between them run every block jav has: LTX-2's
own (space-to-depth downsamplers, residual depth-to-space upsamplers, causal, the decoder
reflect-padded); stride-2 convolution and temporal / spatial downsamplers, a level without
one, a non-causal replicate-padded encoder, spatial / temporal upsamplers, one without its
residual, timestep conditioning and noise injection (diffusers' noise replaced by jav's
draws); upsamplers that keep the channels, residual blocks that change them (a layer norm
and a 1x1x1 shortcut), a level without an upsampler, a non-causal zero-padded decoder."""

import itertools

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers import AutoencoderKLLTX2Video  # noqa: E402

from jav.convert import ltx2_video_vae  # noqa: E402
from jav.models.ltx2_video_vae import injected_noise  # noqa: E402

TINY = dict(layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1))
# name -> (diffusers' arguments, the clip's height and width: 2 latent pixels a side)
CASES = {
    "LTX-2's blocks": (
        dict(
            latent_channels=8,
            block_out_channels=(8, 16, 32, 32),
            decoder_block_out_channels=(8, 16, 32),
            layers_per_block=(1, 2, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 2, 1),
        ),
        64,
    ),
    "other resamplers, timestep conditioning, noise": (
        dict(
            TINY,
            latent_channels=4,
            patch_size=2,
            block_out_channels=(4, 8, 8, 16),
            downsample_type=("conv", "temporal", "spatial", "spatiotemporal"),
            spatio_temporal_scaling=(True, True, False, True),
            encoder_causal=False,
            encoder_spatial_padding_mode="replicate",
            decoder_block_out_channels=(8, 16, 32),
            upsample_type=("spatial", "temporal", "spatiotemporal"),
            upsample_residual=(True, True, False),
            timestep_conditioning=True,
            decoder_inject_noise=(True, False, True, True),
        ),
        16,
    ),
    "channel-changing residual blocks, non-causal decoder": (
        dict(
            TINY,
            latent_channels=4,
            patch_size=2,
            block_out_channels=(4, 8, 8, 16),
            decoder_block_out_channels=(4, 12, 16),
            upsample_factor=(1, 1, 2),
            decoder_spatio_temporal_scaling=(False, True, True),
            upsample_type=("spatiotemporal", "spatial", "temporal"),
            decoder_causal=False,
            decoder_spatial_padding_mode="zeros",
        ),
        32,
    ),
}


def reference(**options):
    torch.manual_seed(0)
    model = AutoencoderKLLTX2Video(**options).eval()
    with torch.no_grad():  # tables, noise scales and statistics start at 0 / 1: make every parameter count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for b in model.buffers():
            b.add_(0.05 * torch.randn_like(b))
    return model


def relative(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float32) - want).max()) / float(np.abs(want).max())


@pytest.mark.parametrize("case", list(CASES))
# float32: measured 5e-7-1.2e-6 on the posterior, 1.7e-6-3.4e-6 on the decoded video.
# bfloat16: both implementations round at every layer, in other orders; each ends 0.7-2.8% from
# float32, and they end 0.7-1.2% apart on the posterior's mean, 0.8-1.7% on its log-variance and
# 1.5-2.7% on the decoded video, so 3e-2
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_video_vae_matches_diffusers(case, dtype, tolerance, monkeypatch):
    options, size = CASES[case]
    ref = reference(**options).to(getattr(torch, dtype))
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 3, 9, size, size)).astype(np.float32)  # [B, RGB, frames, height, width]
    latents = rng.normal(size=(2, options["latent_channels"], 2, 2, 2)).astype(np.float32)
    timestep = np.array([0.05, 0.3], np.float32) if ref.config.timestep_conditioning else None
    noise_key = jax.random.key(7) if any(ref.config.decoder_inject_noise) else None
    draws = itertools.count()

    def jav_noise(shape, generator=None, device=None, dtype=None):  # diffusers' torch.randn in its noise injection
        return torch.from_numpy(np.array(injected_noise(noise_key, next(draws), tuple(shape)))).to(dtype)

    with torch.no_grad():
        posterior = ref.encode(torch.from_numpy(video).to(ref.dtype)).latent_dist
        with monkeypatch.context() as patch:
            patch.setattr(torch, "randn", jav_noise)
            decoded = ref.decode(torch.from_numpy(latents).to(ref.dtype), None if timestep is None else torch.from_numpy(timestep)).sample
    tensors = {k: v.detach().float().numpy() for k, v in ref.state_dict().items()}
    jav = ltx2_video_vae.video_vae_from_tensors(tensors, dict(ref.config), dtype=dtype)
    mean, logvar = nnx.jit(lambda vae, x: vae.encode(x))(jav, np.asarray(video, dtype))
    want_mean, want_logvar = posterior.mean.float().numpy(), posterior.logvar.float().numpy()
    assert mean.shape == want_mean.shape and relative(mean, want_mean) <= tolerance
    assert relative(logvar, want_logvar) <= tolerance
    out = nnx.jit(lambda vae, z, t, key: vae.decode(z, t, key))(jav, np.asarray(latents, dtype), timestep, noise_key)
    want = decoded.float().numpy()
    assert out.shape == want.shape and relative(out, want) <= tolerance
    assert relative(jav.latents_std[...], ref.latents_std.float().numpy()) <= tolerance


@pytest.mark.parametrize(
    "hf, match",
    [
        ({"patch_size_t": 2}, "patch_size_t"),
        ({"down_block_types": ["LTXVideoDownBlock3D"] * 4}, "down_block_types"),
        ({"upsample_type": ["spatial", "temporal", "nearest"]}, "upsample_type"),
        ({"decoder_spatial_padding_mode": "mirror"}, "padding mode"),
        ({"use_quant_conv": True}, "use_quant_conv"),
        # level 1 changes channels 8 -> 12 in a residual block that would be conditioned on the timestep
        (dict(decoder_block_out_channels=(4, 12, 16), upsample_factor=(1, 1, 2), timestep_conditioning=True), "timestep_conditioning"),
    ],
)
def test_unsupported_options_are_refused(hf, match):
    with pytest.raises(ValueError, match=match):
        ltx2_video_vae.config_from_diffusers(hf)


def test_the_full_size_vae_has_diffusers_parameter_names_and_shapes():
    """LTX-2's own configuration (diffusers' defaults, the decoder's timestep conditioning on:
    every tensor of the default and its tables), built without memory on both sides."""
    from jav.convert.torch_named import jav_path
    from jav.models.ltx2_video_vae import LTX2VideoVAE

    with torch.device("meta"):
        ref = AutoencoderKLLTX2Video(timestep_conditioning=True)
    want = {jav_path(name): tuple(p.shape) for name, p in ref.state_dict().items()}
    cfg = ltx2_video_vae.config_from_diffusers(dict(ref.config))
    state = nnx.state(nnx.eval_shape(lambda: LTX2VideoVAE(cfg, rngs=nnx.Rngs(0))))
    got = {path: tuple(v.get_value().shape) for path, v in nnx.to_flat_state(state)}
    assert got == want and len(want) > 150
