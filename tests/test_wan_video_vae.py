"""Wan's video VAE in jav: small random diffusers `AutoencoderKLWan`s (Wan 2.1's blocks; Wan
2.2's residual levels with 2x2 patches and a wider decoder), saved with `save_pretrained`
and loaded by `jav.convert.wan_video_vae.load_video_vae`, encode to diffusers' posterior
(mean, log-variance and a sample from the same noise) and decode to its video, in float32
and bfloat16, on clips of 1 to 13 frames and non-square frames. diffusers encodes the first
frame and then chunks of 4 frames and decodes latent frame by latent frame, carrying a
cache of frames between chunks; jav runs whole clips, so these clips (13 frames: 4 latent
frames, the first with every cache full) show the two equal. Unsupported options are
refused by name; every tensor of the full-size Wan 2.1 and 2.2 VAEs has its jav parameter."""

import copy

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.models.autoencoders import vae as diffusers_vae  # noqa: E402

from jav.convert import wan_video_vae  # noqa: E402
from jav.models.wan_video_vae import denormalize_latents, normalize_latents, sample_posterior  # noqa: E402

# name -> (diffusers' arguments, [(frames, height, width)] in float32, the bfloat16 clip)
CASES = {
    "Wan 2.1": (
        dict(base_dim=8, z_dim=4, num_res_blocks=1),  # Wan 2.1's levels, time downsampled at the last two
        [(1, 16, 24), (5, 24, 16), (13, 16, 24)],
        (13, 16, 24),
    ),
    "Wan 2.2: residual, patches": (
        dict(
            base_dim=8,
            decoder_base_dim=12,
            z_dim=6,
            num_res_blocks=1,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            temperal_downsample=(True, False, True),
        ),
        [(1, 32, 48), (9, 48, 32)],
        (9, 48, 32),
    ),
}
SHAPES = [(case, shape) for case, (_, shapes, _) in CASES.items() for shape in shapes]
ENCODE = nnx.jit(lambda vae, x: vae.encode(x))
DECODE = nnx.jit(lambda vae, z: vae.decode(z))


