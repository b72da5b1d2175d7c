"""Multi-host runs on one machine: two CPU processes of 4 devices each, joined by
jav.distributed through launch/local_multiprocess.sh, train on fsdp=8 like one
device; the joining rules and the launcher on their own.

tests/multihost_train.py runs the training in the two processes (the device count
is fixed when JAX starts); the reference is the session fixture `mesh_reference`
(tests/mesh_case.py, one device, in this process).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from jav import distributed
from mesh_case import STEPS, losses
from xla_flags import FAST_COMPILE

ROOT = pathlib.Path(__file__).resolve().parent.parent
HELPER = str(ROOT / "tests" / "multihost_train.py")
LAUNCH = str(ROOT / "launch" / "local_multiprocess.sh")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAV_", "SLURM_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_DEFAULT_MATMUL_PRECISION="highest", XLA_FLAGS=FAST_COMPILE)
    env.update(extra)
    return env


def _start(cmd, env) -> subprocess.Popen:
    # A session of its own, so that a timeout kills the launcher and every process it started.
    return subprocess.Popen([str(c) for c in cmd], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{proc.args} exited with {proc.returncode}:\n{out[-3000:]}"
    return out


def _read(workdir, process: int) -> dict:
    return json.loads((workdir / f"process_{process}.json").read_text())


@pytest.mark.xdist_group("mesh_reference")
def test_two_processes_train_like_one_device_on_disjoint_halves_of_each_batch(mesh_reference, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    # The persistent cache stays on, as for the rest of the suite: only process 0 finds the
    # step in it, and jav.distributed connects the device groups of this fsdp mesh up front.
    joined = _start([LAUNCH, 2, sys.executable, HELPER, two, mesh_reference["data"]], _env(JAV_CPU_DEVICES="4", JAX_ENABLE_COMPILATION_CACHE="true"))
    _finish(joined, 480)
    ref, p0, p1 = mesh_reference, _read(two, 0), _read(two, 1)

    assert (p0["process_index"], p1["process_index"], p0["process_count"]) == (0, 1, 2)
    assert any("2 process(es) x 4 cpu device(s) = 8" in m and "2 part(s) of 4" in m for m in p0["messages"]), p0["messages"]
    assert p1["messages"] == ["process 1 of 2, joined through JAV_COORDINATOR_ADDRESS=" + p0["messages"][0].split("=")[1]]

    # What each process loaded: its own half of every global batch, in order, disjoint from
    # the other's; the first two steps (one epoch of 16 clips) cover every clip once.
    assert (ref["shard"], p0["shard"], p1["shard"]) == ([0, 1], [0, 2], [1, 2])
    assert len(ref["batches"]) == len(p0["batches"]) == len(p1["batches"]) == STEPS
    for step, (a, b, whole) in enumerate(zip(p0["batches"], p1["batches"], ref["batches"]), 1):
        assert not set(a) & set(b), f"step {step}: both processes loaded clips {set(a) & set(b)}"
        assert a + b == whole, f"step {step}: processes loaded {a} + {b}, one process {whole}"
    assert sorted(sum(p0["batches"][:2] + p1["batches"][:2], [])) == list(range(16))
    # The checkpoint keeps process 0's data position for all: it must be every process's.
    assert p0["loader_state"] == p1["loader_state"]

    # The same losses; one line per step in metrics.jsonl, so only process 0 wrote it.
    base, multi = ref["losses"], losses(two / "run")
    assert len((two / "run" / "metrics.jsonl").read_text().splitlines()) == STEPS
    assert sorted(base) == sorted(multi) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([multi[s] for s in sorted(multi)], [base[s] for s in sorted(base)], rtol=1e-5)

    # The checkpoint both processes wrote, read back by both onto fsdp=8, holds the
    # reference's parameters: each process half of the shards, every shard the slice of
    # the one-device parameter it stands for, the distinct shards of a parameter tiling it.
    assert len(p0["restored"]) == len(p1["restored"])
    shards = {}
    for path, index, total in p0["restored"] + p1["restored"]:
        shards.setdefault(path, {})[json.dumps(index)] = total
    assert shards.keys() == ref["params"].keys()
    split = 0
    for path, by_index in shards.items():
        full = ref["params"][path]
        got, want, size = [], [], 0
        for index, total in by_index.items():
            window = tuple(slice(a, b) for a, b in json.loads(index))
            got.append(total)
            want.append(full[window].sum())
            size += full[window].size
        assert size == full.size, f"{path}: the shards cover {size} of {full.size} values"
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=path)
        split += len(by_index) > 1
    assert split > len(shards) // 2, f"only {split} of {len(shards)} parameters are split over the mesh"

    # SIGTERM to one process stops both at the same step (a preemption never strands a peer in a collective).
    assert p0["stopped_at"] == p1["stopped_at"] >= STEPS + 3


def test_launcher_gives_each_process_its_rank_and_stops_all_when_one_fails(tmp_path):
    script = (
        f'echo "$JAV_PROCESS_ID $JAV_NUM_PROCESSES $JAV_COORDINATOR_ADDRESS $JAX_PLATFORMS $XLA_FLAGS" > {tmp_path}/env_$JAV_PROCESS_ID; '
        f'if [ "$JAV_PROCESS_ID" = 1 ]; then sleep 0.5; exit 3; fi; echo $$ > {tmp_path}/pid_$JAV_PROCESS_ID; exec sleep 60'
    )
    proc = _start([LAUNCH, 3, "bash", "-c", script], _env(JAV_CPU_DEVICES="2", XLA_FLAGS="--xla_foo"))
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the launcher did not stop the other processes when one failed")
    assert proc.returncode == 3, out
    assert "a process exited with status 3; stopping the other 2" in out
    lines = [(tmp_path / f"env_{i}").read_text().split() for i in range(3)]
    assert [line[:2] for line in lines] == [[str(i), "3"] for i in range(3)]
    assert len({line[2] for line in lines}) == 1 and lines[0][2].startswith("127.0.0.1:")
    assert all(line[3:] == ["cpu", "--xla_foo", "--xla_force_host_platform_device_count=2"] for line in lines)
    for i in (0, 2):
        assert not _running(int((tmp_path / f"pid_{i}").read_text())), f"process {i} was left running"


def _running(pid: int) -> bool:
    try:  # a zombie has exited; it only waits for its parent to collect its status
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stub(bin_dir: pathlib.Path, name: str, log: pathlib.Path) -> None:
    """An executable `name` that writes its arguments, one a line, to `log`."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f'#!/usr/bin/env bash\necho "JAV_LOCAL_DEVICE_IDS=${{JAV_LOCAL_DEVICE_IDS:-}}" > {log}\nprintf "%s\\n" "$@" >> {log}\n')
    (bin_dir / name).chmod(0o755)


