"""Train the audio VAE briefly on bounce-world log-mels and measure what its
reconstructions keep: L1 against a constant per-bin predictor, and onsets and
pitch after Griffin-Lim, on held-out clips.

    python -m benchmarks.audio_vae                                   # 32 train clips, 400 steps
    python -m benchmarks.audio_vae --channels 32,64,128 --blocks 1 --steps 2000

CPU-sized by default; the numbers say whether the architecture learns more than
the spectrum's average shape, not what a full training run reaches.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks.audio_inversion import score
from configs import audio_vae as audio_vae_configs
from jav.audio import griffin_lim, log_mel
from jav.data import bounce
from jav.models import audio_vae


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--train_clips", type=int, default=32)
    parser.add_argument("--test_clips", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kl_weight", type=float, default=1e-4)
    args = parser.parse_args()

    cfg = audio_vae_configs.get_config()
    cfg.channels, cfg.blocks, cfg.kl_weight = tuple(int(c) for c in args.channels.split(",")), args.blocks, args.kl_weight
    train = [bounce.generate_clip(s) for s in range(args.train_clips)]
    test = [bounce.generate_clip(10_000 + s) for s in range(args.test_clips)]
    train_mel = np.asarray(log_mel.waveform_to_logmel(np.stack([c.audio for c in train])))  # [N, 200, 64]
    test_mel = log_mel.waveform_to_logmel(np.stack([c.audio for c in test]))

    model = audio_vae.init_vae(cfg, jax.random.key(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, 0.1))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss = lambda p: audio_vae.vae_loss(nnx.merge(graphdef, p), batch, key, cfg.kl_weight)
        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    @jax.jit
    def reconstruct(params, logmel):
        vae = nnx.merge(graphdef, params)
        return vae.decode(vae.encode(logmel)[0])  # the posterior mean, as a sampler's decode would see

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(args.steps):
        batch = train_mel[rng.choice(len(train_mel), args.batch, replace=False)]
        params, opt_state, terms = step(params, opt_state, batch, jax.random.fold_in(jax.random.key(1), i))
        if i % 100 == 0 or i == args.steps - 1:
            print(f"step {i}: l1 {float(terms['l1']):.4f} kl/feature {float(terms['kl']):.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    recon = reconstruct(params, test_mel)
    baseline = np.median(train_mel, axis=(0, 1))
    print(f"held-out L1: VAE {float(np.abs(np.asarray(recon) - np.asarray(test_mel)).mean()):.4f}, "
          f"constant per-bin median {float(np.abs(np.asarray(test_mel) - baseline).mean()):.4f}")
    for name, logmel in (("log-mel -> Griffin-Lim", test_mel), ("log-mel -> VAE -> Griffin-Lim", recon)):
        waves = np.asarray(griffin_lim.logmel_to_waveform(logmel, jax.random.key(0)))
        s = score(test, waves)
        print(f"{name:30s} contacts {s['contacts']} median {s['median_ms']:.2f} ms max {s['max_ms']:.1f} ms "
              f"within 10 ms {s['within_10ms']:.3f} invented {s['invented']} pitch {s['pitch_agreement']:.2f}")


if __name__ == "__main__":
    main()
