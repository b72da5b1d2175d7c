#!/usr/bin/env bash
# Trains on every worker of a Cloud TPU VM slice (a pod: v4-32, v5p-64, v6e-64, ...).
# Each worker runs the same `python -m jav.train`; jav/distributed.py sees a TPU VM
# and lets JAX find the slice's workers and this worker's rank in the TPU metadata.
#
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
#   launch/tpu_vm.sh my-v5p-64 us-east5-a configs/ltx2_19b.py /mnt/shared/runs/ltx2 \
#       --config.data.dir=/mnt/shared/data/ltx2
#
# Before: the jav checkout with its virtual environment (`pip install -e '.[tpu]'`) at
# the same path on every worker, JAV_DIR (default: ~/jav, JAV_PYTHON: .venv/bin/python
# inside it); WORKDIR and data.dir on a filesystem every worker mounts at the same path
# (Filestore/NFS or a gcsfuse mount): all workers write each Orbax checkpoint into one
# directory and read it back on resume. Rerun the same command to resume. PROJECT
# picks the gcloud project (default: gcloud's). Not run here (no TPU): checked for
# syntax by tests/test_multihost.py only.
set -euo pipefail

if (( $# < 4 )); then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
tpu_name=$1 zone=$2 config=$3 workdir=$4
shift 4

# Quoted here, expanded by each worker's shell: $HOME is the worker's.
remote="cd ${JAV_DIR:-\$HOME/jav} && ${JAV_PYTHON:-.venv/bin/python} -m jav.train"
remote+=" --config $(printf %q "$config") --workdir $(printf %q "$workdir")"
for override in "$@"; do
  remote+=" $(printf %q "$override")"
done

exec gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" ${PROJECT:+--project="$PROJECT"} \
  --worker=all --command="$remote"