def test_cluster_scripts_run_the_trainer_with_the_config_and_overrides(tmp_path):
    """With gcloud, xpk and srun replaced by stubs: what each script would start."""
    log, bin_dir = tmp_path / "argv", tmp_path / "bin"
    for name in ("gcloud", "xpk", "srun"):
        _stub(bin_dir, name, log)
    env = _env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    config, workdir, override = "configs/ltx2_19b.py", "/shared/runs/a b", "--config.data.dir=/shared/data"

    def run(*cmd, **extra):
        subprocess.run([str(c) for c in cmd], env=dict(env, **extra), cwd=ROOT, check=True, timeout=30)
        return log.read_text().splitlines()

    argv = run(ROOT / "launch" / "tpu_vm.sh", "my-v5p-64", "us-east5-a", config, workdir, override)
    assert argv[1:6] == ["compute", "tpus", "tpu-vm", "ssh", "my-v5p-64"] and "--worker=all" in argv
    command = next(a for a in argv if a.startswith("--command="))
    assert command == (
        "--command=cd $HOME/jav && .venv/bin/python -m jav.train --config configs/ltx2_19b.py --workdir /shared/runs/a\\ b --config.data.dir=/shared/data"
    )

    argv = run(
        ROOT / "launch" / "gke_xpk.sh",
        "cluster",
        "run1",
        "v5p-128",
        config,
        workdir,
        override,
        DOCKER_IMAGE="gcr.io/p/jav:1",
        XPK_STORAGE="shared",
        NUM_SLICES="2",
    )
    assert argv[1:3] == ["workload", "create"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags == {
        "--cluster": "cluster",
        "--workload": "run1",
        "--tpu-type": "v5p-128",
        "--num-slices": "2",
        "--docker-image": "gcr.io/p/jav:1",
        "--storage": "shared",
        "--command": "python3 -m jav.train --config configs/ltx2_19b.py --workdir /shared/runs/a\\ b --config.data.dir=/shared/data",
    }

    sbatch = ROOT / "launch" / "slurm_gpu.sbatch"
    argv = run(sbatch, config, workdir, override)
    assert argv == ["JAV_LOCAL_DEVICE_IDS=", "--kill-on-bad-exit=1", ".venv/bin/python", "-m", "jav.train", "--config", config, "--workdir", workdir, override]
    argv = run(sbatch, config, workdir, override, SLURM_NTASKS_PER_NODE="1", SLURM_GPUS_ON_NODE="4")
    assert argv[0] == "JAV_LOCAL_DEVICE_IDS=0,1,2,3"
    argv = run(sbatch, config, workdir, override, JAV_IMAGE="registry/jav:cuda12", JAV_MOUNTS="/shared:/shared")
    assert argv[1:] == [
        "--kill-on-bad-exit=1",
        "--container-image",
        "registry/jav:cuda12",
        "--container-workdir",
        "/opt/jav",
        "--container-mounts",
        "/shared:/shared",
        "python",
        "-m",
        "jav.train",
        "--config",
        config,
        "--workdir",
        workdir,
        override,
    ]


@pytest.mark.parametrize("script", ["local_multiprocess.sh", "tpu_vm.sh", "gke_xpk.sh", "slurm_gpu.sbatch"])
def test_launch_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "launch" / script)], check=True, timeout=30)


