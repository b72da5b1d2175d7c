#!/usr/bin/env bash
# Trains on TPU slices of a GKE cluster through xpk (`pip install xpk`): one pod per
# TPU VM host, every pod running the same `python -m jav.train`; jav/distributed.py
# sees the TPU and JAX finds the workers (and, across slices, the Megascale
# variables xpk sets) by itself.
#
#   launch/gke_xpk.sh CLUSTER WORKLOAD TPU_TYPE CONFIG WORKDIR [--config.KEY=VALUE ...]
#   XPK_STORAGE=jav-shared NUM_SLICES=2 launch/gke_xpk.sh my-cluster ltx2-run1 v5p-128 \
#       configs/ltx2_19b.py /jav-shared/runs/ltx2 --config.data.dir=/jav-shared/data/ltx2
#
# DOCKER_IMAGE: an image with jav installed, run as is: the repository's Dockerfile
# built with `docker build --build-arg ACCEL=tpu -t IMAGE .` and pushed where GKE pulls;
# without it xpk builds one from this checkout on BASE_DOCKER_IMAGE (default
# python:3.11) and each pod installs jav before training. WORKDIR and data.dir must
# be on storage every pod mounts (XPK_STORAGE: an `xpk storage attach`ed Filestore
# or GCS FUSE volume): all pods write each Orbax checkpoint into one directory.
# NUM_SLICES (default 1) > 1 needs the config's mesh to span slices on `data`.
# PROJECT and ZONE default to gcloud's. Rerun after `xpk workload delete` to resume.
# Not run here (no cluster): checked for syntax by tests/test_multihost.py only.
set -euo pipefail

if (( $# < 5 )); then
  echo "usage: $0 CLUSTER WORKLOAD TPU_TYPE CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
cluster=$1 workload=$2 tpu_type=$3 config=$4 workdir=$5
shift 5
repo=$(cd "$(dirname "$0")/.." && pwd)

train="python3 -m jav.train --config $(printf %q "$config") --workdir $(printf %q "$workdir")"
for override in "$@"; do
  train+=" $(printf %q "$override")"
done

args=(--cluster "$cluster" --workload "$workload" --tpu-type "$tpu_type" --num-slices "${NUM_SLICES:-1}")
if [[ -n ${DOCKER_IMAGE:-} ]]; then
  args+=(--docker-image "$DOCKER_IMAGE" --command "$train")
else
  args+=(--base-docker-image "${BASE_DOCKER_IMAGE:-python:3.11}" --script-dir "$repo"
         --command "pip install --quiet -e '.[tpu]' && $train")
fi
[[ -n ${XPK_STORAGE:-} ]] && args+=(--storage "$XPK_STORAGE")
[[ -n ${PROJECT:-} ]] && args+=(--project "$PROJECT")
[[ -n ${ZONE:-} ]] && args+=(--zone "$ZONE")

exec xpk workload create "${args[@]}"
