"""The causal video VAE: causality, chunked and tiled paths against the whole
clip, still images, shapes at the default and LTX-2-like compressions, config
errors, and a few Adam steps on bounce-world clips."""

import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import video_vae as vae_configs
from jav.data.bounce import BounceParams, generate_clip
from jav.models import video_vae as V
from jav.sharding import LOGICAL_AXES
from xla_flags import COMPILER_OPTIONS

# one worker builds this module's trained tiny VAE (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("video_vae")

CT = 4  # time compression of the default config
FRAMES = 9  # 1 + 4k: three latent frames
STEPS = 24


def tiny():
    return vae_configs.vae(widths=(8, 8, 16, 16), blocks=1)


def clips(n, canvas=32, seed=0):
    """n bounce-world clips of FRAMES frames, as float32 in [-1, 1]: [n, T, S, S, 3]."""
    params = BounceParams(canvas=canvas, duration=FRAMES / 8)
    frames = np.stack([generate_clip(seed + i, params).frames for i in range(n)])
    return jnp.asarray(frames, jnp.float32) / 127.5 - 1.0


def encode(vae, x):
    """The whole clip in one jitted `vae.encode` call (no chunks)."""
    return V.encode_chunked(vae, x, chunk_latents=0)


def decode(vae, z):
    return V.decode_chunked(vae, z, chunk_latents=0)


def recon_error(vae, x):
    """Mean squared error of the reconstruction through the posterior mean, in pairs of clips."""
    return float(np.mean([jnp.mean((decode(vae, encode(vae, x[i : i + 2])[0]) - x[i : i + 2]) ** 2) for i in range(0, len(x), 2)]))


@pytest.fixture(scope="module")
def trained():
    """A tiny VAE after STEPS Adam steps on four clips, and its reconstruction
    error before and after. The other tests reuse it: trained weights make every
    residual branch non-zero (a fresh model's are exactly zero) and behave as a
    VAE does on real clips, which random weights do not."""
    vae = V.init_vae(tiny(), jax.random.key(0))
    x = clips(4)
    graphdef, state = nnx.split(vae)
    opt = optax.adam(3e-3)

    # compiled without backend optimisation: a third of the compile time for
    # steps about 1.5x slower, a good trade at this many steps
    @functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
    def step(state, opt_state, key):
        def loss_fn(s):
            recon, mean, logvar = nnx.merge(graphdef, s)(x, key)
            return jnp.mean((recon - x) ** 2) + 1e-4 * V.kl_divergence(mean, logvar)

        loss, grads = jax.value_and_grad(loss_fn)(state)
        updates, opt_state = opt.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    before = recon_error(vae, x)
    opt_state = opt.init(state)
    for i in range(STEPS):
        state, opt_state, _ = step(state, opt_state, jax.random.key(i))
    vae = nnx.merge(graphdef, state)
    return vae, before, recon_error(vae, x)


@pytest.fixture
def vae(trained):
    return trained[0]


def test_adam_steps_reduce_reconstruction_error(trained):
    _, before, after = trained
    print(f"reconstruction MSE before {before:.4f} after {after:.4f} ({STEPS} steps)")
    assert after < 0.3 * before, (before, after)


