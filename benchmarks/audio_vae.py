"""Train the audio VAE on bounce-world log-mels for a fixed wall-clock budget and
measure what its reconstructions keep on held-out clips: log-mel L1 (overall and
on burst frames), and burst onsets and pitch after Griffin-Lim, beside the same
measures for the original log-mel; plus the latents' mean/std and the 212-frame
(2.125 s) case the latent demo uses.

    python -m benchmarks.audio_vae --workdir runs/vae/audio --minutes 30     # train, save, evaluate
    python -m benchmarks.audio_vae --workdir runs/vae/audio --eval_only      # evaluate a saved run
    python -m benchmarks.audio_vae --workdir runs/demo/vae/audio --eval_only # or a `python -m jav.train` run
    python -m benchmarks.audio_vae --workdir runs/vae/audio2 --init_from runs/vae/audio --minutes 20  # continue

Training: random 64-frame crops (0.64 s, most hold a burst) of 512 clips (seeds
0..511), batch 16, Adam with a cosine decay over the time budget, EMA of the
weights (the saved and evaluated ones). Held-out clips are seeds 10000.. . The
run's workdir gets model_config.json + params.msgpack (audio_vae.load_params
reads them), the same weights as an autoencoder-phase run (config.json +
checkpoints/, for jav.runs.load_autoencoder), train_log.jsonl and
eval.json (the printed table's numbers).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.audio_inversion import score
from configs import audio_vae as audio_vae_configs
from jav.audio import griffin_lim, log_mel
from jav.data import bounce
from jav.models import audio_vae

HELD_OUT_SEED = 10_000
BURST_MARGIN = 0.3  # a frame is a burst frame when some bin is this far above its clip's median (normalised log-mel)


def burst_frames(logmel: np.ndarray) -> np.ndarray:
    """[B, Ta] bool: frames where some bin rises BURST_MARGIN above its clip's per-bin median."""
    floor = np.median(logmel, axis=1, keepdims=True)
    return (logmel - floor).max(axis=-1) > BURST_MARGIN


def logmel_errors(recon: np.ndarray, target: np.ndarray) -> dict:
    error = np.abs(np.asarray(recon) - np.asarray(target))  # [B, Ta, n_mels]
    bursts = burst_frames(np.asarray(target))
    return {"l1": float(error.mean()), "l1_burst_frames": float(error[bursts].mean()),
            "l1_floor_frames": float(error[~bursts].mean()), "burst_frame_share": float(bursts.mean())}


def train(args, cfg, workdir: str) -> nnx.Module:
    clips = [bounce.generate_clip(s).audio for s in range(args.train_clips)]
    train_mel = np.asarray(log_mel.waveform_to_logmel(np.stack(clips)))  # [N, 200, 64]
    model = audio_vae.load_params(args.init_from) if args.init_from else audio_vae.init_vae(cfg, jax.random.key(args.seed))
    graphdef, params = nnx.split(model)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=args.lr))
    opt_state = tx.init(params)
    ema = params

    @jax.jit
    def step(params, opt_state, ema, batch, key, lr):
        opt_state[1].hyperparams["learning_rate"] = lr
        loss = lambda p: audio_vae.training_loss(nnx.merge(graphdef, p), {"logmel": batch}, key, cfg)
        (total, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: args.ema * e + (1 - args.ema) * p, ema, params)
        return params, opt_state, ema, dict(terms, loss=total)

    rng = np.random.default_rng(args.seed)

    def one_step(i, lr):
        nonlocal params, opt_state, ema
        rows = rng.choice(len(train_mel), args.batch)
        offsets = rng.integers(0, train_mel.shape[1] - args.crop + 1, args.batch) // 4 * 4
        batch = np.stack([train_mel[r, o:o + args.crop] for r, o in zip(rows, offsets)])
        params, opt_state, ema, terms = step(params, opt_state, ema, batch, jax.random.fold_in(jax.random.key(1), i),
                                             jnp.float32(lr))
        return terms

    start = time.perf_counter()
    i = timed_loop(args, workdir, 100, one_step, lambda: audio_vae.save_params(workdir, nnx.merge(graphdef, ema)))
    model = nnx.merge(graphdef, ema)
    audio_vae.save_params(workdir, model)
    print(f"trained {i} steps in {time.perf_counter() - start:.0f} s; saved {workdir}/params.msgpack", flush=True)
    export_phase_run(workdir, model, audio_vae_configs.get_config(args.config), i)
    return model


