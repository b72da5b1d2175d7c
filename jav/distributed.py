"""Joins this process to a multi-process JAX run: the one place that calls
`jax.distributed.initialize`, before anything touches a device.

Where the processes come from decides how (the first that applies wins):

- `JAV_COORDINATOR_ADDRESS` (host:port of process 0), `JAV_NUM_PROCESSES`,
  `JAV_PROCESS_ID`, and optionally `JAV_LOCAL_DEVICE_IDS` (comma-separated
  GPU ids this process drives): processes started by hand or by
  `launch/local_multiprocess.sh` (CPU processes on one machine);
- SLURM's `srun` variables with more than one task (`launch/slurm_gpu.sbatch`):
  JAX's SLURM detection;
- a Cloud TPU VM or GKE TPU node (`launch/tpu_vm.sh`, `launch/gke_xpk.sh`):
  JAX's TPU detection finds the slice's workers itself;
- none of these: one process, nothing to join.

CPU processes exchange collectives over gloo, so the same path runs on a laptop.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jav.platforms import libtpu_installed, tpu_chips_visible

COORDINATOR, NUM_PROCESSES, PROCESS_ID, LOCAL_DEVICE_IDS = ("JAV_COORDINATOR_ADDRESS", "JAV_NUM_PROCESSES", "JAV_PROCESS_ID", "JAV_LOCAL_DEVICE_IDS")
# The variables JAX's SLURM detection reads; `srun` sets them all for each task.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this process joins: `source` names where the processes come from,
    `kwargs` go to `jax.distributed.initialize` (None: a single process)."""

    source: str
    kwargs: dict | None
    num_processes: int | None  # None: known only once JAX has asked the TPU metadata


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"{name}={env[name]!r} is not an integer") from None


def _local_device_ids(env: Mapping[str, str]) -> list[int] | None:
    value = env.get(LOCAL_DEVICE_IDS, "").strip()
    if not value:
        return None
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise ValueError(f"{LOCAL_DEVICE_IDS}={value!r} must be comma-separated device ids, e.g. 0,1,2,3") from None


def _from_jav_vars(env: Mapping[str, str]) -> Plan:
    missing = [v for v in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if not env.get(v)]
    if missing:
        given = ", ".join(v for v in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if env.get(v))
        raise ValueError(
            f"{given} {'is' if ',' not in given else 'are'} set but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not: a multi-process run needs all three "
            f"({COORDINATOR}=host:port of process 0, the same on every process; {NUM_PROCESSES}=N; "
            f"{PROCESS_ID}=0..N-1, one per process). Set the missing ones, or unset {given} to run one process."
        )
    address = env[COORDINATOR]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{COORDINATOR}={address!r} must be host:port of process 0, e.g. 10.0.0.1:1234")
    count, rank = _int(env, NUM_PROCESSES), _int(env, PROCESS_ID)
    if count < 1:
        raise ValueError(f"{NUM_PROCESSES}={count} must be at least 1")
    if not 0 <= rank < count:
        raise ValueError(f"{PROCESS_ID}={rank} must be in [0, {NUM_PROCESSES}={count})")
    kwargs = dict(
        coordinator_address=address,
        num_processes=count,
        process_id=rank,
        local_device_ids=_local_device_ids(env),
        # Other cluster variables in the environment (say an enclosing SLURM job) must not fill in the rest.
        cluster_detection_method="deactivate",
    )
    if host in _LOOPBACK:
        # A loopback coordinator serves only this machine's processes: do not open its port on every interface.
        kwargs["coordinator_bind_address"] = address
    return Plan("jav", kwargs, count)


def _on_tpu_vm(env: Mapping[str, str]) -> bool:
    platforms = env.get("JAX_PLATFORMS", "")
    if platforms and "tpu" not in platforms.split(","):
        return False  # a CPU-only run (tests, AOT checks) on a TPU host stays one process
    return libtpu_installed(env) and tpu_chips_visible()


def plan(env: Mapping[str, str] | None = None) -> Plan:
    """Reads the environment (default `os.environ`) -> how this process joins, or
    ValueError naming the variable that is missing or wrong and the fix."""
    env = os.environ if env is None else env
    if any(env.get(v) for v in (COORDINATOR, NUM_PROCESSES, PROCESS_ID)):
        return _from_jav_vars(env)
    if all(v in env for v in _SLURM_VARS) and _int(env, "SLURM_NTASKS") > 1:
        # JAX gives each task one GPU (SLURM_LOCALID); JAV_LOCAL_DEVICE_IDS overrides that
        # for one process per node driving all of the node's GPUs.
        return Plan("slurm", dict(cluster_detection_method="slurm", local_device_ids=_local_device_ids(env)), _int(env, "SLURM_NTASKS"))
    if env.get(LOCAL_DEVICE_IDS):
        raise ValueError(
            f"{LOCAL_DEVICE_IDS} is set but this is not a multi-process run: it applies only with "
            f"{COORDINATOR}/{NUM_PROCESSES}/{PROCESS_ID} or under srun; for one process use "
            "CUDA_VISIBLE_DEVICES instead"
        )
    if _on_tpu_vm(env):
        return Plan("tpu", {}, None)
    return Plan("single", None, 1)


def _connect_gloo() -> None:
    # gloo connects a group of devices at its first collective over them and gives
    # up on a peer more than 30 s late, as the others are when process 0, the one
    # process that finds CPU programs in JAX's persistent compilation cache, starts
    # stepping while they compile. Connect now, while the processes are in step, the
    # groups every run uses: all devices (a data-parallel step) and one device per
    # process (Orbax's barriers). Later waits on a connected group have no such limit.
    mesh = jax.make_mesh((jax.device_count(),), ("all",), axis_types=(jax.sharding.AxisType.Auto,))
    ones = jax.make_array_from_process_local_data(jax.sharding.NamedSharding(mesh, jax.P("all")), np.ones(jax.local_device_count()))
    total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(mesh, jax.P()))(ones)
    if int(total.addressable_data(0)) != jax.device_count():
        raise RuntimeError(
            f"a sum over the {jax.device_count()} devices of {jax.process_count()} processes gave {total}: the processes' collectives are not connected"
        )
    multihost_utils.sync_global_devices("jav.distributed.initialize")


def initialize(env: Mapping[str, str] | None = None) -> str:
    """Joins the run the environment describes (see the module docstring) ->
    a line saying how, for the log. Call it before anything touches a device;
    calling it again is a no-op."""
    p = plan(env)
    if p.kwargs is None:
        return "one process (no JAV_*, multi-task SLURM or TPU VM environment)"
    if not jax.distributed.is_initialized():
        # gloo is JAX's default today; set it so CPU processes keep real cross-process collectives whatever the default becomes.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**p.kwargs)
        if jax.default_backend() == "cpu":
            _connect_gloo()
    where = {"jav": f"{COORDINATOR}={p.kwargs['coordinator_address']}", "slurm": "SLURM's srun variables", "tpu": "JAX's TPU detection"}[p.source]
    return f"process {jax.process_index()} of {jax.process_count()}, joined through {where}"


def require_single_process(program: str, env: Mapping[str, str] | None = None) -> None:
    """Raises if the environment starts several processes of `program`, a tool
    that runs in one process (each process would write the same outputs)."""
    p = plan(env)
    if p.num_processes is not None and p.num_processes > 1:
        how = f"unset {COORDINATOR}, {NUM_PROCESSES} and {PROCESS_ID}" if p.source == "jav" else "run it outside srun, or with srun --ntasks=1"
        raise RuntimeError(f"{program} runs in one process, but this environment starts {p.num_processes} ({p.source}): {how}")
