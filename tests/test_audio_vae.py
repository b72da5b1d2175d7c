"""The audio VAE: token shapes (also for the 212-frame demo clips), causality,
logical axis names, its KL term against NumPy, that the loss weighs bursts above
the noise floor and sharp onsets, the autoencoder phase's contract, and that a
few Adam steps on bounce-world log-mels cut the reconstruction error; and that a
run saved in the retired msgpack format converts to a run directory that the
benchmark reads."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

from benchmarks import audio_vae as benchmark
from benchmarks import convert_msgpack_run
from configs import audio_vae as audio_vae_configs
from jav.audio import log_mel
from jav.data import bounce
from jav.models import audio_vae
from jav.runs import load_autoencoder
from jav.sharding import LOGICAL_AXES
from jav.train.checkpoint import latest_step
from xla_flags import COMPILER_OPTIONS


def test_default_config_gives_ltx2_token_shapes_and_named_axes():
    cfg = audio_vae_configs.vae()
    assert audio_vae.reduction(cfg) == (4, 4) and audio_vae.token_dim(cfg) == 128
    abstract = nnx.eval_shape(lambda: audio_vae.AudioVAE(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    logmel = jax.ShapeDtypeStruct((2, 200, 64), jnp.float32)  # 2 s at hop 160
    mean, logvar = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encode(x), state, logmel)
    assert mean.shape == logvar.shape == (2, 50, 128)  # 25 tokens per second
    out = jax.eval_shape(lambda s, z: nnx.merge(graphdef, s).decode(z), state, mean)
    assert out.shape == (2, 200, 64)
    demo = jax.ShapeDtypeStruct((2, 212, 64), jnp.float32)  # 2.125 s, the latent demo's clips
    mean, _ = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encode(x), state, demo)
    assert mean.shape == (2, 53, 128)
    assert jax.eval_shape(lambda s, z: nnx.merge(graphdef, s).decode(z), state, mean).shape == (2, 212, 64)

    params = nnx.state(abstract, nnx.Param)
    for path, var in jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda v: isinstance(v, nnx.Variable)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), path
        assert all(a is None or a in LOGICAL_AXES for a in axes), (path, axes)


def test_errors_name_the_key_and_the_fix():
    cfg = audio_vae_configs.vae()
    cfg.channels = (32, 64)
    with pytest.raises(ValueError, match="audio_vae.channels"):
        audio_vae.validate_config(cfg)
    cfg = audio_vae_configs.vae()
    cfg.downsample = ((4, 4), (1, 1))
    with pytest.raises(ValueError, match="stride must be 1 to 3"):
        audio_vae.validate_config(cfg)
    cfg = audio_vae_configs.vae()
    cfg.n_mels = 66
    with pytest.raises(ValueError, match="n_mels=66 is not divisible"):
        audio_vae.validate_config(cfg)
    abstract = nnx.eval_shape(lambda: audio_vae.AudioVAE(audio_vae_configs.vae(), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="length 202 is not divisible .* pad or crop"):
        abstract.encode(jnp.zeros((1, 202, 64)))


def test_kl_matches_numpy_formula():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(3, 5, 16)), rng.normal(size=(3, 5, 16))
    expected = 0.5 * np.mean(mean**2 + np.exp(logvar) - 1 - logvar)
    kl = jax.jit(audio_vae.kl_divergence)
    np.testing.assert_allclose(float(kl(mean.astype(np.float32), logvar.astype(np.float32))), expected, rtol=1e-5)
    assert float(kl(np.zeros((3, 5, 16), np.float32), np.zeros((3, 5, 16), np.float32))) == 0.0


def test_loss_weighs_bursts_above_the_floor_and_onsets():
    target = np.full((1, 40, 8), -0.6, np.float32)  # the noise floor ...
    target[:, 20:30, 2:4] = 0.8  # ... and one burst: 10 frames in 2 bins
    terms = audio_vae.reconstruction_terms
    on_burst = target.copy()
    on_burst[:, 22:26, 2] += 0.1
    on_floor = target.copy()
    on_floor[:, 2:6, 6] += 0.1  # the same error on the same number of floor bins
    burst, floor = terms(on_burst, target, burst_gain=8.0), terms(on_floor, target, burst_gain=8.0)
    assert float(burst["l1"]) == pytest.approx(float(floor["l1"]))
    assert float(burst["weighted_l1"]) > 5 * float(floor["weighted_l1"])
    plain_burst, plain_floor = terms(on_burst, target, burst_gain=0.0), terms(on_floor, target, burst_gain=0.0)
    assert float(plain_burst["weighted_l1"]) == pytest.approx(float(plain_floor["weighted_l1"]))
    # A level offset keeps every onset (no flux error); the burst one frame late does not.
    late = np.concatenate([target[:, :1], target[:, :-1]], axis=1)
    assert float(terms(target + 0.05, target, burst_gain=8.0)["flux_l1"]) < 1e-6
    assert float(terms(late, target, burst_gain=8.0)["flux_l1"]) > 0.05


@pytest.fixture(scope="module")
def tiny_model():
    return audio_vae.init_model(audio_vae_configs.get_config("tiny"), jax.random.key(0))


def test_autoencoder_phase_contract(tiny_model):
    cfg = audio_vae_configs.get_config("tiny")
    assert cfg.phase == "autoencoder" and cfg.model.kind == "audio_vae"
    assert isinstance(tiny_model, audio_vae.AudioVAE)
    batch = {"logmel": jax.ShapeDtypeStruct((2, 64, 64), jnp.float32)}
    graphdef, state = nnx.split(tiny_model)
    loss, metrics = jax.eval_shape(lambda s, b: audio_vae.training_loss(nnx.merge(graphdef, s), b, jax.random.key(0), cfg), state, batch)
    assert loss.shape == () and set(metrics) == {"l1", "weighted_l1", "flux_l1", "kl"}
    assert all(m.shape == () for m in metrics.values())
    with pytest.raises(ValueError, match="batch\\['logmel'\\]"):
        audio_vae.training_loss(tiny_model, {"wave": np.zeros((1, 100))}, jax.random.key(0), cfg)


def test_encoder_and_decoder_are_causal_in_time(tiny_model):
    x = jax.random.normal(jax.random.key(1), (1, 32, 64))
    z = jax.random.normal(jax.random.key(2), (1, 8, 128))
    # Frames 13.. differ: latent tokens 0..2 (frames 0..11) must not. Latents 5.. differ:
    # decoded frames 0..19 must not.
    both = nnx.jit(lambda m, v, w: (m.encode(v)[0], m.decode(w)))
    latents, decoded = both(tiny_model, jnp.concatenate([x, x.at[:, 13:].add(1.0)]), jnp.concatenate([z, z.at[:, 5:].add(1.0)]))
    latents, decoded = np.asarray(latents), np.asarray(decoded)
    assert np.array_equal(latents[0, :3], latents[1, :3]) and not np.allclose(latents[0, 3], latents[1, 3])
    assert np.array_equal(decoded[0, :20], decoded[1, :20]) and not np.allclose(decoded[0, 20:], decoded[1, 20:])


def test_few_adam_steps_cut_reconstruction_l1(tiny_model):
    start = time.perf_counter()
    cfg = audio_vae_configs.tiny()
    model = tiny_model
    waves = np.stack([bounce.generate_clip(seed).audio[:5120] for seed in (0, 3)])  # 0.32 s each, bursts in both
    logmel = log_mel.waveform_to_logmel(waves)  # [2, 32, 64]
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-2)

    def step(params, opt_state, key):
        loss = lambda p: audio_vae.vae_loss(nnx.merge(graphdef, p), logmel, key, cfg.kl_weight, cfg.burst_gain, cfg.flux_weight)
        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    opt_state = tx.init(params)
    # One compile without backend optimisation: it runs 40 tiny steps, so compile time dominates.
    compiled = jax.jit(step).lower(params, opt_state, jax.random.key(1)).compile(COMPILER_OPTIONS)
    history = []
    for i in range(40):
        params, opt_state, terms = compiled(params, opt_state, jax.random.fold_in(jax.random.key(1), i))
        history.append(float(terms["l1"]))
    print(f"audio VAE L1 {history[0]:.3f} -> {history[-1]:.3f} in 40 steps, {time.perf_counter() - start:.1f} s")
    assert np.isfinite(history).all()
    assert np.mean(history[-5:]) < 0.25 * history[0]


def test_a_msgpack_run_converts_to_a_run_directory(tmp_path):
    """A run of the retired benchmark loop (its model's keys, here without `kind` as the
    oldest ones, and params.msgpack) is refused by the benchmark with the converter's
    command, and converts to a run whose EMA weights are the saved ones."""
    model = audio_vae.init_model(audio_vae_configs.get_config("tiny"), jax.random.key(7))  # not the converter's key 0
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    keys = model.cfg.to_dict()
    del keys["kind"]
    (old / "model_config.json").write_text(json.dumps(keys))
    state = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    (old / "params.msgpack").write_bytes(serialization.msgpack_serialize(state))
    with pytest.raises(
        SystemExit, match=f"{old} holds the retired params.msgpack format: convert it once with `python -m benchmarks.convert_msgpack_run {old} NEW_DIR`"
    ):
        benchmark.main(["--workdir", str(old)])

    convert_msgpack_run.main([str(old), str(new), "--step", "40"])
    cfg, loaded = load_autoencoder(new)
    assert cfg.model.kind == "audio_vae" and latest_step(new) == 40
    logmel = jax.random.normal(jax.random.key(1), (1, 32, 64))
    encode_decode = nnx.jit(lambda m, x: (m.encode(x)[0], m.decode(m.encode(x)[0])))
    for a, b in zip(encode_decode(model, logmel), encode_decode(loaded, logmel)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError, match="is already a run directory"):
        convert_msgpack_run.main([str(old), str(new)])


def test_benchmark_names_the_training_command_for_a_workdir_without_a_run(tmp_path):
    with pytest.raises(
        SystemExit, match=f"{tmp_path} is not a run directory: train one with `python -m jav.train --config configs/audio_vae.py --workdir {tmp_path}`"
    ):
        benchmark.main(["--workdir", str(tmp_path)])