def timed_loop(args, workdir: str, warmup: int, one_step, save) -> int:
    """Runs `one_step(i, lr) -> terms` for `args.steps` steps, or `args.minutes` of wall
    clock when steps is 0, at a learning rate warmed up over `warmup` steps then
    cosine-decayed to a tenth of `args.lr`; logs every 50 steps to stdout and
    workdir/train_log.jsonl, calls `save()` every 5 minutes; returns the steps run."""
    budget, start, last_save, i = 60 * args.minutes, time.perf_counter(), time.perf_counter(), 0
    with open(os.path.join(workdir, "train_log.jsonl"), "a") as log:
        while True:
            elapsed = time.perf_counter() - start
            if elapsed > budget or (args.steps and i >= args.steps):
                return i
            frac = i / args.steps if args.steps else elapsed / budget
            lr = args.lr * min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            terms = one_step(i, lr)
            if i % 50 == 0:
                line = dict(step=i, seconds=round(time.perf_counter() - start, 1), lr=lr,
                            **{k: float(v) for k, v in terms.items()})
                print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()), flush=True)
                log.write(json.dumps(line) + "\n")
                log.flush()
            if time.perf_counter() - last_save > 300:
                save()
                last_save = time.perf_counter()
            i += 1


def training_arguments(description: str, workdir: str, config: str, config_file: str, minutes: float,
                       train_clips: int) -> argparse.ArgumentParser:
    """The command line this benchmark and benchmarks/vocoder.py share."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=workdir)
    parser.add_argument("--config", default=config, help=f"{config_file} variant")
    parser.add_argument("--eval_only", action="store_true")
    parser.add_argument("--export_steps", type=int, default=0,
                        help="with --eval_only: first export the saved run as an autoencoder-phase run at this step")
    parser.add_argument("--minutes", type=float, default=minutes, help="training wall-clock budget")
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: only the time budget)")
    parser.add_argument("--train_clips", type=int, default=train_clips)
    parser.add_argument("--test_clips", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64, help="training crop in log-mel frames (a multiple of 4)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    return parser


def load_or_train(args, load_params, experiment: ml_collections.ConfigDict, train_model) -> nnx.Module:
    """With --eval_only the saved model of args.workdir (first exported as an autoencoder-phase
    run at --export_steps when given; the EMA weights of its latest checkpoint when the workdir is
    a `python -m jav.train` run, such as `make demo`'s runs/demo/vae/audio), else train_model()."""
    os.makedirs(args.workdir, exist_ok=True)
    if not args.eval_only:
        return train_model()
    if not os.path.exists(os.path.join(args.workdir, "params.msgpack")) and os.path.isdir(
            os.path.join(args.workdir, "checkpoints")):
        from jav.runs import load_autoencoder
        return load_autoencoder(args.workdir)[1]
    model = load_params(args.workdir)
    if args.export_steps:
        export_phase_run(args.workdir, model, experiment, args.export_steps)
    return model


def save_eval(workdir: str, result: dict) -> None:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {workdir}/eval.json")


def export_phase_run(workdir: str, model: nnx.Module, experiment: ml_collections.ConfigDict, steps: int) -> None:
    """Makes workdir an autoencoder-phase run too: config.json (the experiment, with the trained model's
    keys) and an Orbax checkpoint at `steps` whose params and EMA are the model's, so that
    jav.runs.load_autoencoder (and jav.latents.LatentCodec) load it, and
    `python -m jav.train --config ... --workdir` resumes it (with fresh Adam moments)."""
    from jav.train.autoencoder import make_stream
    from jav.train.checkpoint import Checkpointer
    from jav.train.step import optimizer

    cfg = ml_collections.ConfigDict(experiment.to_dict())
    kind = cfg.model.kind
    cfg.model = ml_collections.ConfigDict(model.cfg.to_dict())
    cfg.model.kind = kind
    cfg.train.steps = max(cfg.train.steps, steps)
    params = nnx.state(model, nnx.Param)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=2))
    with Checkpointer(workdir, max_to_keep=cfg.train.keep_checkpoints) as ckpt:
        ckpt.save(steps, params=params, ema=params, opt_state=optimizer(cfg).init(params),
                  data_state=make_stream(cfg).get_state(), config=cfg, force=True)
        ckpt.wait()
    print(f"exported {workdir} as an autoencoder-phase run at step {steps}", flush=True)


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
    result = {"reconstruction": logmel_errors(recon, logmel),
              "constant_median": logmel_errors(np.broadcast_to(np.median(np.asarray(logmel), axis=(0, 1)), logmel.shape),
                                               logmel),
              "latent_mean": float(jnp.mean(latents)), "latent_std": float(jnp.std(latents)),
              "latent_shape": list(latents.shape),
              # Per token feature, over clips and frames: for normalising latents feature by feature.
              "latent_feature_mean": np.asarray(jnp.mean(latents, axis=(0, 1))).round(5).tolist(),
              "latent_feature_std": np.asarray(jnp.std(latents, axis=(0, 1))).round(5).tolist()}
    for name, mel in (("original", logmel), ("vae", recon)):
        waves = np.asarray(griffin_lim.logmel_to_waveform(mel, jax.random.key(0)))
        result[f"griffin_lim_{name}"] = {k: float(v) for k, v in score(clips, waves).items()}
        if name == "vae":
            again = log_mel.waveform_to_logmel(waves)
            result["vae_griffin_lim_reanalysed_l1"] = logmel_errors(again, logmel)["l1"]

    # The latent demo's clip length: 2.125 s -> 212 frames -> 53 latent frames.
    long_params = bounce.BounceParams(duration=2.125)
    long_mel = log_mel.waveform_to_logmel(np.stack([bounce.generate_clip(HELD_OUT_SEED + s, long_params).audio
                                                    for s in range(4)]))
    long_recon, long_latents = encode_decode(params, long_mel)
    result["clip_2125ms"] = {"logmel_shape": list(long_mel.shape), "latent_shape": list(long_latents.shape),
                             "recon_shape": list(long_recon.shape), **logmel_errors(long_recon, long_mel)}
    return result


