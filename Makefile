# The two entry points of a fresh machine: `make demo` and `make test`.
# Each creates .venv from the pinned requirements on first use.
PYTHON ?= python3
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-distill demo-reward demo-latent demo-vae-video demo-vae-audio test bench clean .venv-torch

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

DEMO := runs/demo
DEMO_LATENT := runs/demo_latent

# The demo (configs/bounce_demo.py), each stage resuming if interrupted: 2,000
# clips of the bounce world as pixel / log-mel shards (once), the joint model
# trained on them (1,000 steps), then samples of 16 held-out captions (T2VA) and
# the soundtracks it makes for 16 real videos (V2A), through Griffin-Lim to
# $(DEMO)/samples/TASK/NNN.mp4 + NNN.json, and their metrics, then the report page
# $(DEMO)/report/index.html. 14 min 33 s from a fresh clone on 2 idle CPU cores (2026-12-07).
demo: $(STAMP) $(DEMO)/data/manifest.json
	$(PY) -m jav.train --config configs/bounce_demo.py --workdir $(DEMO)/run --config.data.dir=$(DEMO)/data
	$(PY) -m jav.evaluate --workdir $(DEMO)/run --num 16 --tasks t2va,v2a --out $(DEMO)/samples
	$(PY) -m jav.report $(DEMO)/run $(DEMO)/samples --out $(DEMO)/report --title "make demo"

# The demo's model distilled into a student that samples in 4 passes instead of 64
# (configs/distill.py, jav/train/distill.py), then both scored on the same 16
# held-out captions with NFE and seconds per clip (benchmarks/distill_compare.py).
# 200 distillation steps (the config's 300 are for longer-trained teachers) keep
# both commands inside 20 minutes on a 2-core CPU (benchmarks/RESULTS.md).
demo-distill: $(STAMP)
	test -d $(DEMO)/run/checkpoints || $(MAKE) --no-print-directory demo
	$(PY) -m jav.train --config configs/distill.py:$(DEMO)/run --workdir $(DEMO)/distill --config.train.steps=200
	$(PY) -m benchmarks.distill_compare --teacher $(DEMO)/run --student $(DEMO)/distill --num 16 --tasks t2va,v2a --student-steps 4,2,1

# The demo's model tuned for synchrony by SyncDPO (configs/sync_dpo.py, jav/train/sync_dpo.py:
# real clips preferred to the same clips with their sound moved by whole frames; no reward model
# to train or to hack), then it and the model it started from sampled and scored on the same 16
# held-out captions (T2VA and V2A), pair by pair. 8 min 11 s on a 2-core CPU after `make demo`
# (2026-12-07). 16 captions are few: its T2VA gain there (-221 ms) is gone on 64 (+15 ms), see
# benchmarks/RESULTS.md, "SyncDPO on the demo's model".
demo-reward: $(STAMP)
	test -d $(DEMO)/run/checkpoints || $(MAKE) --no-print-directory demo
	$(PY) -m jav.train --config configs/sync_dpo.py:$(DEMO)/run --workdir $(DEMO)/reward --config.train.steps=150 \
		--config.optim.lr=1e-5 --config.reward.dpo.sft_weight=300.0
	$(PY) -m jav.evaluate --workdir $(DEMO)/run --num 16 --tasks t2va,v2a --out $(DEMO)/reward/before
	$(PY) -m jav.evaluate --workdir $(DEMO)/reward --num 16 --tasks t2va,v2a --out $(DEMO)/reward/after
	$(PY) -m benchmarks.sync_pool --samples $(DEMO)/reward/after/t2va --against $(DEMO)/reward/before/t2va
	$(PY) -m benchmarks.sync_pool --samples $(DEMO)/reward/after/v2a --against $(DEMO)/reward/before/v2a

$(DEMO)/data/manifest.json: | $(STAMP)
	$(PY) -m jav.data.synthetic --out $(DEMO)/data --num 2000

# The same world in VAE latents (configs/bounce_latent.py, about 24 min): the
# causal video VAE and the audio VAE trained side by side, the clips encoded to
# latent shards, the joint model trained on them and sampled through the VAEs.
demo-latent: $(STAMP)
	$(MAKE) --no-print-directory -j2 demo-vae-video demo-vae-audio
	$(MAKE) --no-print-directory $(DEMO_LATENT)/latents/manifest.json
	$(PY) -m jav.train --config configs/bounce_latent.py --workdir $(DEMO_LATENT)/run --config.data.dir=$(DEMO_LATENT)/latents
	$(PY) -m jav.evaluate --workdir $(DEMO_LATENT)/run --num 16 --tasks t2va,v2a --out $(DEMO_LATENT)/samples

# The two VAEs train side by side (each keeps about one core busy), their lines
# prefixed with the model's name.
demo-vae-video demo-vae-audio: demo-vae-%: $(STAMP)
	set -o pipefail; $(PY) -m jav.train --config configs/$*_vae.py:demo --workdir $(DEMO_LATENT)/vae/$* 2>&1 \
		| sed -u 's/^/[$* VAE] /'

$(DEMO_LATENT)/latents/manifest.json: | $(STAMP)
	$(PY) -m jav.data.synthetic --out $(DEMO_LATENT)/latents --num 2000 --duration 2.125 --latent \
		--video-vae $(DEMO_LATENT)/vae/video --audio-vae $(DEMO_LATENT)/vae/audio

# The tests also cover the optional extras, which the demo does not need, so only
# `make test` installs them: libtpu (tests/test_aot.py compiles for a TPU slice
# ahead of time), transformers with the CPU build of torch (the T5 / UMT5 text
# encoders against their PyTorch reference; torch first, so that pip takes the
# CPU build) and Apache Beam (data_pipelines on the DirectRunner).
EXTRAS_STAMP := $(VENV)/.installed-extras
$(EXTRAS_STAMP): $(STAMP) requirements-tpu.txt requirements-hf.txt requirements-beam.txt
	$(PY) -m pip install -q -r requirements-tpu.txt
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-hf.txt
	$(PY) -m pip install -q -r requirements-beam.txt
	touch $(EXTRAS_STAMP)

# The report's page test opens it in Debian's headless Chromium (jav.report.browser),
# installed here if missing (about 30 s); JAV_REQUIRE_BROWSER makes its absence a failure.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_STAMP := $(VENV)/.installed-browser
$(BROWSER_STAMP): | $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	touch $(BROWSER_STAMP)

test: $(STAMP) $(EXTRAS_STAMP) $(BROWSER_STAMP)
	JAV_REQUIRE_BROWSER=1 $(PY) -m pytest -q -n 2 --dist loadgroup --durations=15

# The step-time benchmark beside diffusers' LTX-2 transformer (PyTorch, CPU), in
# its own venv; torch is installed first so that pip takes the CPU build.
TORCH_STAMP := .venv-torch/.installed
$(TORCH_STAMP): benchmarks/requirements-torch.txt
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/python -m pip install -q torch==2.13.0
	.venv-torch/bin/python -m pip install -q -r benchmarks/requirements-torch.txt
	touch $(TORCH_STAMP)

.venv-torch: $(TORCH_STAMP)

bench: $(STAMP) $(TORCH_STAMP)
	$(PY) -m benchmarks.step_time --config configs/ltx2_bench.py --reference --json runs/bench/step_time.jsonl

clean:
	rm -rf $(VENV) runs .jax_cache
