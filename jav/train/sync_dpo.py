"""SyncDPO: preference tuning of a joint model on real clips against the same clips with
their sound moved in time (`reward.method="sync_dpo"` of the reward phase).

No reward model: the preferred example of a pair is a real bounce-world clip, the
rejected one the same picture with its log-mel moved by k whole video frames
(k in +-1 .. +-`reward.dpo.max_shift`). Both are windows cut from the inside of a
longer clip (`PairStream`), so nothing at their edges (where a rolled or padded track
would show a seam) tells them apart: only where the sound sits against the picture.

With `reward.dpo.pairs` the pairs are the policy's own instead (`PolicyPairStream`; made
by `python -m jav.train.policy_pairs`): its joint (T2VA) picture with the sound its V2A
makes for that picture, preferred to the sound it made beside the picture; or, with
`reward.dpo.prefer="real"`, the real clip of the same caption (the world's clip of the
caption's seed) preferred to the policy's whole clip, picture and sound (self-play: the
policy learns away from its own samples, towards the data's).

The loss is Diffusion-DPO's, in rectified-flow terms: both clips of a pair are noised
with the same noise and timesteps (T2VA: both streams noisy, each modality at its own
per-clip level), the policy's and the frozen reference's weighted velocity errors are
taken on each, and

    d = (err_policy(aligned) - err_ref(aligned)) - (err_policy(moved) - err_ref(moved))
    loss = -log sigmoid(-beta d) + sft_weight * err_policy(aligned)

so the policy is pushed to denoise aligned pairs better than moved ones, relative to
where it started; `sft_weight` adds the plain flow loss on the aligned clips. Logged:
the DPO loss, the preference accuracy (fraction of pairs with d < 0), the mean margin
-beta d, and each error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav import flow
from jav.clip_tokens import TokenLayout, frames_to_model, mel_params
from jav.data import bounce, mel
from jav.data.bounce_stream import SeedStream, bounce_params
from jav.tokenizer import HashTokenizer
from jav.train import loop
from jav.evaluation import real_arrays, world_params
from jav.train.step import freeze_grads, guarded_update

MODALITIES = ("video", "audio")
PAIR_KEYS = ("video", "audio", "audio_moved", "text_ids", "text_mask")  # the arrays of an on-policy pair file


def moved_windows(frames: np.ndarray, logmel: np.ndarray, shift: int, max_shift: int, layout: TokenLayout) -> dict:
    """One long clip (uint8 frames [T_long, H, W, 3] and its log-mel, `max_shift` frames longer at
    each end than `layout`'s clips) -> its inner window at the trained shape: video, the log-mel of
    the same span ("audio") and the log-mel moved by `shift` video frames ("audio_moved": later for
    shift > 0), model-space arrays."""
    per_frame = logmel.shape[0] / frames.shape[0]
    length = layout.audio_shape[0]

    def window(k):
        start = int(round((max_shift + k) * per_frame))
        return logmel[start : start + length]

    video = frames_to_model(frames[max_shift : max_shift + layout.video_shape[0]])
    return dict(video=video, audio=window(0), audio_moved=window(shift))


class PairStream(SeedStream):
    """Endless, deterministic pairs for SyncDPO: this process's rows of each global batch
    (`jav.data.bounce_stream.SeedStream`: seeds `data.seed + g * B + i`, resumable), each clip
    `2 max_shift` frames longer than the trained clips, with a shift k != 0 drawn from its seed."""

    def __init__(self, cfg, batch_size: int, *, index: int = 0, count: int = 1):
        d, s = cfg.data, int(cfg.reward.dpo.max_shift)
        super().__init__(int(d.get("seed", cfg.train.seed)), batch_size, index=index, count=count)
        self.max_shift, self.layout, self.mel = s, TokenLayout.from_config(cfg), mel_params(cfg)
        self.params = dataclasses.replace(bounce_params(d), duration=float(d.duration) + 2 * s / float(d.fps))
        self.tokenizer = HashTokenizer(cfg.model.text.vocab_size, cfg.model.text.max_len)

    def __next__(self) -> dict:
        s = self.max_shift
        rows, captions = [], []
        for seed in self.next_seeds():
            clip = bounce.generate_clip(seed, self.params)
            k = int(np.random.default_rng((seed, 7)).integers(1, s + 1)) * (1 if np.random.default_rng((seed, 8)).random() < 0.5 else -1)
            logmel = mel.waveform_to_logmel(clip.audio, self.mel)
            rows.append(moved_windows(clip.frames, logmel, k, s, self.layout) | {"shift": np.int32(k)})
            captions.append(clip.caption)
        out = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
        out["text_ids"], out["text_mask"] = self.tokenizer.encode(captions)
        return out


def load_pairs(directory, layout: TokenLayout) -> dict:
    """OUT of `make_pairs` -> {key: [N, ...]} of every pair (PAIR_KEYS, the captions and their seeds), checked against the policy's clip shape."""
    directory = pathlib.Path(directory)
    files = sorted(f for f in directory.glob("batch_*.npz") if re.fullmatch(r"batch_\d{4}\.npz", f.name))  # not a crashed write's .tmp.npz
    if not files:
        raise ValueError(f"reward.dpo.pairs={directory} holds no batch_*.npz: make them with python -m jav.train.policy_pairs --out {directory}")
    made = json.loads((directory / "pairs.json").read_text())
    batches = -(-made["num"] // made["batch_size"])
    if len(files) < batches:
        raise ValueError(
            f"reward.dpo.pairs={directory} holds {len(files)} of its {batches} batches: finish them by running "
            f"python -m jav.train.policy_pairs --workdir {made['run']} --out {directory} --num {made['num']} again"
        )
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append({k: z[k] for k in PAIR_KEYS + ("captions", "seeds")})
    pairs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    want = {"video": layout.video_shape, "audio": layout.audio_shape, "audio_moved": layout.audio_shape}
    for k, shape in want.items():
        if pairs[k].shape[1:] != tuple(shape):
            raise ValueError(f"{directory}: {k} clips are {pairs[k].shape[1:]}, the policy's are {tuple(shape)}: pairs of another model or clip shape")
    return pairs


class PolicyPairStream(SeedStream):
    """Endless, deterministic batches of on-policy pairs (`reward.dpo.pairs`, made by
    `python -m jav.train.policy_pairs`): every pair once per epoch, in an order drawn per
    epoch from `data.seed`; this process's rows of each global batch, resumable (SeedStream)."""

    def __init__(self, cfg, batch_size: int, *, index: int = 0, count: int = 1):
        super().__init__(0, batch_size, index=index, count=count)
        pairs = load_pairs(cfg.reward.dpo.pairs, TokenLayout.from_config(cfg))
        seeds, _ = pairs.pop("seeds"), pairs.pop("captions")  # the batches carry arrays only
        if cfg.reward.dpo.get("prefer", "v2a") == "real":  # the real clip of each caption against the policy's whole clip
            video, audio = real_arrays(cfg, [bounce.generate_clip(int(s), world_params(cfg)) for s in seeds])
            pairs = dict(pairs, video=video, audio=audio, video_moved=pairs["video"])
        self.pairs = pairs
        self.num = len(seeds)
        self.order_seed = int(cfg.data.get("seed", cfg.train.seed))

    @functools.lru_cache(maxsize=2)  # a batch spans at most two epochs
    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.order_seed, epoch)).permutation(self.num)

    def __next__(self) -> dict:
        rows = [int(self.order(j // self.num)[j % self.num]) for j in self.next_seeds()]  # item j of the endless sequence of epochs
        return {k: v[rows] for k, v in self.pairs.items()}


def clip_errors(model, x: dict, eps: dict, t: dict, text, text_mask, layout, flow_cfg) -> jax.Array:
    """Each clip's weighted velocity error (T2VA: both streams noisy; jav.flow.token_error,
    video_weight / audio_weight) -> [B]."""
    x_t = {m: flow.noise(x[m], eps[m], t[m]) for m in MODALITIES}
    cross = jnp.ones((x["video"].shape[0],), bool)
    v = layout.denoiser(model)(x_t, t, text, text_mask, cross)
    weights = {"video": flow_cfg.video_weight, "audio": flow_cfg.audio_weight}
    return sum(weights[m] * flow.token_error(v[m], flow.velocity_target(x[m], eps[m]), t[m], flow_cfg).mean(-1) for m in MODALITIES)


def dpo_loss(params, ref_params, batch, key, *, graphdef, layout, flow_cfg, mu, beta, sft_weight):
    """SyncDPO's loss of a batch of pairs -> (loss, metrics)."""
    aligned = layout.to_tokens(batch["video"], batch["audio"])
    moved = layout.to_tokens(batch.get("video_moved", batch["video"]), batch["audio_moved"])  # the same picture unless the pair has two
    b = aligned["video"].shape[0]
    k_eps, k_t = jax.random.split(key)
    eps = {m: jax.random.normal(jax.random.fold_in(k_eps, i), aligned[m].shape, jnp.float32) for i, m in enumerate(MODALITIES)}
    sigma = {m: flow.sample_sigma(jax.random.fold_in(k_t, i), dict(mu)[m], b) for i, m in enumerate(MODALITIES)}
    t = {m: jnp.broadcast_to(sigma[m][:, None], aligned[m].shape[:2]) for m in MODALITIES}
    both = {m: jnp.concatenate([aligned[m], moved[m]]) for m in MODALITIES}  # one pass over 2B clips
    eps2, t2 = ({m: jnp.concatenate([a[m], a[m]]) for m in MODALITIES} for a in (eps, t))
    ids, mask = (jnp.concatenate([batch[k], batch[k]]) for k in ("text_ids", "text_mask"))

    def errors(p):
        model = nnx.merge(graphdef, p)
        return clip_errors(model, both, eps2, t2, model.encode_text(ids, mask), mask, layout, flow_cfg)

    policy = errors(params)
    reference = jax.lax.stop_gradient(errors(ref_params))
    d = (policy[:b] - reference[:b]) - (policy[b:] - reference[b:])
    dpo = -jax.nn.log_sigmoid(-beta * d).mean()
    sft = policy[:b].mean()
    metrics = dict(
        loss_dpo=dpo,
        accuracy=(d < 0).mean(),
        margin=(-beta * d).mean(),
        error_aligned=sft,
        error_moved=policy[b:].mean(),
        ref_error_aligned=reference[:b].mean(),
        ref_error_moved=reference[b:].mean(),
    )
    return dpo + sft_weight * sft, metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "flow_cfg", "mu", "dpo_cfg", "tx", "ema_decay", "trainable"), donate_argnums=(0,))
def dpo_step(state, batch, key, *, graphdef, layout, flow_cfg, mu, dpo_cfg, tx, ema_decay, trainable=None):
    """One SyncDPO update of the policy ("model") against the frozen "reference" -> (state, metrics)."""
    policy = state["model"]
    loss_fn = functools.partial(
        dpo_loss,
        ref_params=state["reference"].params,
        batch=batch,
        key=key,
        graphdef=graphdef,
        layout=layout,
        flow_cfg=flow_cfg,
        mu=mu,
        beta=float(dpo_cfg.beta),
        sft_weight=float(dpo_cfg.sft_weight),
    )
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(policy.params)
    grads = freeze_grads(grads, trainable)
    params, opt_state, ema, grad_norm, skipped = guarded_update(tx, policy.params, policy.opt_state, policy.ema, grads, loss, ema_decay)
    return dict(state, model=loop.Trainable(params, opt_state, ema)), dict(metrics, loss=loss, grad_norm=grad_norm, skipped=skipped)
