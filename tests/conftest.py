"""Shared pytest set-up: CPU only, a persistent compilation cache, float32 matmuls."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Tests compile far more than they run: tests/xla_flags.py compiles a tiny model's
# train step in 16-18 s instead of 45 s on this CPU, at half the default's step speed,
# which the suite's few steps per program repay many times over.
from xla_flags import FAST_COMPILE  # noqa: E402

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """8 bounce-world clips in two ArrayRecord shards (once per test process)."""
    from jav.data import synthetic

    out = tmp_path_factory.mktemp("shards")
    synthetic.main(["--out", str(out), "--num", "8", "--records-per-shard", "4"])
    return str(out)


@pytest.fixture(scope="session")
def tiny_diffusion_run(tmp_path_factory, shards):
    """configs/test.py trained 2 steps (EMA 0.5) on 8 bounce clips: the teacher or policy
    that the distillation and reward-tuning tests start from (once per test process)."""
    from configs import test as test_config
    from jav.train.diffusion import train

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = test_config.get_config()
    cfg.data.dir = shards
    cfg.train.steps = 2
    cfg.train.ema_decay = 0.5
    train(cfg, str(root / "run"), log=lambda _: None)
    return root / "run"


@pytest.fixture(scope="session")
def mesh_reference(tmp_path_factory):
    """tests/mesh_case.py's model trained on one device, the reference that the multi-device
    and multi-host runs must reproduce: its data, run, losses, batches, loader state and
    the final parameters (once per test process)."""
    import mesh_case

    root = tmp_path_factory.mktemp("mesh_reference")
    data = mesh_case.write_data(root / "data")
    cfg = mesh_case.config(data, mesh_case.STEPS, mesh_case.ONE_DEVICE)
    loader = mesh_case.train_recording(cfg, root / "run", log=lambda _: None)
    return dict(
        data=data,
        run=root / "run",
        losses=mesh_case.losses(root / "run"),
        shard=loader.shard,
        batches=loader.batches,
        loader_state=loader.get_state(),
        params=mesh_case.full_arrays(mesh_case.restore_on_mesh(cfg, root / "run")),
    )


@pytest.fixture
def gcs_bucket(tmp_path, monkeypatch):
    """The folder that holds the emulated gs:// buckets (tests/gcs_emulation.py), with the
    working directory moved to an empty folder that a gs:// path taken for a local one would land in."""
    from gcs_emulation import emulated_gcs

    root = tmp_path / "gcs"
    root.mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with emulated_gcs(root, monkeypatch):
        yield root
