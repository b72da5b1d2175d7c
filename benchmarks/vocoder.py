"""Train the neural vocoder (jav/models/vocoder.py) briefly on bounce-world clips
and compare it with Griffin-Lim on held-out clips: burst onset error against the
true contacts, invented onsets, pitch agreement, the L1 between the output's
re-analysed log-mel and the input log-mel (all frames and burst frames), and
speed in seconds of audio per second.

    python -m benchmarks.vocoder --workdir runs/vocoder --minutes 12     # train, save, evaluate
    python -m benchmarks.vocoder --workdir runs/vocoder --eval_only      # evaluate a saved run
    python -m benchmarks.vocoder --workdir runs/vocoder --eval_only --vae runs/vae/audio
        # also both vocoders on the audio VAE's reconstructions

Training: random 64-frame crops (0.64 s) of 256 clips (seeds 0..255) with the
matching waveform span, batch 16, Adam with a cosine decay over the time budget.
Held-out clips are seeds 10000.. . The workdir gets model_config.json +
params.msgpack (vocoder.load_params reads them), the same weights as an
autoencoder-phase run (config.json + checkpoints/, for jav.runs.load_autoencoder),
train_log.jsonl and eval.json.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.audio_inversion import score
from benchmarks.audio_vae import (HELD_OUT_SEED, export_phase_run, load_or_train, logmel_errors, save_eval, timed_loop,
                                  training_arguments)
from configs import vocoder as vocoder_configs
from jav.audio import griffin_lim, log_mel
from jav.data import bounce
from jav.models import audio_vae, vocoder


def train(args, cfg, workdir: str) -> vocoder.Vocoder:
    waves = np.stack([bounce.generate_clip(s).audio for s in range(args.train_clips)])  # [N, 32000]
    mels = np.asarray(log_mel.waveform_to_logmel(waves))  # [N, 200, 64]
    model = vocoder.init_model(cfg, jax.random.key(args.seed))
    print(f"vocoder: {vocoder.parameter_count(model):,} parameters", flush=True)
    graphdef, params = nnx.split(model)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=args.lr))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, logmel, wave, lr):
        opt_state[1].hyperparams["learning_rate"] = lr
        loss = lambda p: vocoder.training_loss(nnx.merge(graphdef, p), {"logmel": logmel, "wave": wave}, None, cfg)
        (total, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, dict(terms, loss=total)

    rng, hop = np.random.default_rng(args.seed), cfg.hop

    def one_step(i, lr):
        nonlocal params, opt_state
        rows = rng.choice(len(mels), args.batch)
        offsets = rng.integers(0, mels.shape[1] - args.crop + 1, args.batch)
        logmel = np.stack([mels[r, o:o + args.crop] for r, o in zip(rows, offsets)])
        wave = np.stack([waves[r, o * hop:(o + args.crop) * hop] for r, o in zip(rows, offsets)])
        params, opt_state, terms = step(params, opt_state, logmel, wave, jnp.float32(lr))
        return terms

    start = time.perf_counter()
    i = timed_loop(args, workdir, 50, one_step, lambda: audio_vae.save_params(workdir, nnx.merge(graphdef, params)))
    model = nnx.merge(graphdef, params)
    audio_vae.save_params(workdir, model)
    print(f"trained {i} steps in {time.perf_counter() - start:.0f} s; saved {workdir}/params.msgpack", flush=True)
    export_phase_run(workdir, model, vocoder_configs.get_config(args.config), i)
    return model


def timed(fn, *args) -> tuple[np.ndarray, float, float]:
    """(output, seconds of the first call (compile + run), seconds of a second call)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return np.asarray(out), first, time.perf_counter() - start


def evaluate(model: vocoder.Vocoder, test_clips: int, vae_dir: str | None) -> dict:
    clips = [bounce.generate_clip(HELD_OUT_SEED + s) for s in range(test_clips)]
    logmel = log_mel.waveform_to_logmel(np.stack([c.audio for c in clips]))  # [N, 200, 64]
    audio_seconds = logmel.shape[0] * logmel.shape[1] * model.cfg.hop / model.cfg.sample_rate
    inputs = {"original": logmel}
    if vae_dir:
        vae = audio_vae.load_params(vae_dir)
        inputs["vae"] = nnx.jit(lambda m, x: m.decode(m.encode(x)[0]))(vae, logmel)
    paths = {"griffin_lim": lambda x: griffin_lim.logmel_to_waveform(x, jax.random.key(0)),
             "vocoder": lambda x: vocoder.vocode(model, x)}
    result = {"clips": test_clips, "audio_seconds": audio_seconds, "device": str(jax.devices()[0])}
    for input_name, mel in inputs.items():
        for path, fn in paths.items():
            waves, first, second = timed(fn, mel)
            row = {k: float(v) for k, v in score(clips, waves).items()}
            row.update({f"reanalysed_{k}": v for k, v in logmel_errors(log_mel.waveform_to_logmel(waves), logmel).items()})
            row.update(compile_and_run_s=first, run_s=second, audio_s_per_s=audio_seconds / second)
            result[f"{input_name}/{path}"] = row
    result["original_audio"] = {k: float(v) for k, v in score(clips, np.stack([c.audio for c in clips])).items()}
    return result


def report(result: dict) -> None:
    print(f"\n{result['clips']} held-out clips, {result['audio_seconds']:.0f} s of audio, one batched call "
          f"on {result['device']}")
    print(f"{'log-mel -> waveform':28s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>6s} {'<10ms':>6s} {'invent':>6s} "
          f"{'pitch':>5s} {'melL1':>6s} {'burst':>6s} {'audio s/s':>9s}")
    for name, row in result.items():
        if not isinstance(row, dict) or name == "original_audio":
            continue
        print(f"{name:28s} {row['contacts']:3.0f} {row['median_ms']:7.2f} {row['p90_ms']:6.2f} {row['max_ms']:6.1f} "
              f"{row['within_10ms']:6.3f} {row['invented']:6.0f} {row['pitch_agreement']:5.2f} "
              f"{row['reanalysed_l1']:6.4f} {row['reanalysed_l1_burst_frames']:6.4f} {row['audio_s_per_s']:9.1f}")
    s = result["original_audio"]
    print(f"{'original audio':28s} {s['contacts']:3.0f} {s['median_ms']:7.2f} {s['p90_ms']:6.2f} {s['max_ms']:6.1f} "
          f"{s['within_10ms']:6.3f} {s['invented']:6.0f} {s['pitch_agreement']:5.2f}")


def main():
    parser = training_arguments(__doc__, "runs/vocoder", "default", "configs/vocoder.py", minutes=12.0, train_clips=256)
    parser.add_argument("--vae", default=None, help="an audio VAE run: also vocode its reconstructions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    experiment = vocoder_configs.get_config(args.config)
    model = load_or_train(args, vocoder.load_params, experiment, lambda: train(args, experiment.model, args.workdir))
    result = evaluate(model, args.test_clips, args.vae)
    report(result)
    save_eval(args.workdir, result)


if __name__ == "__main__":
    main()
