"""Shared pytest set-up: CPU only, a persistent compilation cache, float32 matmuls."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The files whose tests take longest (minutes, mostly compiling; `pytest --durations`)
# run first, so that `-n 2` workers pick them up at the start and finish together
# instead of one worker starting a long test at the end. Order within a file is kept.
SLOW_FIRST = ("test_multidevice.py", "test_multihost.py", "test_overfit.py", "test_preemption.py", "test_latents.py",
              "test_trainer.py", "test_memory_scaling.py", "test_context_parallel.py", "test_aot.py", "test_autoencoder.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: other files keep their order
