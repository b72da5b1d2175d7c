"""How well a trained video VAE reconstructs held-out bounce-world clips, and how fast it runs.

    python -m benchmarks.video_vae --workdir runs/vae/video [--num 64] [--out FILE.json]

On held-out clips (bounce seeds 10^9 + i, never trained on) it reports PSNR of
the whole clip and of its first frame through the posterior mean; the world's
metrics (jav.data.bounce_metrics) of the reconstructed frames with the
ORIGINAL soundtrack beside those of the original clips, so a round trip that
moved a disc's bounce shows up as sync error; the latents' mean and standard
deviation (to normalise them for diffusion); encode and decode throughput,
whole-clip and in temporal chunks; and one long clip through the chunked path
against the whole-clip path (time, and XLA's temporary buffer size).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.data import bounce, bounce_metrics
from jav.data.bounce_stream import HELDOUT_SEED, bounce_params
from jav.models import video_vae as V
from jav.runs import load_autoencoder


def to_uint8(x) -> np.ndarray:
    return np.clip(np.rint((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr_each(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR per clip of two float arrays in [-1, 1], [N, ...]."""
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-10))


def timed(fn, *args, repeats: int = 2) -> float:
    """Seconds per call after one warm-up call (which compiles)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats


def temp_bytes(graphdef, state, x, previous=None, decode=False) -> int:
    fn = V._decode_chunk if decode else V._encode_chunk
    analysis = fn.lower(graphdef, state, x, previous).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes) if analysis is not None else -1


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.video_vae", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a video VAE run of the autoencoder phase")
    parser.add_argument("--num", type=int, default=64, help="held-out clips")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--long-frames", type=int, default=65, help="frames of the long clip (1 + 4k)")
    parser.add_argument("--out", default=None, help="JSON file (default WORKDIR/benchmark.json)")
    args = parser.parse_args(argv)

    cfg, vae = load_autoencoder(args.workdir)
    params = bounce_params(cfg.data)
    step = max(int(p.name) for p in (pathlib.Path(args.workdir) / "checkpoints").iterdir() if p.name.isdigit())
    clips = [bounce.generate_clip(HELDOUT_SEED + i, params) for i in range(args.num)]
    x = np.stack([c.frames for c in clips]).astype(np.float32) / 127.5 - 1.0  # [N, T, H, W, 3]
    n, t = x.shape[:2]
    b = args.batch

    means, recons = [], []
    for i in range(0, n, b):
        mean, _ = V.encode_chunked(vae, jnp.asarray(x[i : i + b]), chunk_latents=0)
        means.append(np.asarray(mean))
        recons.append(np.asarray(V.decode_chunked(vae, mean, chunk_latents=0)))
    mean, recon = np.concatenate(means), np.concatenate(recons)
    psnr_clip, psnr_first = psnr_each(x, recon), psnr_each(x[:, :1], recon[:, :1])

    frames_out = to_uint8(recon)
    original = [bounce_metrics.clip_metrics(c.frames, c.audio, c.caption, params) for c in clips]
    round_trip = [bounce_metrics.clip_metrics(f, c.audio, c.caption, params) for f, c in zip(frames_out, clips)]
    world = {"original": bounce_metrics.aggregate(original), "reconstructed": bounce_metrics.aggregate(round_trip)}

    # Throughput, batches of `b` clips: whole clip, and chunks of one latent frame
    graphdef, state = nnx.split(vae)
    xb = jnp.asarray(x[:b])
    zb = jnp.asarray(mean[:b])
    speed = {}
    for name, c in (("whole", 0), ("chunked_1", 1)):
        enc = timed(lambda v: V.encode_chunked(vae, v, chunk_latents=c), xb)
        dec = timed(lambda z: V.decode_chunked(vae, z, chunk_latents=c), zb)
        speed[name] = {"encode_clips_per_s": b / enc, "encode_frames_per_s": b * t / enc, "decode_clips_per_s": b / dec, "decode_frames_per_s": b * t / dec}

    # One long clip: whole vs chunks of cfg.model.chunk_latents latent frames
    long_params = dataclasses.replace(params, duration=args.long_frames / params.fps)
    long_x = jnp.asarray(bounce.generate_clip(HELDOUT_SEED - 1, long_params).frames[None].astype(np.float32) / 127.5 - 1.0)
    chunk = int(cfg.model.chunk_latents) or 4
    ct = int(cfg.model.compression[0])
    long_z = V.encode_chunked(vae, long_x, chunk_latents=0)[0]
    long = {"frames": int(long_x.shape[1]), "chunk_latents": chunk}
    for name, c in (("whole", 0), ("chunked", chunk)):
        long[f"{name}_encode_s"] = timed(lambda v: V.encode_chunked(vae, v, chunk_latents=c), long_x, repeats=1)
        long[f"{name}_decode_s"] = timed(lambda z: V.decode_chunked(vae, z, chunk_latents=c), long_z, repeats=1)
    long["whole_encode_temp_mb"] = temp_bytes(graphdef, state, long_x) / 2**20
    long["whole_decode_temp_mb"] = temp_bytes(graphdef, state, long_z, decode=True) / 2**20
    first = long_x[:, : 1 + ct * (chunk - 1)]
    long["chunk_encode_temp_mb"] = temp_bytes(graphdef, state, first) / 2**20
    long["chunk_decode_temp_mb"] = temp_bytes(graphdef, state, long_z[:, :chunk], decode=True) / 2**20
    chunked_z = V.encode_chunked(vae, long_x, chunk_latents=chunk)[0]
    long["chunked_vs_whole_max_abs_latent_diff"] = float(jnp.abs(chunked_z - long_z).max())

    result = {
        "workdir": str(args.workdir),
        "step": step,
        "clips": n,
        "frames": t,
        "canvas": params.canvas,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "psnr_db": float(psnr_clip.mean()),
        "psnr_first_frame_db": float(psnr_first.mean()),
        "psnr_db_min": float(psnr_clip.min()),
        "latent_mean": float(mean.mean()),
        "latent_std": float(mean.std()),
        "latent_channel_std": [float(s) for s in mean.reshape(-1, mean.shape[-1]).std(0)],
        "world": world,
        "throughput": speed,
        "long_clip": long,
    }

    print(f"video VAE {args.workdir} (step {step}), {n} held-out clips of {t} frames at {params.canvas}x{params.canvas}")
    print(f"PSNR {result['psnr_db']:.2f} dB (first frame {result['psnr_first_frame_db']:.2f} dB, worst clip {result['psnr_db_min']:.2f} dB)")
    print(f"latents: mean {result['latent_mean']:+.4f}  std {result['latent_std']:.4f}")
    print(f"{'world metric':<22}{'original':>12}{'reconstructed':>15}")
    for k in ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1", "num_video_contacts", "num_audio_onsets"):
        print(f"{k:<22}{world['original'][k]:>12.3f}{world['reconstructed'][k]:>15.3f}")
    print(f"{'throughput (batch ' + str(b) + ')':<22}{'enc clips/s':>12}{'enc frames/s':>14}{'dec clips/s':>12}{'dec frames/s':>14}")
    for name, s in speed.items():
        print(f"{name:<22}{s['encode_clips_per_s']:>12.1f}{s['encode_frames_per_s']:>14.0f}{s['decode_clips_per_s']:>12.1f}{s['decode_frames_per_s']:>14.0f}")
    print(
        f"long clip of {long['frames']} frames: whole encode {long['whole_encode_s']:.2f}s / decode {long['whole_decode_s']:.2f}s "
        f"(XLA temp {long['whole_encode_temp_mb']:.1f} / {long['whole_decode_temp_mb']:.1f} MB); chunks of {chunk} latents "
        f"encode {long['chunked_encode_s']:.2f}s / decode {long['chunked_decode_s']:.2f}s (temp per chunk "
        f"{long['chunk_encode_temp_mb']:.1f} / {long['chunk_decode_temp_mb']:.1f} MB); chunked vs whole max |latent diff| "
        f"{long['chunked_vs_whole_max_abs_latent_diff']:.2e}"
    )
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.workdir) / "benchmark.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
