"""The training loop end to end on tiny shards: progress, resume, NaN skipping, errors."""

import json

import jax
import numpy as np
import pytest

from configs import test as test_config
from jav.data import synthetic
from jav.train.diffusion import train


def config(shards, steps):
    cfg = test_config.get_config()
    cfg.data.dir = shards
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 3
    return cfg


def losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def test_resumed_run_sees_the_same_batches_and_losses(shards, tmp_path):
    straight = tmp_path / "straight"
    train(config(shards, 6), str(straight), log=lambda _: None)
    parted = tmp_path / "parted"
    train(config(shards, 3), str(parted), log=lambda _: None)  # stops after saving step 3
    messages = []
    train(config(shards, 6), str(parted), log=messages.append)  # resumes at 3
    assert any("resumed" in m and "step 3" in m for m in messages)
    a, b = losses(straight), losses(parted)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), (step, a[step], b[step])

    # running a finished run again trains nothing and keeps its last metrics
    last = json.loads((parted / "last_metrics.json").read_text())
    again = train(config(shards, 6), str(parted), log=messages.append)
    assert "nothing to train" in messages[-1]
    assert again == last and again["step"] == 6 and again["loss"] == pytest.approx(b[6])
    assert losses(parted) == b

    # a new phase starts from the finished run's weights: its first batch is the
    # straight run's first batch, seen by the weights of step 6
    cfg = config(shards, 1)
    cfg.init_from = str(straight)
    messages = []
    train(cfg, str(tmp_path / "next"), log=messages.append)
    assert f"initialised from {straight}" in messages
    assert losses(tmp_path / "next")[1] < a[1] - 0.01, (losses(tmp_path / "next"), a)


def test_config_that_cannot_shard_fails_before_compiling(shards, tmp_path):
    from jav.train.diffusion import validate

    # a 32-device mesh described without devices: validate needs only its shape
    mesh = jax.sharding.AbstractMesh((1, 4, 1, 8), ("data", "fsdp", "context", "tensor"))
    cfg = config(shards, 1)
    with pytest.raises(ValueError, match="model.video.heads=2 is not divisible by mesh tensor=8"):
        validate(cfg, mesh)
    cfg.model.video.heads = cfg.model.audio.heads = 8
    cfg.model.video.width = cfg.model.audio.width = 128
    with pytest.raises(ValueError, match="train.batch_size=2 is not divisible by mesh data x fsdp=4"):
        validate(cfg, mesh)
    cfg.train.batch_size, cfg.train.grad_accum = 8, 4
    with pytest.raises(ValueError, match="train.batch_size=8 is not divisible by train.grad_accum=4 x mesh data x fsdp=4"):
        validate(cfg, mesh)
    cfg = config(shards, 1)
    cfg.data.dir = ""
    with pytest.raises(ValueError, match="data.dir is not set"):
        train(cfg, str(tmp_path / "nodata"), log=lambda _: None)
    cfg = config(shards, 1)
    cfg.data.dir = str(tmp_path / "missing")
    with pytest.raises(Exception, match="missing"):
        train(cfg, str(tmp_path / "nodir"), log=lambda _: None)


def test_nan_batch_is_skipped_and_counted():
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx

    from jav.clip_tokens import TokenLayout
    from jav.models import init_model
    from jav.train.step import optimizer, train_step

    cfg = test_config.get_config()
    layout = TokenLayout.from_config(cfg)
    model = init_model(cfg.model, jax.random.key(0))
    graphdef, params = nnx.split(model)
    tx = optimizer(cfg)
    opt_state = tx.init(params)
    ids, mask = model.text_encoder.tokenizer.encode(["a red ball bouncing on a dark background"] * 2)
    video = np.zeros((2,) + layout.video_shape, np.float32)
    video[1, 3, 4, 5, 0] = np.nan
    batch = dict(video=jnp.asarray(video), audio=jnp.zeros((2,) + layout.audio_shape), text_ids=jnp.asarray(ids), text_mask=jnp.asarray(mask))
    before = jax.tree.map(np.asarray, params)
    params, opt_state, ema, m = train_step(
        graphdef, params, opt_state, None, batch, jax.random.key(0), tx=tx, layout=layout, flow_cfg=ml_collections.FrozenConfigDict(cfg.flow)
    )
    assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    batch["video"] = jnp.zeros_like(batch["video"])
    params, opt_state, ema, m = train_step(
        graphdef, params, opt_state, None, batch, jax.random.key(0), tx=tx, layout=layout, flow_cfg=ml_collections.FrozenConfigDict(cfg.flow)
    )
    assert int(m["skipped"]) == 0 and np.isfinite(float(m["loss"]))


