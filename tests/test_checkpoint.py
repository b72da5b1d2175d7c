"""Checkpoints: exact round trip of every part, pruning, restoring onto another mesh,
starting a run from another run's (EMA) params, and errors that name the path."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jav.train.checkpoint import Checkpointer, abstract_like, restore_params_from
from xla_flags import with_devices


def _params(scale=1.0):
    # A plain nested dict shaped like an nnx.State: modules -> variables -> arrays.
    return {
        "blocks": {"0": {"attn": {"kernel": scale * jnp.arange(12.0).reshape(3, 4)}, "norm": {"scale": jnp.full((4,), scale, jnp.bfloat16)}}},
        "out": {"bias": scale * jnp.ones((4,)), "kernel": scale * jnp.eye(4)},
    }


def _config():
    return ml_collections.ConfigDict({"model": {"width": 64, "name": "av_dit"}, "optim": {"lr": 3e-4}})


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save_run(workdir, steps, *, data_state, max_to_keep=3, extra=None):
    params, ema = _params(1.0), _params(0.5)
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    # One real update so the optimizer state holds non-trivial moments and count.
    updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    with Checkpointer(workdir, max_to_keep=max_to_keep) as ckpt:
        for step in steps:
            assert ckpt.save(step, params=params, ema=ema, opt_state=opt_state, data_state=data_state, config=_config(), extra=extra)
        ckpt.wait()
    return params, ema, opt_state


@pytest.mark.parametrize("data_state", [{"next_index": 7, "epoch": 1, "worker_states": [3, 4]}, b'{"next_index": 7}\x00\xff'])
def test_round_trip_and_max_to_keep(tmp_path, data_state):
    extra = {"reward_head": {"kernel": jnp.arange(8.0).reshape(2, 4)}}
    params, ema, opt_state = _save_run(tmp_path, [10, 20, 30], data_state=data_state, max_to_keep=2, extra=extra)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20", "30"]

    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        assert ckpt.latest_step() == 30
        out = ckpt.restore(
            abstract_params=abstract_like(params),
            abstract_ema=abstract_like(ema),
            abstract_opt_state=abstract_like(opt_state),
            abstract_extra=abstract_like(extra),
        )
        older = ckpt.restore(20, abstract_params=abstract_like(params), abstract_ema=abstract_like(ema), abstract_opt_state=abstract_like(opt_state))
    assert out["step"] == 30 and older["step"] == 20
    _assert_trees_equal(out["params"], params)
    _assert_trees_equal(out["ema"], ema)
    _assert_trees_equal(out["opt_state"], opt_state)  # NamedTuples and the int32 count included
    _assert_trees_equal(out["extra"], extra)
    assert older["extra"] is None
    assert out["data_state"] == data_state and type(out["data_state"]) is type(data_state)
    assert ml_collections.ConfigDict(json.loads(out["config_json"])) == _config()


def test_save_interval_and_force(tmp_path):
    params = _params()
    kw = dict(params=params, ema=params, opt_state={}, data_state=None, config=_config())
    with Checkpointer(tmp_path, save_interval_steps=5, async_save=False) as ckpt:
        assert ckpt.save(5, **kw)
        assert not ckpt.save(7, **kw)
        assert ckpt.save(8, force=True, **kw)  # e.g. the last step of a run
        assert ckpt.latest_step() == 8
        out = ckpt.restore(abstract_params=abstract_like(params), abstract_ema=abstract_like(params), abstract_opt_state={})
    assert out["data_state"] is None


def test_restore_params_from_other_run(tmp_path):
    params, ema, _ = _save_run(tmp_path / "pretrain", [1, 2], data_state={"next_index": 0})
    _assert_trees_equal(restore_params_from(tmp_path / "pretrain", use_ema=True, abstract_params=abstract_like(ema)), ema)
    _assert_trees_equal(restore_params_from(tmp_path / "pretrain", use_ema=False, abstract_params=abstract_like(params)), params)


def test_missing_or_unreadable_checkpoint_names_the_path(tmp_path):
    params = _params()
    abstract = abstract_like(params)
    empty = tmp_path / "empty_run"
    with Checkpointer(empty) as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError, match=str(empty / "checkpoints")):
            ckpt.restore(abstract_params=abstract, abstract_ema=abstract, abstract_opt_state={})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        restore_params_from(tmp_path / "nowhere", use_ema=True, abstract_params=abstract)

    _save_run(tmp_path / "run", [3], data_state=None)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3" / "ema")
    with pytest.raises(ValueError, match=f"could not restore checkpoint {tmp_path / 'run' / 'checkpoints' / '3'}"):
        restore_params_from(tmp_path / "run", use_ema=True, abstract_params=abstract)


# Runs in its own process: the main pytest process has one CPU device.
_RESHARD_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, ml_collections, numpy as np, optax
    from jax.sharding import NamedSharding
    from jav.train.checkpoint import Checkpointer, abstract_like

    workdir = sys.argv[1]
    assert jax.device_count() == 8
    params = {"embed": jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8), "bias": jnp.arange(8.0)}
    specs = {"embed": jax.P("fsdp", "tensor"), "bias": jax.P("tensor")}

    # Written on an 8-way fsdp mesh.
    mesh8 = jax.make_mesh((8,), ("fsdp",))
    saved = {"embed": jax.device_put(params["embed"], NamedSharding(mesh8, jax.P("fsdp"))),
             "bias": jax.device_put(params["bias"], NamedSharding(mesh8, jax.P()))}
    tx = optax.adamw(1e-3)
    opt = tx.init(saved)
    _, opt = tx.update(jax.tree.map(jnp.ones_like, saved), opt, saved)
    with Checkpointer(workdir) as ckpt:
        ckpt.save(4, params=saved, ema=saved, opt_state=opt, data_state={"next_index": 7},
                  config=ml_collections.ConfigDict({"mesh": [8]}))

    # Read onto a (fsdp=4, tensor=2) mesh.
    mesh42 = jax.make_mesh((4, 2), ("fsdp", "tensor"))
    target = {k: NamedSharding(mesh42, s) for k, s in specs.items()}
    abstract = abstract_like(saved, target)
    opt_target = jax.tree.map(lambda x: NamedSharding(mesh42, jax.P(*([None] * x.ndim))), opt)
    opt_target[0].mu.update(target)  # the Adam moments follow their params' layout
    opt_target[0].nu.update(target)
    with Checkpointer(workdir) as ckpt:
        out = ckpt.restore(abstract_params=abstract, abstract_ema=abstract,
                           abstract_opt_state=abstract_like(opt, opt_target))
    for tree in (out["params"], out["ema"]):
        for k in params:
            np.testing.assert_array_equal(np.asarray(tree[k]), np.asarray(params[k]))
            assert tree[k].sharding == target[k], (k, tree[k].sharding)
    mu = out["opt_state"][0].mu["embed"]
    np.testing.assert_array_equal(np.asarray(mu), np.asarray(opt[0].mu["embed"]))
    assert mu.sharding == target["embed"]
    assert out["opt_state"][0].count.sharding.mesh.shape == mesh42.shape
    assert out["data_state"] == {"next_index": 7}
    print("RESHARD_OK")
""")


def test_restore_onto_a_different_mesh(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=with_devices(8))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _RESHARD_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "RESHARD_OK" in proc.stdout, proc.stderr[-4000:]


def test_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
    # `--workdir runs/x` is the usual spelling; the array store needs absolute paths.
    monkeypatch.chdir(tmp_path)
    params, ema, opt_state = _save_run("runs/rel", [5], data_state={"i": 1})
    assert (tmp_path / "runs" / "rel" / "checkpoints" / "5").is_dir()
    with Checkpointer("runs/rel") as ckpt:
        out = ckpt.restore(abstract_params=abstract_like(params), abstract_ema=abstract_like(ema), abstract_opt_state=abstract_like(opt_state))
    _assert_trees_equal(out["params"], params)
    _assert_trees_equal(restore_params_from("runs/rel", use_ema=True, abstract_params=abstract_like(ema)), ema)
