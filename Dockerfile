# jav in a container, for clusters that start pods or tasks from an image
# (launch/gke_xpk.sh DOCKER_IMAGE=..., launch/slurm_gpu.sbatch JAV_IMAGE=...).
#
#   docker build -t jav:cpu .
#   docker build --build-arg ACCEL=cuda12 -t jav:cuda12 .   # NVIDIA GPUs (the CUDA libraries come as wheels)
#   docker build --build-arg ACCEL=tpu -t jav:tpu .         # TPU VMs
#   docker run --rm jav:cpu python -m jav.train --config configs/bounce_demo.py --workdir /runs/demo ...
#
# The exact pins of requirements.txt (and requirements-ACCEL.txt) are installed
# first, in their own layer, so a code change rebuilds only the last two steps.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG ACCEL=cpu
RUN case "$ACCEL" in cpu|cuda12|tpu) ;; *) echo "ACCEL=$ACCEL: use cpu, cuda12 or tpu" >&2; exit 1;; esac

WORKDIR /opt/jav
COPY requirements.txt requirements-cuda12.txt requirements-tpu.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && if [ "$ACCEL" != cpu ]; then pip install --no-cache-dir -r "requirements-$ACCEL.txt"; fi

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

CMD ["python", "-m", "jav.train", "--helpshort"]