def test_gradient_accumulation_averages_microbatches():
    import ml_collections
    import optax
    from flax import nnx

    from jav.clip_tokens import TokenLayout
    from jav.models import init_model
    from jav.train.step import loss_and_grads

    cfg = test_config.get_config()
    layout = TokenLayout.from_config(cfg)
    graphdef, params = nnx.split(init_model(cfg.model, jax.random.key(0)))
    ids, mask = nnx.merge(graphdef, params).text_encoder.tokenizer.encode(
        ["a red ball bouncing on a dark background", "a blue ball and a green ball bouncing on a navy background"] * 2
    )
    rng = np.random.default_rng(0)
    batch = dict(
        video=rng.uniform(-1, 1, (4,) + layout.video_shape).astype(np.float32),
        audio=rng.uniform(-1, 0, (4,) + layout.audio_shape).astype(np.float32),
        text_ids=ids,
        text_mask=mask,
    )
    kw = dict(layout=layout, flow_cfg=ml_collections.FrozenConfigDict(cfg.flow))
    key = jax.random.key(3)
    run = jax.jit(loss_and_grads, static_argnames=("graphdef", "layout", "flow_cfg", "accum_steps"))
    loss, aux, grads = run(graphdef, params, batch, key, accum_steps=2, **kw)
    # microbatch i holds rows i, i + 2 and draws from fold_in(key, i)
    parts = [run(graphdef, params, {k: v[i::2] for k, v in batch.items()}, jax.random.fold_in(key, i), accum_steps=1, **kw) for i in range(2)]
    np.testing.assert_allclose(loss, (parts[0][0] + parts[1][0]) / 2, rtol=1e-6)
    np.testing.assert_allclose(aux["loss_audio"], (parts[0][1]["loss_audio"] + parts[1][1]["loss_audio"]) / 2, rtol=1e-6)
    for g, g0, g1 in zip(jax.tree.leaves(grads), jax.tree.leaves(parts[0][2]), jax.tree.leaves(parts[1][2])):
        np.testing.assert_allclose(g, (g0 + g1) / 2, rtol=1e-5, atol=1e-8)
    assert float(optax.tree.norm(grads)) > 0
    with pytest.raises(ValueError, match="not divisible by train.grad_accum=3"):
        run(graphdef, params, batch, key, accum_steps=3, **kw)


def test_peak_flops_is_measured_on_cpu_and_taken_from_the_table_elsewhere():
    from jav import perf

    peak, source = perf.peak_flops("float32")
    assert "measured" in source and 1e8 < peak < 1e14, (peak, source)
    assert perf.peak_flops("float32") == (peak, source)  # measured once per process

    class FakeDevice:
        device_kind = "TPU v5p"

    assert perf._peak_flops("bfloat16", FakeDevice()) == (459e12, "TPU v5p bfloat16 datasheet")


def test_shape_buckets_train_one_compiled_step_per_shape(shards, tmp_path):
    # a second bucket of 1 s clips (8 frames, 100 log-mel frames) beside the 2 s clips
    root = tmp_path / "buckets"
    root.mkdir()
    (root / "long").symlink_to(shards)
    synthetic.main(["--out", str(root / "short"), "--num", "4", "--duration", "1.0"])
    cfg = config(str(root), 8)
    cfg.data.buckets = [(2, {"short": 1.0}), (None, {"short": 1.0, "long": 1.0})]  # short clips first
    lines = []
    metrics = train(cfg, str(tmp_path / "run"), log=lines.append)
    buckets = [line for line in lines if line.startswith("shape bucket")]
    assert len(buckets) == 2, lines
    assert "video (8, 32, 32, 3) audio (100, 64)" in buckets[0] and "video (16, 32, 32, 3) audio (200, 64)" in buckets[1]
    assert metrics["step"] == 8 and np.isfinite(metrics["loss"])


def test_command_line_names_a_bad_setting_in_one_line(shards, tmp_path):
    """`python -m jav.train` with a config that cannot run prints jav's error as one line, no traceback."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    cmd = [
        sys.executable,
        "-m",
        "jav.train",
        "--config",
        str(root / "configs" / "test.py"),
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.dir={shards}",
        "--config.train.batch_size=3",
        "--config.mesh.shape.fsdp=2",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("JAV_TRACEBACK", None)
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("jav.train: ValueError: train.batch_size=3 is not divisible by mesh data x fsdp=2"), out.stderr[-2000:]