def test_encoder_and_decoder_are_causal(vae):
    x = clips(2)
    k = 5  # pixel frame 5 belongs to latent block ceil(5 / 4) = 2
    changed = x.at[:, k].set(-x[:, k])
    mean, _ = encode(vae, x)
    mean2, _ = encode(vae, changed)
    block = -(-k // CT)
    np.testing.assert_array_equal(np.asarray(mean[:, :block]), np.asarray(mean2[:, :block]))
    assert float(jnp.abs(mean[:, block] - mean2[:, block]).max()) > 1e-3

    # decoder: latent frame j makes pixel frames 1 + 4 (j - 1) .. 4 j, so changing
    # latent 2 leaves pixel frames 0..4 as they were
    out, out2 = decode(vae, mean), decode(vae, mean.at[:, 2].add(1.0))
    np.testing.assert_array_equal(np.asarray(out[:, :5]), np.asarray(out2[:, :5]))
    assert float(jnp.abs(out[:, 5] - out2[:, 5]).max()) > 1e-4


def test_temporal_chunks_equal_the_whole_clip(vae):
    x = clips(2)
    mean, logvar = encode(vae, x)
    mean_c, logvar_c = V.encode_chunked(vae, x, chunk_latents=1)  # chunks of 1, 4, 4 frames
    out = decode(vae, mean)
    out_c = V.decode_chunked(vae, mean, chunk_latents=1)
    diffs = [float(jnp.abs(a - b).max()) for a, b in ((mean, mean_c), (logvar, logvar_c), (out, out_c))]
    print(f"chunked vs whole max |diff|: mean {diffs[0]:.2e} logvar {diffs[1]:.2e} pixels {diffs[2]:.2e}")
    # float32 rounding only: the convolutions see the same windows, but XLA
    # blocks sums differently for different chunk shapes
    np.testing.assert_allclose(mean_c, mean, atol=2e-5 * float(jnp.abs(mean).max()))
    np.testing.assert_allclose(logvar_c, logvar, atol=2e-5 * float(jnp.abs(logvar).max()))
    np.testing.assert_allclose(out_c, out, atol=2e-5)


def test_shortcuts_keep_causality_and_chunking():
    """The parameter-free shortcuts (pooling down, repetition up) on a fresh VAE, whose
    residual branches are still zero, so these paths carry most of the signal: causal,
    chunked = whole, and close to a block-average codec from the first step."""
    vae = V.init_vae(vae_configs.vae(widths=(8, 8, 16, 16), blocks=1, shortcut=True), jax.random.key(1))
    x = clips(2)
    k = 5
    mean, _ = encode(vae, x)
    mean2, _ = encode(vae, x.at[:, k].set(-x[:, k]))
    block = -(-k // CT)
    np.testing.assert_array_equal(np.asarray(mean[:, :block]), np.asarray(mean2[:, :block]))
    assert float(jnp.abs(mean[:, block] - mean2[:, block]).max()) > 1e-3
    out, out2 = decode(vae, mean), decode(vae, mean.at[:, 2].add(1.0))
    np.testing.assert_array_equal(np.asarray(out[:, :5]), np.asarray(out2[:, :5]))
    mean_c, _ = V.encode_chunked(vae, x, chunk_latents=1)
    np.testing.assert_allclose(mean_c, mean, atol=2e-5 * float(jnp.abs(mean).max()))
    np.testing.assert_allclose(V.decode_chunked(vae, mean, chunk_latents=1), out, atol=2e-5 * float(jnp.abs(out).max()))
    # the shortcut chain alone (every conv zeroed) is a block average: each
    # decoded frame repeats its latent block's mean colour
    graphdef, state = nnx.split(vae)
    names = lambda path: {getattr(k, "key", None) for k in path}  # noqa: E731
    zeroed = jax.tree_util.tree_map_with_path(lambda path, v: jnp.zeros_like(v) if names(path) & {"kernel", "bias"} else v, state)
    bare = nnx.merge(graphdef, zeroed)
    x1 = x[:, 1:5]  # latent block 1
    blocks = einops.reduce(x1, "b t (h ph) (w pw) c -> b h w c", "mean", ph=8, pw=8)
    got = decode(bare, encode(bare, x)[0])[:, 1:5]
    want = einops.repeat(blocks, "b h w c -> b t (h ph) (w pw) c", t=4, ph=8, pw=8)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_still_image_is_a_one_frame_clip(vae):
    x = clips(2)
    image = x[:, :1]  # [B, 1, H, W, 3]
    mean, logvar = V.encode_chunked(vae, image, chunk_latents=0)
    assert mean.shape == logvar.shape == (2, 1, 4, 4, 16)
    # causality: a clip's first latent frame is its first frame's own encoding
    np.testing.assert_allclose(mean[:, 0], encode(vae, x)[0][:, 0], atol=2e-5 * float(jnp.abs(mean).max()))
    out = V.decode_chunked(vae, mean, chunk_latents=0)
    assert out.shape == image.shape
    assert float(jnp.mean((out - image) ** 2)) < float(jnp.mean(image**2))


def test_spatial_tiles_blend_close_to_the_whole_frame(vae):
    x = clips(2, canvas=64, seed=10)  # latents [2, 3, 8, 8, 16]; tiles of 4 x 4 latents = 32 x 32 pixels
    mean, _ = encode(vae, x)
    out = decode(vae, mean)

    def errors(overlap):
        """(max, mean) |tiled - whole| relative to the whole's (max, mean) |value|, for latents and pixels."""
        mean_t, _ = V.encode_tiled(vae, x, tile_latents=4, overlap_latents=overlap, chunk_latents=0)
        out_t = V.decode_tiled(vae, mean, tile_latents=4, overlap_latents=overlap, chunk_latents=0)
        return {
            name: (float(jnp.abs(a - b).max() / jnp.abs(b).max()), float(jnp.abs(a - b).mean() / jnp.abs(b).mean()))
            for name, a, b in (("latents", mean_t, mean), ("pixels", out_t, out))
        }

    seams, blended = errors(0), errors(2)
    print(f"tiled vs whole, (max, mean) |diff| relative to |whole|: no overlap {seams}; overlap 2 latents {blended}")
    # Tiles are not exact: each conv zero-pads at a tile's edge where the whole
    # frame has the neighbour's pixels, and the encoder's receptive field
    # (about 50 pixels) is wider than the 16-pixel overlap, so no latent of a
    # 4-latent tile is out of its reach. Blending over the overlap hides the
    # seams; the decoder (narrower field per output pixel) tiles far better.
    for name in ("latents", "pixels"):
        assert blended[name][0] < 0.6 * seams[name][0] and blended[name][1] < 0.6 * seams[name][1], name
    assert blended["latents"][0] < 0.4 and blended["latents"][1] < 0.2
    assert blended["pixels"][0] < 0.08 and blended["pixels"][1] < 0.015


def test_shapes_default_and_ltx2_like():
    def shapes(cfg, thw):
        vae = nnx.eval_shape(lambda: V.VideoVAE(cfg, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(vae)
        x = jax.ShapeDtypeStruct((1, *thw, 3), jnp.float32)
        mean, logvar = jax.eval_shape(lambda s, v: nnx.merge(graphdef, s).encode(v), state, x)
        out = jax.eval_shape(lambda s, z: nnx.merge(graphdef, s).decode(z), state, mean)
        return mean.shape, logvar.shape, out.shape

    default = vae_configs.get_config("bounce").model
    assert V.latent_shape(default, (17, 64, 96)) == (5, 8, 12, 16)
    assert shapes(default, (17, 64, 96)) == ((1, 5, 8, 12, 16), (1, 5, 8, 12, 16), (1, 17, 64, 96, 3))
    assert shapes(default, (1, 64, 96))[0] == (1, 1, 8, 12, 16)  # still image

    ltx2 = vae_configs.get_config("ltx2").model
    ltx2.widths = (4, 4, 8, 8)  # shapes only: tiny widths, same compression
    assert V.latent_shape(ltx2, (17, 64, 96)) == (3, 2, 3, 128)
    assert shapes(ltx2, (17, 64, 96)) == ((1, 3, 2, 3, 128), (1, 3, 2, 3, 128), (1, 17, 64, 96, 3))


def test_parameters_carry_logical_axes():
    vae = nnx.eval_shape(lambda: V.VideoVAE(tiny(), rngs=nnx.Rngs(0)))
    for path, var in nnx.to_flat_state(nnx.state(vae, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), (path, axes)
        assert all(a is None or a in LOGICAL_AXES for a in axes), (path, axes)


def test_config_errors_name_the_key_and_fix():
    cfg = tiny()
    with pytest.raises(ValueError, match=r"16 frames.*1 \+ 4k frames \(e\.g\. 13 or 17\)"):
        V.latent_shape(cfg, (16, 32, 32))
    with pytest.raises(ValueError, match="spatial factor 8 must divide"):
        V.latent_shape(cfg, (17, 36, 32))
    bad = tiny()
    bad.widths = (8, 16)
    with pytest.raises(ValueError, match=r"video_vae.widths has 2 entries.*needs 4"):
        V.validate_config(bad)
    bad = tiny()
    bad.compression = (3, 8, 8)
    with pytest.raises(ValueError, match="time factor 3 must be a power of two"):
        V.validate_config(bad)
    bad = tiny()
    bad.compression = (16, 8, 8)
    with pytest.raises(ValueError, match="needs 4 downsamplings"):
        V.validate_config(bad)


def test_kl_and_tiling_helpers_match_references():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    ref = np.mean(0.5 * (mean**2 + np.exp(logvar) - 1 - logvar))
    np.testing.assert_allclose(V.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)), ref, rtol=1e-6)
    assert V.chunk_bounds(9, 1, 4) == [(0, 1), (1, 5), (5, 9)]
    assert V.chunk_bounds(17, 9, 8) == [(0, 9), (9, 17)]
    assert V.tile_starts(8, 4, 2) == [0, 2, 4]
    assert V.tile_starts(8, 4, 0) == [0, 4]
    assert V.tile_starts(4, 4, 2) == [0]
    # neighbouring ramps sum to one over their overlap
    np.testing.assert_allclose(V._ramp(6, 0, 3)[3:] + V._ramp(6, 3, 0)[:3], 1.0, rtol=1e-6)
