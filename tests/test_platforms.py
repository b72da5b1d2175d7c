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