def reference(**options) -> AutoencoderKLWan:
    """diffusers' class, seed 0, float32; the norms' gains (ones when built) and the latent
    statistics drawn too, so that their mapping is checked."""
    torch.manual_seed(0)
    z = options["z_dim"]
    model = AutoencoderKLWan(**options, latents_mean=torch.randn(z).tolist(), latents_std=(1 + torch.rand(z)).tolist()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """case -> (diffusers' model in float32, in bfloat16, jav's loaded from the saved folder in float32, in bfloat16)."""
    out = {}
    for case, (options, _, _) in CASES.items():
        ref = reference(**options)
        folder = tmp_path_factory.mktemp("wan_vae")
        ref.save_pretrained(folder)
        out[case] = (ref, copy.deepcopy(ref).to(torch.bfloat16), wan_video_vae.load_video_vae(folder), wan_video_vae.load_video_vae(folder, "bfloat16"))
    return out


def inputs(ref, shape, seed=0):
    """A clip [2, C, F, H, W] in [-1, 1] and latents [2, z_dim, 1 + (F - 1) / 4, ...] for it (both bfloat16-exact)."""
    frames, h, w = shape
    rng = np.random.default_rng(seed)
    p, c = ref.config.patch_size or 1, ref.config.in_channels
    clip = rng.uniform(-1, 1, size=(2, c // (p * p), frames, h, w))
    down = p * 2 ** (len(ref.config.dim_mult) - 1)
    latents = rng.normal(size=(2, ref.config.z_dim, 1 + (frames - 1) // 4, h // down, w // down))
    exact = lambda a: torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16).float().numpy()
    return exact(clip), exact(latents)


def run_reference(ref, clip, latents, noise=None, monkeypatch=None):
    """diffusers' (mean, logvar, sample or None, decoded video) as float32 arrays; `noise`: the sample's N(0, 1) draw."""
    dtype = ref.dtype
    with torch.no_grad():
        posterior = ref.encode(torch.from_numpy(clip).to(dtype)).latent_dist
        sample = None
        if noise is not None:
            monkeypatch.setattr(diffusers_vae, "randn_tensor", lambda shape, **kw: torch.from_numpy(noise).to(kw["dtype"]))
            sample = posterior.sample().float().numpy()
        video = ref.decode(torch.from_numpy(latents).to(dtype)).sample
    return posterior.mean.float().numpy(), posterior.logvar.float().numpy(), sample, video.float().numpy()


def relative(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float32) - want).max()) / float(np.abs(want).max())


@pytest.mark.parametrize("case, shape", SHAPES)
def test_float32_matches_diffusers(models, case, shape, monkeypatch):
    # measured 2.9e-7-5.9e-7 (mean), 3.5e-7-7.3e-7 (logvar), at most 2.2e-7 (sample), 9.3e-7-3.0e-6 (decoded video)
    ref, _, jav, _ = models[case]
    clip, latents = inputs(ref, shape)
    key = jax.random.key(3)
    noise = np.array(jax.random.normal(key, latents.shape))
    want_mean, want_logvar, want_sample, want_video = run_reference(ref, clip, latents, noise, monkeypatch)
    mean, logvar = ENCODE(jav, clip)
    assert mean.shape == want_mean.shape == latents.shape  # 1 + 4k frames -> 1 + k latent frames
    assert relative(mean, want_mean) <= 1e-5 and relative(logvar, want_logvar) <= 1e-5
    assert relative(sample_posterior(key, mean, logvar), want_sample) <= 1e-5
    video = DECODE(jav, latents)
    assert video.shape == want_video.shape == clip.shape
    assert np.mean(np.abs(want_video) >= 1.0) < 0.05  # diffusers clamps to [-1, 1]: nearly all values compared are not clamped
    assert relative(video, want_video) <= 1e-5


@pytest.mark.parametrize("case", list(CASES))
def test_bfloat16_matches_diffusers(models, case):
    """Every convolution, norm and SiLU rounds as PyTorch's (float32 sums, rounded once), but
    sums in another order round otherwise now and then (1 in 10^4 of a convolution's outputs
    here), and after a few such layers the two runs round independently: diffusers' bfloat16
    is itself 0.9-1.0% from its float32 on the posterior's mean and 2.9-4.1% on the decoded
    video (max |a-b| / max |b|; about 2% rms of the video). Measured between jav's bfloat16
    and diffusers': 0.7-1.0% (mean), 0.8-1.2% (logvar), 3.3-3.7% (video; up to 6% on other
    clips and seeds). So the posterior within 2e-2; the video within 6e-2; and jav's
    bfloat16 no farther from float32 than diffusers' bfloat16 is, times 1.5 (measured: 0.7-1.0
    times)."""
    ref32, ref16, _, jav = models[case]
    clip, latents = inputs(ref32, CASES[case][2], seed=1)
    mean32, _, _, video32 = run_reference(ref32, clip, latents)
    want_mean, want_logvar, _, want_video = run_reference(ref16, clip, latents)
    mean, logvar = ENCODE(jav, clip.astype("bfloat16"))
    assert relative(mean, want_mean) <= 2e-2 and relative(logvar, want_logvar) <= 2e-2
    assert relative(mean, mean32) <= 1.5 * relative(want_mean, mean32)
    video = DECODE(jav, latents.astype("bfloat16"))
    assert relative(video, want_video) <= 6e-2
    assert relative(video, video32) <= 1.5 * relative(want_video, video32)


def test_latent_statistics_normalise_as_wans_pipelines(models):
    """The config's statistics, loaded; Wan's pipelines normalise with (z - mean) * (1 / std)
    and undo it with z / (1 / std) + mean (diffusers' pipeline_wan.py, pipeline_wan_i2v.py)."""
    ref, _, jav, _ = models["Wan 2.1"]
    mean, std = np.asarray(ref.config.latents_mean, np.float32), np.asarray(ref.config.latents_std, np.float32)
    assert jav.latents_mean == tuple(ref.config.latents_mean) and jav.latents_std == tuple(ref.config.latents_std)
    z = np.random.default_rng(2).normal(size=(2, len(mean), 3, 2, 3)).astype(np.float32)
    per_channel = lambda v: v.reshape(1, -1, 1, 1, 1)
    want = (z - per_channel(mean)) * (1 / per_channel(std))
    np.testing.assert_allclose(normalize_latents(z, jav.latents_mean, jav.latents_std), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        denormalize_latents(want, jav.latents_mean, jav.latents_std), want / (1 / per_channel(std)) + per_channel(mean), rtol=1e-6, atol=1e-6
    )


def test_encode_refuses_clips_diffusers_would_cut(models):
    jav = models["Wan 2.1"][2]
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):  # diffusers drops the frames after the last whole chunk of 4
        jav.encode(np.zeros((1, 3, 4, 16, 16), np.float32))
    with pytest.raises(ValueError, match="divisible by 8"):
        jav.encode(np.zeros((1, 3, 5, 16, 20), np.float32))


@pytest.mark.parametrize(
    "hf, match",
    [
        ({"_class_name": "AutoencoderKLLTX2Video"}, "_class_name"),
        ({"attn_scales": [0.5]}, "attn_scales"),
        ({"temperal_downsample": [True, True, True]}, "at most 2 temporal levels"),
        ({"temperal_downsample": [True, True]}, "one entry per level"),
        ({"z_dim": 4}, "latents_mean has 16 entries"),
        ({"clip_output": True}, "clip_output"),
    ],
)
def test_unsupported_options_are_refused(hf, match):
    with pytest.raises(ValueError, match=match):
        wan_video_vae.config_from_diffusers(hf)


# Wan 2.2 TI2V-5B's VAE as its diffusers config.json gives it (its latent statistics aside)
WAN22 = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)


@pytest.mark.parametrize("options", [{}, WAN22], ids=["Wan 2.1", "Wan 2.2"])
def test_the_full_size_vae_has_diffusers_parameter_names_and_shapes(options):
    """diffusers' defaults (Wan 2.1's VAE) and Wan 2.2's, built without memory on both sides."""
    from jav.convert.torch_named import jav_path
    from jav.models.wan_video_vae import WanVideoVAE

    with torch.device("meta"):
        ref = AutoencoderKLWan(**options, **({"latents_mean": [0.0] * 48, "latents_std": [1.0] * 48} if options else {}))
    want = {jav_path(wan_video_vae.jav_name(name)): tuple(p.shape) for name, p in ref.state_dict().items()}
    cfg = wan_video_vae.config_from_diffusers(dict(ref.config))
    state = nnx.state(nnx.eval_shape(lambda: WanVideoVAE(cfg, rngs=nnx.Rngs(0))))
    got = {path: tuple(v.get_value().shape) for path, v in nnx.to_flat_state(state)}
    assert got == want and len(want) > 190


def test_the_defaults_are_diffusers_defaults():
    """jav's config defaults (Wan 2.1's VAE, its latent statistics included) are diffusers' class defaults."""
    from jav.models.wan_video_vae import video_vae_config

    with torch.device("meta"):
        ref = AutoencoderKLWan()
    assert wan_video_vae.config_from_diffusers(dict(ref.config)).to_dict() == video_vae_config().to_dict()
