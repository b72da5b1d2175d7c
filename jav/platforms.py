"""Which accelerator platforms JAX may try, decided before JAX is imported.

`make test` installs libtpu beside the demo's packages (tests/test_aot.py
compiles for TPU slices on a CPU host). On a machine without TPU chips, JAX
would still hand libtpu a try at its first device query, and libtpu prints a
dozen lines of warnings about TPU worker hostnames to every command's stderr.
`quiet_platforms` leaves JAX to the CPU there, and only there: with TPU chips
visible, with a CUDA plugin installed, or with JAX_PLATFORMS set by the user,
nothing changes. `jav/__init__.py` calls it, so it runs before any jav module
imports JAX.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Mapping, MutableMapping

CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def tpu_chips_visible() -> bool:
    """TPU chips appear as /dev/accel* (v2-v4) or VFIO groups /dev/vfio/<n> (v5e and later)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def libtpu_installed(env: Mapping[str, str], installed=importlib.util.find_spec) -> bool:
    return bool(env.get("TPU_LIBRARY_PATH")) or installed("libtpu") is not None


def quiet_platforms(env: MutableMapping[str, str] = os.environ, *, chips_visible=tpu_chips_visible, installed=importlib.util.find_spec) -> str | None:
    """Sets env["JAX_PLATFORMS"] = "cpu" where libtpu is installed but no TPU chip and
    no CUDA plugin is: returns what it set, or None when it left the environment alone."""
    if "JAX_PLATFORMS" in env:
        return None
    if not libtpu_installed(env, installed) or chips_visible() or any(installed(p) is not None for p in CUDA_PLUGINS):
        return None
    env["JAX_PLATFORMS"] = "cpu"
    return "cpu"
