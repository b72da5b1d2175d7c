#!/usr/bin/env bash
# Runs N processes of one command on this machine as one multi-process JAX run
# (CPU devices, gloo collectives over loopback): a multi-host run without hosts.
#
#   launch/local_multiprocess.sh N COMMAND [ARG...]
#
#   JAV_CPU_DEVICES=4 launch/local_multiprocess.sh 2 \
#       python -m jav.train --config configs/test.py --workdir runs/mp --config.data.dir=runs/data
#
# Every process gets JAV_COORDINATOR_ADDRESS=127.0.0.1:<free port>, JAV_NUM_PROCESSES=N
# and its JAV_PROCESS_ID (0..N-1), which jav/distributed.py reads; JAX_PLATFORMS=cpu
# unless set; and with JAV_CPU_DEVICES=D, D simulated CPU devices each (appended to
# XLA_FLAGS as --xla_force_host_platform_device_count=D); JAX's persistent compilation
# cache is off unless JAX_ENABLE_COMPILATION_CACHE=true (see below). The workdir is shared, as a
# network filesystem is on a real cluster. Waits for all; when one fails, stops the
# others and exits with its status. SIGTERM or Ctrl-C goes to every process as
# SIGTERM (a preemption: the trainer saves, then stops); a second one kills them.
# Needs bash 4.3 or later (`wait -n`).
set -euo pipefail

if (( $# < 2 )) || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: [JAV_CPU_DEVICES=D] $0 N COMMAND [ARG...]   (N processes, N >= 1)" >&2
  exit 2
fi
if (( BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 3) )); then
  echo "$0 needs bash 4.3 or later for 'wait -n' (this is $BASH_VERSION)" >&2
  exit 2
fi
num_processes=$1
shift

if [[ -n ${JAV_CPU_DEVICES:-} ]]; then
  if ! [[ $JAV_CPU_DEVICES =~ ^[1-9][0-9]*$ ]]; then
    echo "JAV_CPU_DEVICES=$JAV_CPU_DEVICES must be a positive number of CPU devices per process" >&2
    exit 2
  fi
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$JAV_CPU_DEVICES"
fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
# Only process 0 finds CPU programs in JAX's persistent compilation cache (the key
# differs per process), so with a cache it runs ahead while the others compile, and
# gloo gives up on a group of devices whose first collective finds a peer more than
# 30 s late. jav.distributed connects the groups of an fsdp/data mesh at start; other
# meshes (tensor parallel across processes) are safe only if all compile in step.
export JAX_ENABLE_COMPILATION_CACHE=${JAX_ENABLE_COMPILATION_CACHE:-false}
# The OS picks a free port; it is released before process 0 binds it again, a small race worth its simplicity.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAV_COORDINATOR_ADDRESS=127.0.0.1:$port JAV_NUM_PROCESSES=$num_processes

pids=()
for ((i = 0; i < num_processes; i++)); do
  JAV_PROCESS_ID=$i "$@" &
  pids+=("$!")
done

stop_all() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # A JAX process blocked in a collective with a dead peer does not act on SIGTERM.
  for _ in {1..50}; do
    kill -0 "${pids[@]}" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

signals=0
forward() {
  signals=$((signals + 1))
  if (( signals == 1 )); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
  else  # a second Ctrl-C: do not wait for the save
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
}
trap forward TERM INT

remaining=$num_processes
while (( remaining > 0 )); do
  seen=$signals
  status=0
  wait -n || status=$?
  if (( signals != seen )); then
    continue  # the wait was cut short by a signal, not by a process exiting
  fi
  if (( status != 0 )); then
    echo "local_multiprocess: a process exited with status $status; stopping the other $((remaining - 1))" >&2
    stop_all
    exit "$status"
  fi
  remaining=$((remaining - 1))
done
