"""The autoencoder phase (jav/train/autoencoder.py) on a tiny video VAE: loss
falls, SIGTERM saves and a rerun resumes to exactly the uninterrupted run's
parameters and losses, jav.runs.load_autoencoder gives back the trained model, the
registry names its kinds, and the bounce stream is deterministic and resumable."""

import json
import os
import signal

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import video_vae as vae_configs
from jav.data import bounce_stream
from jav.models.ae_losses import psnr, structure_loss
from jav.models.autoencoders import model_module
from jav.runs import load_autoencoder, load_run
from jav.train import autoencoder


def losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny config trained 6 steps in one go, and again stopped by SIGTERM at
    step 2 (sent from the progress log) and rerun to the end."""
    cfg = vae_configs.get_config("tiny")
    whole, split = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("split")
    autoencoder.train(cfg, str(whole), log=lambda _: None)

    def preempt_at_2(msg):
        if msg.startswith("step      2/"):
            os.kill(os.getpid(), signal.SIGTERM)

    first = autoencoder.train(cfg, str(split), log=preempt_at_2)
    autoencoder.train(cfg, str(split), log=lambda _: None)
    return cfg, whole, split, first


def test_loss_falls(runs):
    _, whole, _, _ = runs
    loss = losses(whole)
    assert sorted(loss) == [2, 3, 4, 6]  # log_every=2, plus the held-out evaluations at 3 and 6
    assert loss[6] < 0.7 * loss[2], loss


def test_sigterm_then_resume_matches_the_uninterrupted_run(runs):
    _, whole, split, first = runs
    assert first["step"] == 2  # the SIGTERM stopped the first run after step 2
    assert losses(split) == losses(whole)
    _, a = load_autoencoder(whole, weights="params")
    _, b = load_autoencoder(split, weights="params")
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_autoencoder_gives_back_the_trained_ema_model(runs):
    cfg, whole, _, _ = runs
    loaded_cfg, vae = load_autoencoder(whole)
    assert loaded_cfg.model.kind == "video_vae" and tuple(loaded_cfg.model.widths) == tuple(cfg.model.widths)
    logged = json.loads((whole / "last_metrics.json").read_text())
    batch = bounce_stream.heldout_batch(cfg.data, cfg.data.eval_clips)
    scores = autoencoder.eval_step(*nnx.split(vae), batch, module_name="jav.models.video_vae", cfg=ml_collections.FrozenConfigDict(loaded_cfg))
    # the EMA weights score on the held-out clips what training logged for them at its last step
    np.testing.assert_allclose(float(scores["psnr"]), logged["eval_psnr"], rtol=1e-5)
    assert logged["eval_psnr"] > 10.0


def test_runs_load_a_given_step_and_name_a_wrong_request(runs):
    _, whole, split, _ = runs

    def leaves(model):
        return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]

    _, whole_3 = load_autoencoder(whole, weights="params", step=3)
    _, split_3 = load_autoencoder(split, weights="params", step=3)
    _, last = load_autoencoder(whole, weights="params")
    for x, y in zip(leaves(whole_3), leaves(split_3)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(whole_3), leaves(last)))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 .*saved steps: \[3, 6\]"):
        load_autoencoder(whole, step=5)
    with pytest.raises(ValueError, match=r"weights must be one of \('ema', 'params'\), got 'raw'"):
        load_autoencoder(whole, weights="raw")
    with pytest.raises(ValueError, match="is a run of the autoencoder phase; load it with jav.runs.load_autoencoder"):
        load_run(whole)


def test_registry_and_phase_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"model.kind='gan'.*valid kinds: \['audio_vae', 'prompt_reward', 'sync_reward', 'video_vae', 'vocoder'\]"):
        model_module("gan")
    from jav.train.__main__ import phase_of

    cfg = vae_configs.get_config("tiny")
    cfg.phase = "pretrain"
    with pytest.raises(ValueError, match=r"phase='pretrain'.*\('diffusion', 'autoencoder', 'reward_model', 'distill', 'reward'\)"):
        phase_of(cfg)
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        load_autoencoder(tmp_path)


def test_bounce_stream_is_deterministic_resumable_and_disjoint_from_heldout():
    cfg = vae_configs.get_config("tiny").data
    cfg.fields = ("video", "logmel", "wave")
    stream = bounce_stream.BounceStream(cfg, 2)
    first, second = next(stream), next(stream)
    assert first["video"].shape == (2, 9, 16, 16, 3) and first["logmel"].shape == (2, 112, 64) and first["wave"].shape == (2, 18000)
    assert -1.0 <= first["video"].min() and first["video"].max() <= 1.0
    resumed = bounce_stream.BounceStream(cfg, 2)
    resumed.set_state({"next_batch": 1})
    np.testing.assert_array_equal(next(resumed)["wave"], second["wave"])
    # process 1 of 2 makes row 1 of the same global batch
    half = bounce_stream.BounceStream(cfg, 2, index=1, count=2)
    np.testing.assert_array_equal(next(half)["video"], first["video"][1:])
    held = bounce_stream.heldout_batch(cfg, 2)
    assert not any(np.array_equal(h, f) for h in held["wave"] for f in np.concatenate([first["wave"], second["wave"]]))
    cfg.fields = ("video", "pixels")
    with pytest.raises(ValueError, match=r"data.fields.*one of \('video', 'logmel', 'wave', 'events', 'colours', 'background', 'sounds'\)"):
        bounce_stream.BounceStream(cfg, 2)


def test_psnr_and_structure_loss_match_references():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (2, 3, 4, 4, 3)).astype(np.float32), rng.uniform(-1, 1, (2, 3, 4, 4, 3)).astype(np.float32)
    mse = ((x - y) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(jax.jit(psnr)(x, y), np.mean(10 * np.log10(4 / mse)), rtol=1e-5)
    structure = jax.jit(structure_loss, static_argnames=("diff_axes", "pool_axes", "scales"))
    ref = sum(np.abs(np.diff(y, axis=a) - np.diff(x, axis=a)).mean() for a in (1, 2, 3))
    np.testing.assert_allclose(structure(x, y, diff_axes=(1, 2, 3), pool_axes=(2, 3), scales=1), ref, rtol=1e-5)
    assert float(structure(x, x + 0.5, diff_axes=(1, 2, 3), pool_axes=(2, 3))) < 1e-6  # a constant shift has no structure