def test_one_process_without_variables_joins_nothing():
    plan = distributed.plan({"JAX_PLATFORMS": "cpu", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})
    assert (plan.source, plan.kwargs, plan.num_processes) == ("single", None, 1)
    assert distributed.initialize({}).startswith("one process")
    distributed.require_single_process("jav.sample", {})


def test_jav_variables_give_every_argument():
    env = {"JAV_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAV_NUM_PROCESSES": "2", "JAV_PROCESS_ID": "1", "JAV_LOCAL_DEVICE_IDS": "0,1", "SLURM_JOB_ID": "7"}
    plan = distributed.plan(env)
    assert plan.source == "jav" and plan.num_processes == 2
    assert plan.kwargs == dict(
        coordinator_address="127.0.0.1:1234",
        num_processes=2,
        process_id=1,
        local_device_ids=[0, 1],
        cluster_detection_method="deactivate",
        coordinator_bind_address="127.0.0.1:1234",
    )
    assert "coordinator_bind_address" not in distributed.plan(dict(env, JAV_COORDINATOR_ADDRESS="10.0.0.1:1234")).kwargs
    with pytest.raises(RuntimeError, match="unset JAV_COORDINATOR_ADDRESS"):
        distributed.require_single_process("python -m jav.sample", env)


def test_slurm_tasks_use_jax_detection():
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "16", "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}
    plan = distributed.plan(env)
    assert (plan.source, plan.num_processes, plan.kwargs) == ("slurm", 16, dict(cluster_detection_method="slurm", local_device_ids=None))
    assert distributed.plan(dict(env, JAV_LOCAL_DEVICE_IDS="0,1,2,3")).kwargs["local_device_ids"] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="srun --ntasks=1"):
        distributed.require_single_process("python -m jav.evaluate", env)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAV_PROCESS_ID": "1"}, "JAV_PROCESS_ID is set but JAV_COORDINATOR_ADDRESS, JAV_NUM_PROCESSES are not"),
        ({"JAV_COORDINATOR_ADDRESS": "h:1", "JAV_NUM_PROCESSES": "2"}, "JAV_COORDINATOR_ADDRESS, JAV_NUM_PROCESSES are set but JAV_PROCESS_ID is not"),
        ({"JAV_COORDINATOR_ADDRESS": "h", "JAV_NUM_PROCESSES": "2", "JAV_PROCESS_ID": "0"}, "JAV_COORDINATOR_ADDRESS='h' must be host:port"),
        ({"JAV_COORDINATOR_ADDRESS": "h:1", "JAV_NUM_PROCESSES": "two", "JAV_PROCESS_ID": "0"}, "JAV_NUM_PROCESSES='two' is not an integer"),
        ({"JAV_COORDINATOR_ADDRESS": "h:1", "JAV_NUM_PROCESSES": "2", "JAV_PROCESS_ID": "2"}, r"JAV_PROCESS_ID=2 must be in \[0, JAV_NUM_PROCESSES=2\)"),
        ({"JAV_COORDINATOR_ADDRESS": "h:1", "JAV_NUM_PROCESSES": "2", "JAV_PROCESS_ID": "0", "JAV_LOCAL_DEVICE_IDS": "0;1"}, "comma-separated"),
        ({"JAV_LOCAL_DEVICE_IDS": "0"}, "JAV_LOCAL_DEVICE_IDS is set but this is not a multi-process run"),
    ],
)
def test_half_set_variables_name_the_missing_one(env, message):
    with pytest.raises(ValueError, match=message):
        distributed.plan(env)
