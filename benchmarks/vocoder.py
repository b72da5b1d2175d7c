"""Compare a trained neural vocoder (jav/models/vocoder.py) with Griffin-Lim on
held-out bounce-world clips: burst onset error against the true contacts,
invented onsets, pitch agreement, the L1 between the output's re-analysed
log-mel and the input log-mel (all frames and burst frames), and speed in
seconds of audio per second.

    python -m jav.train --config configs/vocoder.py --workdir runs/vocoder   # train (the autoencoder phase)
    python -m benchmarks.vocoder --workdir runs/vocoder                      # evaluate its EMA weights
    python -m benchmarks.vocoder --workdir runs/vocoder --vae runs/vae/audio
        # also both vocoders on the reconstructions of an audio VAE run (configs/audio_vae.py)

Held-out clips are seeds 10000.. . The table's numbers go to WORKDIR/eval.json.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from benchmarks.audio_inversion import score
from benchmarks.audio_vae import HELD_OUT_SEED, evaluation_arguments, load_model, logmel_errors, save_eval
from jav.audio import griffin_lim, log_mel
from jav.data import bounce
from jav.models import vocoder


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
        vae = load_model(vae_dir, "audio_vae")
        inputs["vae"] = nnx.jit(lambda m, x: m.decode(m.encode(x)[0]))(vae, logmel)
    paths = {"griffin_lim": lambda x: griffin_lim.logmel_to_waveform(x, jax.random.key(0)), "vocoder": lambda x: vocoder.vocode(model, x)}
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
    print(f"\n{result['clips']} held-out clips, {result['audio_seconds']:.0f} s of audio, one batched call on {result['device']}")
    print(
        f"{'log-mel -> waveform':28s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>6s} {'<10ms':>6s} {'invent':>6s} "
        f"{'pitch':>5s} {'melL1':>6s} {'burst':>6s} {'audio s/s':>9s}"
    )
    for name, row in result.items():
        if not isinstance(row, dict) or name == "original_audio":
            continue
        print(
            f"{name:28s} {row['contacts']:3.0f} {row['median_ms']:7.2f} {row['p90_ms']:6.2f} {row['max_ms']:6.1f} "
            f"{row['within_10ms']:6.3f} {row['invented']:6.0f} {row['pitch_agreement']:5.2f} "
            f"{row['reanalysed_l1']:6.4f} {row['reanalysed_l1_burst_frames']:6.4f} {row['audio_s_per_s']:9.1f}"
        )
    s = result["original_audio"]
    print(
        f"{'original audio':28s} {s['contacts']:3.0f} {s['median_ms']:7.2f} {s['p90_ms']:6.2f} {s['max_ms']:6.1f} "
        f"{s['within_10ms']:6.3f} {s['invented']:6.0f} {s['pitch_agreement']:5.2f}"
    )


def main(argv=None) -> dict:
    parser = evaluation_arguments(__doc__)
    parser.add_argument("--vae", default=None, help="an audio VAE run: also vocode its reconstructions (EMA weights)")
    args = parser.parse_args(argv)
    model = load_model(args.workdir, "vocoder", args.weights)
    result = evaluate(model, args.num, args.vae)
    report(result)
    save_eval(args.workdir, result)
    return result


if __name__ == "__main__":
    main()
