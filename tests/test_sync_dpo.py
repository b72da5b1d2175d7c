"""SyncDPO (jav/train/sync_dpo.py, `reward.method="sync_dpo"`): its pairs are windows of one
longer clip whose sound is moved by whole frames, deterministic and resumable; its loss is
Diffusion-DPO's formula on errors recomputed clip by clip, with no gradient into the reference; a tiny run through the trainer moves the policy, never saves the
reference, and resumes to the uninterrupted run's losses."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import sync_dpo as dpo_configs
from jav import flow, samplers, sharding
from jav.clip_tokens import TokenLayout, mel_params
from jav.data import bounce, mel
from jav.data.bounce_stream import HELDOUT_SEED
from jav.evaluation import real_arrays, world_params
from jav.generate import generate
from jav.runs import load_run
from jav.sampling import clip_keys
from jav.train import loop
from jav.train.reward import RewardPhase
from jav.train.policy_pairs import CAPTION_SEED, captions_of, make_pairs
from jav.train.sync_dpo import PairStream, PolicyPairStream, clip_errors, dpo_loss, load_pairs

# with the other tests that start from conftest's tiny run (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tiny_diffusion_run")


def dpo_config(run, steps=2):
    cfg = dpo_configs.get_config(str(run))
    cfg.train.update(batch_size=2, steps=steps, log_every=1, checkpoint_every=1)
    cfg.optim.update(lr=1e-3, warmup_steps=0)
    return cfg


def test_pairs_are_inner_windows_with_the_sound_moved_by_whole_frames(tiny_diffusion_run):
    cfg = dpo_config(tiny_diffusion_run)
    stream = PairStream(cfg, 4)
    batch = next(stream)
    layout = TokenLayout.from_config(cfg)
    assert batch["video"].shape[1:] == layout.video_shape and batch["audio"].shape[1:] == batch["audio_moved"].shape[1:] == layout.audio_shape
    s, d = cfg.reward.dpo.max_shift, cfg.data
    assert set(np.abs(batch["shift"])) <= set(range(1, s + 1))
    for i in range(4):  # each window against the long clip it was cut from
        clip = bounce.generate_clip(cfg.train.seed + i, stream.params)
        logmel = mel.waveform_to_logmel(clip.audio, mel_params(cfg))
        per_frame = logmel.shape[0] / clip.frames.shape[0]
        n = layout.audio_shape[0]
        for key, k in (("audio", 0), ("audio_moved", int(batch["shift"][i]))):
            start = int(round((s + k) * per_frame))
            np.testing.assert_array_equal(batch[key][i], logmel[start : start + n])
        np.testing.assert_array_equal(batch["video"][i], clip.frames[s : s + int(d.duration * d.fps)].astype(np.float32) / 127.5 - 1.0)
    # deterministic, and a stream set to a saved state continues as the first did
    again = PairStream(cfg, 4)
    np.testing.assert_array_equal(next(again)["audio_moved"], batch["audio_moved"])
    following = next(stream)
    resumed = PairStream(cfg, 4)
    resumed.set_state(again.get_state())
    np.testing.assert_array_equal(next(resumed)["audio"], following["audio"])


def test_the_loss_is_dpo_on_the_policys_and_the_references_errors_of_each_pair(tiny_diffusion_run):
    """Away from the start (the policy's weights moved), the loss and its metrics are Diffusion-DPO's
    formula on the four errors of a pair, each recomputed here clip by clip with the same noise and
    timesteps; no gradient reaches the reference."""
    cfg = dpo_config(tiny_diffusion_run)
    _, model, _ = load_run(tiny_diffusion_run)
    graphdef, ref_params = nnx.split(model)
    leaves, tree = jax.tree.flatten(ref_params)
    params = jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, jax.random.split(jax.random.key(5), len(leaves)))])
    layout = TokenLayout.from_config(cfg)
    batch = jax.tree.map(jnp.asarray, next(PairStream(cfg, 2)))
    mu, beta, sft_weight = (("audio", 0.5), ("video", 1.0)), 50.0, 0.3
    kw = dict(graphdef=graphdef, layout=layout, flow_cfg=cfg.flow, mu=mu, beta=beta, sft_weight=sft_weight)
    key = jax.random.key(3)
    loss, metrics = jax.jit(lambda p, q: dpo_loss(p, q, batch, key, **kw))(params, ref_params)

    # the same noise and timesteps, drawn as dpo_loss draws them, and the errors taken clip by clip
    aligned, moved = (layout.to_tokens(batch["video"], batch[k]) for k in ("audio", "audio_moved"))
    k_eps, k_t = jax.random.split(key)
    eps = {m: jax.random.normal(jax.random.fold_in(k_eps, i), aligned[m].shape, jnp.float32) for i, m in enumerate(("video", "audio"))}
    sigma = {m: flow.sample_sigma(jax.random.fold_in(k_t, i), dict(mu)[m], 2) for i, m in enumerate(("video", "audio"))}
    t = {m: jnp.broadcast_to(sigma[m][:, None], aligned[m].shape[:2]) for m in eps}

    @jax.jit
    def errors(p):
        net = nnx.merge(graphdef, p)
        text = net.encode_text(batch["text_ids"], batch["text_mask"])
        return [clip_errors(net, x, eps, t, text, batch["text_mask"], layout, cfg.flow) for x in (aligned, moved)]

    (pol_w, pol_l), (ref_w, ref_l) = (np.asarray(e, np.float64) for e in errors(params)), (np.asarray(e, np.float64) for e in errors(ref_params))
    d = (pol_w - ref_w) - (pol_l - ref_l)
    assert np.abs(d).max() > 0
    want = np.mean(np.logaddexp(0.0, beta * d)) + sft_weight * pol_w.mean()  # -log sigmoid(-beta d) = log(1 + e^(beta d))
    assert float(loss) == pytest.approx(want, rel=1e-4)
    assert float(metrics["accuracy"]) == np.mean(d < 0) and float(metrics["margin"]) == pytest.approx(np.mean(-beta * d), rel=1e-4, abs=1e-6)
    for name, value in (("error_aligned", pol_w), ("error_moved", pol_l), ("ref_error_aligned", ref_w), ("ref_error_moved", ref_l)):
        assert float(metrics[name]) == pytest.approx(value.mean(), rel=1e-5), name
    ref_grads = jax.jit(jax.grad(lambda q: dpo_loss(params, q, batch, key, **kw)[0]))(ref_params)  # a stopped gradient: constants
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(ref_grads))


def test_a_sync_dpo_run_moves_the_policy_and_resumes(tiny_diffusion_run, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = dpo_config(tiny_diffusion_run)
    lines = []
    loop.run(cfg, straight, RewardPhase(cfg), log=lines.append)
    assert any("by SyncDPO" in line for line in lines) and any(" dpo " in line and "accuracy" in line for line in lines)

    def preempt_at_1(msg):
        if msg.startswith("step      1/"):
            os.kill(os.getpid(), signal.SIGTERM)

    assert loop.run(cfg, split, RewardPhase(cfg), log=preempt_at_1)["step"] == 1
    loop.run(cfg, split, RewardPhase(cfg), log=lambda _: None)
    rows = {d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())} for d in (straight, split)}
    assert sorted(rows[straight]) == sorted(rows[split]) == [1, 2]
    assert rows[straight][1]["loss_dpo"] == pytest.approx(np.log(2.0), rel=1e-5)  # the policy starts as its reference
    for step in (1, 2):
        for key in ("loss", "loss_dpo", "margin", "error_aligned", "error_moved"):
            assert rows[split][step][key] == pytest.approx(rows[straight][step][key], rel=1e-4, abs=1e-6), (step, key)
    assert sorted(p.name for p in (straight / "checkpoints" / "2").iterdir() if p.is_dir()) == ["config", "data_state", "ema", "opt_state", "params"]
    _, tuned, step = load_run(straight, weights="params")
    _, start, _ = load_run(tiny_diffusion_run)
    assert step == 2
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(nnx.state(tuned)), jax.tree.leaves(nnx.state(start))))


def test_bad_sync_dpo_settings_are_named(tiny_diffusion_run):
    mesh = sharding.mesh_from_config(dpo_config(tiny_diffusion_run).mesh)
    for key, value, match in (
        ("max_shift", 0, r"max_shift must be a whole number of frames >= 1"),
        ("beta", 0.0, r"beta > 0"),
    ):
        cfg = dpo_config(tiny_diffusion_run)
        cfg.reward.dpo[key] = value
        with pytest.raises(ValueError, match=match):
            RewardPhase(cfg).validate(mesh)
    cfg = dpo_config(tiny_diffusion_run)
    cfg.reward.models = {"sync": dict(run="x", weight=1.0, modalities=("audio",), reading="reward")}
    with pytest.raises(ValueError, match="sync_dpo' reads no reward model"):
        RewardPhase(cfg).validate(mesh)
    for value, match in (("bogus", r"reward.dpo.prefer='bogus': 'v2a'"), ("real", r"prefer='real' sets real clips against the policy's own")):
        cfg = dpo_config(tiny_diffusion_run)
        cfg.reward.dpo.prefer = value
        with pytest.raises(ValueError, match=match):
            RewardPhase(cfg).validate(mesh)
    cfg = dpo_config(tiny_diffusion_run)
    cfg.reward.dpo.pairs = "/nonexistent/pairs"
    with pytest.raises(ValueError, match="has no pairs.json: make the pairs with python -m jav.train.policy_pairs"):
        RewardPhase(cfg).validate(mesh)


def test_on_policy_pairs_are_the_runs_own_clips_with_its_v2a_and_its_joint_sound(tiny_diffusion_run, tmp_path):
    """`python -m jav.train.policy_pairs`: each pair is the run's own T2VA clip (picture and joint
    sound as generate makes them from the clip's seed) and the sound sampled again with that
    picture given; parts share the batches, a rerun skips finished ones, other settings are refused; the stream
    gives every pair once per epoch, resumably, and a SyncDPO run trains on them."""
    out = tmp_path / "pairs"
    cfg, model, _ = load_run(tiny_diffusion_run)
    layout = TokenLayout.from_config(cfg)
    make_pairs(tiny_diffusion_run, out, 4, batch_size=2, steps=2, part=(1, 2), log=lambda _: None)  # two processes' parts
    with pytest.raises(ValueError, match="holds 1 of its 2 batches"):
        load_pairs(out, layout)
    make_pairs(tiny_diffusion_run, out, 4, batch_size=2, steps=2, part=(0, 2), log=lambda _: None)
    with np.load(out / "batch_0001.npz") as z:
        seeds, captions, video, joint, v2a = list(z["seeds"]), list(z["captions"]), z["video"], z["audio_moved"], z["audio"]
    assert seeds == [CAPTION_SEED + 2, CAPTION_SEED + 3] and captions == captions_of(cfg, seeds)
    kw = dict(num_steps=2, flow_cfg=cfg.flow, guidance=samplers.guidance_from(cfg), schedule=samplers.schedule_from(cfg))
    want_video, want_joint = generate(model, layout, captions, clip_keys(seeds), **kw)
    np.testing.assert_allclose(video, want_video, atol=1e-5)
    np.testing.assert_allclose(joint, want_joint, atol=1e-5)
    _, want_v2a = generate(model, layout, captions, clip_keys([s + HELDOUT_SEED // 2 for s in seeds]), video=video, **kw)  # new noise, picture given
    np.testing.assert_allclose(v2a, want_v2a, atol=1e-5)
    assert video.shape[1:] == layout.video_shape and v2a.shape == joint.shape and not np.allclose(v2a, joint, rtol=0, atol=1e-6)
    stamp = (out / "batch_0000.npz").stat().st_mtime_ns
    make_pairs(tiny_diffusion_run, out, 4, batch_size=2, steps=2, log=lambda _: pytest.fail("a finished batch was sampled again"))
    assert (out / "batch_0000.npz").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made with other settings"):
        make_pairs(tiny_diffusion_run, out, 4, batch_size=2, steps=3)

    dpo = dpo_config(tiny_diffusion_run)
    dpo.reward.dpo.pairs = str(out)
    stream = PolicyPairStream(dpo, 2)
    first = [next(stream) for _ in range(2)]  # one epoch: all four pairs once
    every = load_pairs(out, layout)
    rows = [next(i for i in range(4) if np.array_equal(v, every["video"][i])) for b in first for v in b["video"]]
    assert sorted(rows) == [0, 1, 2, 3]
    state = stream.get_state()
    following = next(stream)
    resumed = PolicyPairStream(dpo, 2)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["audio_moved"], following["audio_moved"])
    real = dpo_config(tiny_diffusion_run)
    real.reward.dpo.update(pairs=str(out), prefer="real")  # self-play: the caption's real clip against the policy's
    batch = next(PolicyPairStream(real, 2))
    i = [next(i for i in range(4) if np.array_equal(v, every["video"][i])) for v in batch["video_moved"]]
    clips = [bounce.generate_clip(int(every["seeds"][j]), world_params(cfg)) for j in i]
    want_video, want_audio = real_arrays(cfg, clips)
    np.testing.assert_array_equal(batch["video"], want_video)
    np.testing.assert_array_equal(batch["audio"], want_audio)
    np.testing.assert_array_equal(batch["audio_moved"], every["audio_moved"][i])
    assert [c.caption for c in clips] == captions_of(cfg, every["seeds"][i])
    lines = []
    loop.run(dpo, tmp_path / "tuned", RewardPhase(dpo), log=lines.append)
    assert any("on-policy pairs of" in line for line in lines)
    row = json.loads((tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss_dpo"] == pytest.approx(np.log(2.0), rel=1e-5) and row["error_aligned"] != row["error_moved"]
