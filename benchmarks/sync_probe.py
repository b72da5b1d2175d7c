"""Does the joint module carry timing? The held-out denoising loss of one modality
given the other, with the true partner clip against a partner that shows (or
sounds) the same caption with other motion.

    python -m benchmarks.sync_probe --workdirs RUN [RUN ...] [--num 64] [--json OUT]

For each run (EMA weights at its last checkpoint) and `--num` held-out clips
(bounce seeds 1,000,000 and up), at fixed timesteps and noise:

- v2a: the audio's velocity loss with the video clean (t = 0), given
  `true`: the clip's own video; `moved`: a video of the same caption (same
  colours and background, so the same pitches are right) with other motion,
  whose contacts fall elsewhere; `off`: the true video with the cross-modal
  flag off (what modality guidance contrasts against).
- a2v: the same for the video loss with the audio clean.

If the coupling carries timing, `true` is clearly lower than `moved`: the
gain (moved - true) / moved is the fraction of the loss the partner's timing
explains. A model whose joint module carries no timing scores the same on both
(and `none` always does). Seconds per run, no sampling: the quick test of a
change before a sampled evaluation (python -m jav.evaluate --tasks v2a,a2v).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav import cli, flow
from jav.clip_tokens import TokenLayout
from jav.data.bounce import generate_clip, render, scene_for_caption
from jav.evaluate import HELD_OUT_SEED, real_arrays, world_params
from jav.sample import load_run

TIMESTEPS = (0.3, 0.5, 0.7, 0.9)
OTHER_MOTION_SEED = 2_000_000  # motion seeds of the `moved` partners


def probe(workdir: str, num: int = 64, batch_size: int = 16, timesteps=TIMESTEPS, log=print) -> dict:
    """{task: {partner: loss}, gain} of one run; partners true / moved / off."""
    cfg, model, step = load_run(workdir)
    layout = TokenLayout.from_config(cfg)
    world = world_params(cfg)
    clips = [generate_clip(HELD_OUT_SEED + i, world) for i in range(num)]
    moved = [render(scene_for_caption(c.caption, OTHER_MOTION_SEED + i, world), world) for i, c in enumerate(clips)]
    video, audio = real_arrays(cfg, clips)
    moved_video, moved_audio = real_arrays(cfg, moved)
    ids, mask = model.text_encoder.tokenizer.encode([c.caption for c in clips])
    graphdef, state = nnx.split(model)
    pos = {m: jnp.asarray(p) for m, p in layout.pos.items()}

    @functools.partial(jax.jit, static_argnames=("target", "cross"))
    def loss(state, x0, partner, text_ids, text_mask, key, t, *, target: str, cross: bool):
        """The target modality's velocity loss at timestep t, the other modality clean."""
        m = nnx.merge(graphdef, state)
        given = "video" if target == "audio" else "audio"
        eps = flow.standard_normal(key, x0.shape)
        tt = {target: jnp.full(x0.shape[:2], t), given: jnp.zeros(partner.shape[:2])}
        x = {target: flow.noise(x0, eps, tt[target]), given: partner}
        cross_modal = jnp.full((x0.shape[0],), cross)
        v = m(x, tt, m.encode_text(text_ids, text_mask), text_mask, cross_modal, pos=pos, grid=layout.grid)[target]
        return jnp.square(v - flow.velocity_target(x0, eps)).mean()

    out = {"workdir": workdir, "step": step, "num": num, "joint": cfg.model.joint.mode}
    for task, target in (("v2a", "audio"), ("a2v", "video")):
        res = {"true": [], "moved": [], "off": []}
        for b in range(0, num, batch_size):
            rows = slice(b, b + batch_size)
            x0 = layout.to_tokens(jnp.asarray(video[rows]), jnp.asarray(audio[rows]))
            x0_moved = layout.to_tokens(jnp.asarray(moved_video[rows]), jnp.asarray(moved_audio[rows]))
            given = "video" if target == "audio" else "audio"
            for i, t in enumerate(timesteps):
                key = jax.random.fold_in(jax.random.key(i), b)
                for name, partner, cross in (("true", x0[given], True), ("moved", x0_moved[given], True), ("off", x0[given], False)):
                    res[name].append(
                        float(loss(state, x0[target], partner, jnp.asarray(ids[rows]), jnp.asarray(mask[rows]), key, t, target=target, cross=cross))
                    )
        out[task] = {k: float(np.mean(v)) for k, v in res.items()}
        out[task]["gain"] = (out[task]["moved"] - out[task]["true"]) / out[task]["moved"]
        # per timestep (the lists run batch-major, timestep-minor)
        per_t = {k: np.asarray(v).reshape(-1, len(timesteps)).mean(0) for k, v in res.items()}
        out[task]["gain_by_t"] = {str(t): float((per_t["moved"][i] - per_t["true"][i]) / per_t["moved"][i]) for i, t in enumerate(timesteps)}
        by_t = ", ".join(f"t={t} {100 * g:.1f}%" for t, g in out[task]["gain_by_t"].items())
        log(
            f"{workdir} (step {step}, {cfg.model.joint.mode}) {task}: {target} loss with the true partner "
            f"{out[task]['true']:.4f}, other motion {out[task]['moved']:.4f}, coupling off {out[task]['off']:.4f}; "
            f"timing gain {100 * out[task]['gain']:.1f}% ({by_t})"
        )
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdirs", nargs="+", required=True, help="run directories written by python -m jav.train")
    parser.add_argument("--num", type=int, default=64, help="held-out clips")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None, help="append one JSON line per run here")
    args = parser.parse_args(argv)
    results = []
    for workdir in args.workdirs:
        results.append(probe(workdir, args.num, args.batch, log=lambda m: print(m, flush=True)))
        if args.json:
            cli.append_json(args.json, results[-1])
    return results


if __name__ == "__main__":
    main()
