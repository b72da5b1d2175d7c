"""jav.platforms: CPU commands stay quiet where libtpu is installed without TPU chips."""

from jav.platforms import quiet_platforms


def finder(*present):
    return lambda name: object() if name in present else None


def test_libtpu_without_chips_leaves_jax_to_the_cpu():
    env = {}
    assert quiet_platforms(env, chips_visible=lambda: False, installed=finder("libtpu")) == "cpu"
    assert env == {"JAX_PLATFORMS": "cpu"}


def test_everything_else_is_left_alone():
    cases = [
        ({}, lambda: False, finder()),  # no libtpu: nothing to silence
        ({}, lambda: True, finder("libtpu")),  # a TPU VM: JAX must find its chips
        ({}, lambda: False, finder("libtpu", "jax_cuda12_plugin")),  # a GPU machine
        ({"JAX_PLATFORMS": "tpu"}, lambda: False, finder("libtpu")),  # the user's choice
    ]
    for env, chips, installed in cases:
        before = dict(env)
        assert quiet_platforms(env, chips_visible=chips, installed=installed) is None
        assert env == before
    env = {"TPU_LIBRARY_PATH": "/opt/libtpu.so"}  # libtpu given by path, no chips
    assert quiet_platforms(env, chips_visible=lambda: False, installed=finder()) == "cpu"


def test_every_command_package_quiets_the_platforms_before_it_imports_jax():
    """jav, benchmarks and data_pipelines each run quiet_platforms on import, so a command
    module that imports JAX at its top (benchmarks.sample_speed does) still sets it first."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    code = "import os, sys; import {}; print(os.environ.get('JAX_PLATFORMS'))"
    for package in ("jav", "benchmarks", "data_pipelines"):
        out = subprocess.run(
            [sys.executable, "-c", code.format(package)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert out.returncode == 0, out.stderr[-2000:]
        expected = quiet_platforms(dict(env))  # what this machine's jav would set: "cpu" here, None on a TPU or GPU host
        assert out.stdout.strip() == str(expected), (package, out.stdout)
