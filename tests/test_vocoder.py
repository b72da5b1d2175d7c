"""The neural vocoder and its multi-resolution STFT loss: output shapes (also for
the 212-frame demo clips) and finiteness, logical axis names, the autoencoder
phase's contract and its errors, that a few Adam steps on bounce-world
clips cut the loss, and that benchmarks/vocoder.py evaluates a run directory."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

from benchmarks import audio_vae as audio_vae_benchmark
from benchmarks import convert_msgpack_run
from benchmarks import vocoder as benchmark
from configs import vocoder as vocoder_configs
from jav.audio import log_mel, stft_loss
from jav.data import bounce
from jav.models import vocoder
from jav.sharding import LOGICAL_AXES
from xla_flags import COMPILER_OPTIONS


@pytest.fixture(scope="module")
def tiny():
    cfg = vocoder_configs.get_config("tiny")
    waves = np.stack([bounce.generate_clip(seed).audio[:5120] for seed in (0, 3)])  # 0.32 s each, bursts in both
    return cfg, vocoder.init_model(cfg, jax.random.key(0)), log_mel.waveform_to_logmel(waves), waves


def test_stft_loss_is_zero_only_at_the_target():
    wave = np.random.default_rng(0).normal(size=(2, 2048)).astype(np.float32)
    loss = jax.jit(stft_loss.multi_resolution_stft_loss)
    assert float(loss(wave, wave)[0]) < 1e-5
    quieter, _ = loss(0.5 * wave, wave)
    assert float(quieter) > 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        stft_loss.multi_resolution_stft_loss(wave[:, :1000], wave)


def test_shapes_axes_and_finite_output(tiny):
    cfg, model, logmel, waves = tiny
    assert cfg.phase == "autoencoder" and cfg.model.kind == "vocoder" and isinstance(model, vocoder.Vocoder)
    out = np.asarray(vocoder.vocode(model, logmel))
    assert out.shape == waves.shape == (2, 5120) and np.isfinite(out).all()
    # An untrained vocoder is the magnitude prior with bin-centre phases: already audible, not silent.
    assert 0.1 < np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(waves**2)) < 10

    abstract = nnx.eval_shape(lambda: vocoder.Vocoder(vocoder_configs.vocoder(), rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    demo = jax.ShapeDtypeStruct((1, 212, 64), jnp.float32)  # 2.125 s
    assert jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, demo).shape == (1, 212 * 160)
    params = nnx.state(abstract, nnx.Param)
    for path, var in jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda v: isinstance(v, nnx.Variable)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), path
        assert all(a is None or a in LOGICAL_AXES for a in axes), (path, axes)


def test_training_loss_contract_and_errors(tiny):
    cfg, model, logmel, waves = tiny
    with pytest.raises(ValueError, match="'wave'.* missing"):
        vocoder.training_loss(model, {"logmel": logmel}, None, cfg)
    with pytest.raises(ValueError, match="crop both to the same span"):
        vocoder.training_loss(model, {"logmel": logmel, "wave": waves[:, :5000]}, None, cfg)
    with pytest.raises(ValueError, match="vocoder.kernel=4 is even"):
        vocoder.validate_config(vocoder_configs.vocoder(kernel=4))


def test_few_adam_steps_cut_the_loss(tiny):
    cfg, model, logmel, waves = tiny
    graphdef, params = nnx.split(model)
    tx = optax.adam(3e-3)
    batch = {"logmel": logmel, "wave": waves}

    def step(params, opt_state):
        loss = lambda p: vocoder.training_loss(nnx.merge(graphdef, p), batch, None, cfg)
        (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, terms

    opt_state = tx.init(params)
    compiled = jax.jit(step).lower(params, opt_state).compile(COMPILER_OPTIONS)
    history = []
    for _ in range(12):
        params, opt_state, value, terms = compiled(params, opt_state)
        history.append(float(value))
    assert set(terms) == {"spectral_convergence", "log_magnitude_l1", "mel_l1"}
    assert np.isfinite(history).all()
    assert np.mean(history[-3:]) < 0.75 * history[0], history


def test_benchmark_evaluates_a_run_directory(tiny, tmp_path):
    """A tiny random vocoder, saved as the retired loop did and converted, is a run the
    benchmark scores on 2 held-out clips with the run's weights; the audio VAE benchmark
    refuses it by its kind, and a workdir without a run gets the training command."""
    model = vocoder.init_model(tiny[0], jax.random.key(0))
    # Off its initial values (an untrained vocoder's output does not depend on the key)
    nnx.update(model, jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.key(7), p.shape), nnx.state(model, nnx.Param)))
    old, run = tmp_path / "old", tmp_path / "run"
    old.mkdir()
    (old / "model_config.json").write_text(model.cfg.to_json_best_effort())
    state = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    (old / "params.msgpack").write_bytes(serialization.msgpack_serialize(state))
    convert_msgpack_run.main([str(old), str(run)])

    result = benchmark.main(["--workdir", str(run), "--num", "2"])
    assert json.loads((run / "eval.json").read_text()) == result
    assert result["clips"] == 2 and set(result) >= {"original/griffin_lim", "original/vocoder", "original_audio"}
    clips = [bounce.generate_clip(audio_vae_benchmark.HELD_OUT_SEED + s) for s in range(2)]
    logmel = log_mel.waveform_to_logmel(np.stack([c.audio for c in clips]))
    direct = audio_vae_benchmark.logmel_errors(log_mel.waveform_to_logmel(vocoder.vocode(model, logmel)), logmel)
    assert result["original/vocoder"]["reanalysed_l1"] == pytest.approx(direct["l1"], rel=1e-5)

    with pytest.raises(SystemExit, match=f"{run} is a run of model.kind='vocoder', not 'audio_vae'"):
        audio_vae_benchmark.main(["--workdir", str(run)])
    with pytest.raises(
        SystemExit, match=f"{tmp_path} is not a run directory: train one with `python -m jav.train --config configs/vocoder.py --workdir {tmp_path}`"
    ):
        benchmark.main(["--workdir", str(tmp_path)])
