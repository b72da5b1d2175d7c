"""Measure what a trained audio VAE's reconstructions keep on held-out clips:
log-mel L1 (overall and on burst frames), and burst onsets and pitch after
Griffin-Lim, beside the same measures for the original log-mel; plus the
latents' mean/std and the 212-frame (2.125 s) case the latent demo uses.

    python -m jav.train --config configs/audio_vae.py --workdir runs/vae/audio   # train (the autoencoder phase)
    python -m benchmarks.audio_vae --workdir runs/vae/audio                      # evaluate its EMA weights

Held-out clips are seeds 10000.. . The table's numbers go to WORKDIR/eval.json.
A run saved by the retired benchmark loop (params.msgpack) is converted once
with `python -m benchmarks.convert_msgpack_run OLD_DIR NEW_DIR`.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.audio_inversion import score
from jav.audio import griffin_lim, log_mel
from jav.data import bounce
from jav.runs import WEIGHTS, load_autoencoder

HELD_OUT_SEED = 10_000
BURST_MARGIN = 0.3  # a frame is a burst frame when some bin is this far above its clip's median (normalised log-mel)


def burst_frames(logmel: np.ndarray) -> np.ndarray:
    """[B, Ta] bool: frames where some bin rises BURST_MARGIN above its clip's per-bin median."""
    floor = np.median(logmel, axis=1, keepdims=True)
    return (logmel - floor).max(axis=-1) > BURST_MARGIN


def logmel_errors(recon: np.ndarray, target: np.ndarray) -> dict:
    error = np.abs(np.asarray(recon) - np.asarray(target))  # [B, Ta, n_mels]
    bursts = burst_frames(np.asarray(target))
    return {
        "l1": float(error.mean()),
        "l1_burst_frames": float(error[bursts].mean()),
        "l1_floor_frames": float(error[~bursts].mean()),
        "burst_frame_share": float(bursts.mean()),
    }


def load_model(workdir: str, kind: str, weights: str = "ema") -> nnx.Module:
    """The `kind` model ("audio_vae" or "vocoder") of a `python -m jav.train` run, with its
    `weights` (jav.runs.load_autoencoder); any other workdir exits naming the command that makes one."""
    train = f"python -m jav.train --config configs/{kind}.py --workdir {workdir}"
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        if os.path.exists(os.path.join(workdir, "params.msgpack")):
            raise SystemExit(
                f"{workdir} holds the retired params.msgpack format: convert it once with "
                f"`python -m benchmarks.convert_msgpack_run {workdir} NEW_DIR`, or train with `{train}`"
            )
        raise SystemExit(f"{workdir} is not a run directory: train one with `{train}`")
    cfg, model = load_autoencoder(workdir, weights)
    if cfg.model.get("kind") != kind:
        raise SystemExit(f"{workdir} is a run of model.kind={cfg.model.get('kind')!r}, not {kind!r}: train one with `{train}`")
    return model


def evaluation_arguments(description: str) -> argparse.ArgumentParser:
    """The command line this benchmark and benchmarks/vocoder.py share."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory written by `python -m jav.train`")
    parser.add_argument("--weights", default="ema", choices=WEIGHTS)
    parser.add_argument("--num", type=int, default=16, help="held-out clips")
    return parser


def save_eval(workdir: str, result: dict) -> None:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {workdir}/eval.json")


def evaluate(model: nnx.Module, test_clips: int) -> dict:
    graphdef, params = nnx.split(model)

    @jax.jit
    def encode_decode(params, logmel):
        vae = nnx.merge(graphdef, params)
        mean, _ = vae.encode(logmel)
        return vae.decode(mean), mean  # the posterior mean, as a sampler's decode would see

    clips = [bounce.generate_clip(HELD_OUT_SEED + s) for s in range(test_clips)]
    logmel = log_mel.waveform_to_logmel(np.stack([c.audio for c in clips]))  # [N, 200, 64]
    recon, latents = encode_decode(params, logmel)
    result = {
        "reconstruction": logmel_errors(recon, logmel),
        "constant_median": logmel_errors(np.broadcast_to(np.median(np.asarray(logmel), axis=(0, 1)), logmel.shape), logmel),
        "latent_mean": float(jnp.mean(latents)),
        "latent_std": float(jnp.std(latents)),
        "latent_shape": list(latents.shape),
        # Per token feature, over clips and frames: for normalising latents feature by feature.
        "latent_feature_mean": np.asarray(jnp.mean(latents, axis=(0, 1))).round(5).tolist(),
        "latent_feature_std": np.asarray(jnp.std(latents, axis=(0, 1))).round(5).tolist(),
    }
    for name, mel in (("original", logmel), ("vae", recon)):
        waves = np.asarray(griffin_lim.logmel_to_waveform(mel, jax.random.key(0)))
        result[f"griffin_lim_{name}"] = {k: float(v) for k, v in score(clips, waves).items()}
        if name == "vae":
            again = log_mel.waveform_to_logmel(waves)
            result["vae_griffin_lim_reanalysed_l1"] = logmel_errors(again, logmel)["l1"]

    # The latent demo's clip length: 2.125 s -> 212 frames -> 53 latent frames.
    long_params = bounce.BounceParams(duration=2.125)
    long_mel = log_mel.waveform_to_logmel(np.stack([bounce.generate_clip(HELD_OUT_SEED + s, long_params).audio for s in range(4)]))
    long_recon, long_latents = encode_decode(params, long_mel)
    result["clip_2125ms"] = {
        "logmel_shape": list(long_mel.shape),
        "latent_shape": list(long_latents.shape),
        "recon_shape": list(long_recon.shape),
        **logmel_errors(long_recon, long_mel),
    }
    return result


def report(result: dict) -> None:
    print(f"\nheld-out log-mel L1 (normalised units; burst frames {result['reconstruction']['burst_frame_share']:.1%})")
    print(f"{'':22s} {'all':>7s} {'burst':>7s} {'floor':>7s}")
    for name in ("reconstruction", "constant_median"):
        e = result[name]
        print(f"{name:22s} {e['l1']:7.4f} {e['l1_burst_frames']:7.4f} {e['l1_floor_frames']:7.4f}")
    print(f"\n{'log-mel -> Griffin-Lim':24s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>6s} {'<10ms':>6s} {'invent':>6s} {'pitch':>5s}")
    for name in ("original", "vae"):
        s = result[f"griffin_lim_{name}"]
        print(
            f"{name:24s} {s['contacts']:3.0f} {s['median_ms']:7.2f} {s['p90_ms']:6.2f} {s['max_ms']:6.1f} "
            f"{s['within_10ms']:6.3f} {s['invented']:6.0f} {s['pitch_agreement']:5.2f}"
        )
    c = result["clip_2125ms"]
    feature_std = np.asarray(result["latent_feature_std"])
    print(
        f"\nlatents {result['latent_shape']}: mean {result['latent_mean']:.4f} std {result['latent_std']:.4f} "
        f"(per-feature std {feature_std.min():.3f} to {feature_std.max():.3f})"
    )
    print(
        f"2.125 s clips: log-mel {c['logmel_shape']} -> latents {c['latent_shape']} -> {c['recon_shape']}, "
        f"L1 {c['l1']:.4f} (burst frames {c['l1_burst_frames']:.4f})"
    )


def main(argv=None) -> dict:
    args = evaluation_arguments(__doc__).parse_args(argv)
    model = load_model(args.workdir, "audio_vae", args.weights)
    result = evaluate(model, args.num)
    report(result)
    save_eval(args.workdir, result)
    return result


if __name__ == "__main__":
    main()
