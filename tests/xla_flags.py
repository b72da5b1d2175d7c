"""How the test suite compiles: XLA's CPU backend without LLVM optimisation and with
its older (non-MLIR) fusion emitters.

Tests compile far more than they run. On the project's CPU the tiny model's train
step compiles in 45 s by default, 26-35 s without LLVM optimisation and 16-18 s
with the older emitters as well, and runs as fast as with the first (about half
the speed of the default's code), with the same losses; a model's jitted
initialisation compiles in 5 s instead of 7-9 s. tests/conftest.py sets these
for the test processes; tests that start processes of their own pass them on.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}  # for .compile(...)


def with_devices(count: int) -> str:
    """XLA_FLAGS for a process that simulates `count` CPU devices."""
    return f"--xla_force_host_platform_device_count={count} {FAST_COMPILE}"


def default_codegen(flags: str) -> str:
    """`flags` without the two settings above: XLA's optimised CPU code, for a test that runs many steps."""
    return " ".join(f for f in flags.split() if f not in FAST_COMPILE.split())