def report(result: dict) -> None:
    print(f"\nheld-out log-mel L1 (normalised units; burst frames {result['reconstruction']['burst_frame_share']:.1%})")
    print(f"{'':22s} {'all':>7s} {'burst':>7s} {'floor':>7s}")
    for name in ("reconstruction", "constant_median"):
        e = result[name]
        print(f"{name:22s} {e['l1']:7.4f} {e['l1_burst_frames']:7.4f} {e['l1_floor_frames']:7.4f}")
    print(f"\n{'log-mel -> Griffin-Lim':24s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>6s} {'<10ms':>6s} "
          f"{'invent':>6s} {'pitch':>5s}")
    for name in ("original", "vae"):
        s = result[f"griffin_lim_{name}"]
        print(f"{name:24s} {s['contacts']:3.0f} {s['median_ms']:7.2f} {s['p90_ms']:6.2f} {s['max_ms']:6.1f} "
              f"{s['within_10ms']:6.3f} {s['invented']:6.0f} {s['pitch_agreement']:5.2f}")
    c = result["clip_2125ms"]
    feature_std = np.asarray(result["latent_feature_std"])
    print(f"\nlatents {result['latent_shape']}: mean {result['latent_mean']:.4f} std {result['latent_std']:.4f} "
          f"(per-feature std {feature_std.min():.3f} to {feature_std.max():.3f})")
    print(f"2.125 s clips: log-mel {c['logmel_shape']} -> latents {c['latent_shape']} -> {c['recon_shape']}, "
          f"L1 {c['l1']:.4f} (burst frames {c['l1_burst_frames']:.4f})")


def main():
    parser = training_arguments(__doc__, "runs/vae/audio", "ltx2", "configs/audio_vae.py", minutes=30.0, train_clips=512)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init_from", default="", help="a workdir whose params.msgpack to continue from (its config wins)")
    args = parser.parse_args()

    def train_model():
        cfg = audio_vae.load_params(args.init_from).cfg if args.init_from else audio_vae_configs.get_config(args.config).model
        return train(args, ml_collections.ConfigDict(cfg.to_dict()), args.workdir)

    model = load_or_train(args, audio_vae.load_params, audio_vae_configs.get_config(args.config), train_model)
    result = evaluate(model, args.test_clips)
    report(result)
    save_eval(args.workdir, result)


if __name__ == "__main__":
    main()
