"""The sync reward model: how far apart in time a clip's sound and picture are.

It reads a clip's video [B, T, H, W, 3] (model space, [-1, 1]) and log-mel
[B, Ta, n_mels] (jav.data.mel's normalisation: what the pixel-space diffusion
model generates), embeds each video frame's picture and the sound around its
instant, and classifies the sound's offset against the picture by how well
picture f matches sound f + k (`SyncScorer`): class k (k = 0 .. 2 * max_shift)
is "the sound is late by k - max_shift whole video frames", the last class is
"the sound belongs to another clip". Class max_shift is in sync.

It is a clip model of the autoencoder phase (jav/train/autoencoder.py's
contract; configs/sync_reward.py, `phase: reward_model`): from real clips
longer than the model's window, a window of video and the log-mel of the same
window moved by a random whole number of frames (or another clip's) are cut
(`crops`), and the class is learned by cross-entropy. Both are cut from inside
the clip: a track rolled or padded in place shows a seam where its shift is,
which a model reads instead of the timing (a first version did: it told every
shift apart and in-sync from another clip's sound not at all). Held-out scores
(`evaluate`): the share of offsets found within one frame, and the AUC of the
in-sync probability of aligned clips against the same clips shifted by 2 frames
(250 ms at 8 fps) and against swapped soundtracks.

`reward(model, video, logmel)` is the reward of a whole clip (the log-probability
of in sync); `predicted_offset` the offset in frames it reads. Both read the clip
without its first and last `EDGE_FRAMES` frames (`inner`), as the model was trained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx


def model_config(
    width=64, depth=2, video_patch=4, patch_dim=16, audio_window=16, max_shift=4, video_shape=(16, 32, 32, 3), n_mels=64, frame_weight=1.0, event_weight=0.0
) -> ml_collections.ConfigDict:
    """Keys:
    width: the size of each frame's embedding, video and sound alike.
    depth: temporal convolutions (kernel 3) over each modality's frame embeddings, so
      that a frame's embedding sees its neighbours (a contact is a turn of the motion).
    video_patch, patch_dim: each frame (and its difference from the previous one) is cut
      into video_patch x video_patch patches embedded to patch_dim, each patch's features
      convolved in time, and the frame's embedding made from their maximum over patches.
    audio_window: log-mel frames around each video frame's instant (with their differences
      from the previous frame) embedded as that frame's sound.
    max_shift: offsets -max_shift .. max_shift whole video frames are told apart.
    video_shape: [T, H, W, 3] of the clips (H and W fix the frame embedding's size).
    n_mels: log-mel bins.
    frame_weight: weight of the per-frame matching loss beside the offset class's: each
      picture frame of a clip whose offset k is known picks its sound frame f + k among
      all of the clip's (a signal per frame instead of one per clip).
    event_weight: weight of the event loss (0: none, and no event heads): each frame's
      picture embedding and sound embedding predict whether a contact falls in that
      frame (the world's contact times, batch["events"]; data.fields names "events"),
      so that both embeddings carry when things happen, which the matching then compares.
    """
    return ml_collections.ConfigDict(
        dict(
            width=width,
            depth=depth,
            video_patch=video_patch,
            patch_dim=patch_dim,
            audio_window=audio_window,
            max_shift=max_shift,
            video_shape=tuple(video_shape),
            n_mels=n_mels,
            frame_weight=frame_weight,
            event_weight=event_weight,
        )
    )


def check_clip_shapes(cfg, video: jax.Array, logmel: jax.Array, model: str) -> None:
    """A clip model's inputs against its config (model.video_shape, model.n_mels), named in the error."""
    if tuple(video.shape[2:]) != tuple(cfg.video_shape[1:]) or logmel.shape[-1] != cfg.n_mels:
        raise ValueError(
            f"{model} takes video [B, T, {', '.join(map(str, cfg.video_shape[1:]))}] and log-mel [B, Ta, {cfg.n_mels}]; got {video.shape} and {logmel.shape}"
        )


def num_classes(cfg) -> int:
    return 2 * cfg.max_shift + 2


def _with_difference(x: jax.Array, axis: int) -> jax.Array:
    """x and its difference from the previous step along `axis` (0 at the first), on the last axis."""
    previous = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)], axis)
    return jnp.concatenate([x, x - previous], axis=-1)


class Temporal(nnx.Module):
    """Residual convolutions in time (kernel 3, same padding) over [B, T, width]."""

    def __init__(self, width: int, depth: int, *, rngs: nnx.Rngs):
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(depth)])
        self.convs = nnx.List([nnx.Conv(width, width, kernel_size=(3,), padding="SAME", rngs=rngs) for _ in range(depth)])

    def __call__(self, x):
        for norm, conv in zip(self.norms, self.convs):
            x = x + conv(jax.nn.gelu(norm(x)))
        return x


class SyncScorer(nnx.Module):
    """Per video frame an embedding of the picture and one of the sound around that
    frame's instant; the logit of "the sound is k frames late" is the mean similarity
    of picture f with sound f + k over the frames both exist (SyncNet's matching by
    offset, made a classifier), scaled, plus a learned bias per class; "another
    clip's sound" has a learned logit of its own, which wins when no offset matches."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so the graphdef can be a jit static
        t, h, w, c = cfg.video_shape
        p = cfg.video_patch
        if h % p or w % p:
            raise ValueError(f"model.video_shape {tuple(cfg.video_shape)}: H and W must be multiples of model.video_patch={p}")
        self.patch = nnx.Linear(p * p * 2 * c, cfg.patch_dim, rngs=rngs)
        # each patch's features through time (a turn of the motion where it happens), then
        # the strongest response over the frame's patches: the same detector at every place
        self.patch_time = nnx.Conv(cfg.patch_dim, cfg.patch_dim, kernel_size=(3,), padding="SAME", rngs=rngs)
        self.frame = nnx.Linear(cfg.patch_dim, cfg.width, rngs=rngs)
        self.sound = nnx.Linear(cfg.audio_window * 2 * cfg.n_mels, cfg.width, rngs=rngs)
        self.video_time = Temporal(cfg.width, cfg.depth, rngs=rngs)
        self.audio_time = Temporal(cfg.width, cfg.depth, rngs=rngs)
        self.video_out = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.audio_out = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.scale = nnx.Param(jnp.asarray(5.0))
        self.bias = nnx.Param(jnp.zeros((num_classes(cfg),)))
        # runs written before the key existed have none (and no heads)
        self.events = (
            nnx.Dict(video=nnx.Linear(cfg.width, 1, rngs=rngs), audio=nnx.Linear(cfg.width, 1, rngs=rngs)) if cfg.get("event_weight", 0.0) > 0 else None
        )

    def check(self, video: jax.Array, logmel: jax.Array) -> None:
        cfg = self.cfg
        check_clip_shapes(cfg, video, logmel, "the sync model")
        if video.shape[1] <= cfg.max_shift:
            raise ValueError(f"{video.shape[1]} frames cannot show an offset of model.max_shift={cfg.max_shift} frames")

    def embeddings(self, video: jax.Array, logmel: jax.Array, with_events: bool = False):
        """-> unit-length picture and sound embeddings, [B, T, width] each (with_events: and
        the event heads' logits of each frame's picture and sound, [B, T] each)."""
        cfg = self.cfg
        self.check(video, logmel)
        b, t, h, w, _ = video.shape
        p = cfg.video_patch
        v = _with_difference(video.astype(jnp.float32), axis=1)  # [B, T, H, W, 6]
        v = v.reshape(b, t, h // p, p, w // p, p, -1).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, (h // p) * (w // p), -1)
        v = jax.nn.gelu(self.patch(v)).transpose(0, 2, 1, 3)  # [B, patches, T, patch_dim]
        v = jax.nn.gelu(self.patch_time(v.reshape(-1, t, v.shape[-1]))).reshape(b, -1, t, v.shape[-1])
        v = self.video_out(self.video_time(self.frame(v.max(axis=1))))
        # the log-mel frames around each video frame's middle, edge frames repeated
        ta = logmel.shape[1]
        centre = (np.arange(t) + 0.5) * ta / t
        index = np.clip(np.round(centre[:, None] - cfg.audio_window / 2).astype(np.int32) + np.arange(cfg.audio_window)[None], 0, ta - 1)
        a = _with_difference(logmel.astype(jnp.float32), axis=1)[:, index].reshape(b, t, -1)  # [B, T, window * 2 n_mels]
        a = self.audio_out(self.audio_time(self.sound(a)))
        unit = lambda x: x / jnp.sqrt(jnp.sum(jnp.square(x), -1, keepdims=True) + 1e-6)  # noqa: E731
        if with_events:
            if self.events is None:
                raise ValueError("this sync model has no event heads: set model.event_weight > 0")
            return unit(v), unit(a), self.events["video"](v)[..., 0], self.events["audio"](a)[..., 0]
        return unit(v), unit(a)

    def __call__(self, video: jax.Array, logmel: jax.Array, with_similarity: bool = False, with_events: bool = False):
        """-> [B, num_classes] logits: offsets -max_shift .. max_shift frames, then unrelated
        (and, with_similarity, the [B, T, T] similarity of picture f with sound g; with_events,
        the per-frame event logits of picture and sound, [B, T] each)."""
        v, a, *events = self.embeddings(video, logmel, with_events)
        t, s = v.shape[1], self.cfg.max_shift
        similarity = jnp.einsum("bfd,bgd->bfg", v, a)  # picture f against sound g
        rel = np.arange(t)[None, :] - np.arange(t)[:, None]  # g - f: how late the sound is
        on = (rel[None] == np.arange(-s, s + 1)[:, None, None]).astype(np.float32)  # [2s + 1, T, T] each offset's pairs
        scores = jnp.einsum("bfg,kfg->bk", similarity, on / on.sum((1, 2), keepdims=True))
        logits = self.scale[...] * jnp.pad(scores, ((0, 0), (0, 1))) + self.bias[...]  # the last class scores 0 + its bias
        out = (logits,) + ((similarity,) if with_similarity else ()) + tuple(events)
        return out if len(out) > 1 else logits


def init_model(cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> SyncScorer:
    """The autoencoder phase's constructor (cfg: the model's keys)."""
    del out_shardings  # a small model: made on one device, spread by the phase
    cfg = cfg.model if "model" in cfg else cfg
    return SyncScorer(cfg, rngs=nnx.Rngs(params=key))


def crops(cfg, video: jax.Array, logmel: jax.Array, classes: jax.Array, events: jax.Array | None = None) -> tuple:
    """Training examples of each clip's class, cut from the inside of longer clips.

    video [B, T_long, H, W, 3] and logmel [B, Ta_long, n_mels] cover the same time,
    T_long >= T + 2 max_shift (T = model.video_shape[0]): the frames max_shift ..
    max_shift + T - 1 and the log-mel of the same span moved by class - max_shift
    frames, or (the last class) the aligned log-mel of another clip (the previous one
    in the batch). Every example is a window from a clip's inside, so nothing at its
    edges (where a rolled or padded track would show a seam) tells the shift.
    -> (video [B, T, H, W, 3], logmel [B, round(T Ta_long / T_long), n_mels]), and with
    `events` [B, T_long] (contact frames of the long clips) the events of each crop's
    picture and of its sound, [B, T] each.
    """
    t, s = cfg.video_shape[0], cfg.max_shift
    t_long, ta_long = video.shape[1], logmel.shape[1]
    if t_long < t + 2 * s:
        raise ValueError(
            f"the sync model's examples are windows of {t} frames moved by up to {s} either way: clips need at least "
            f"{t + 2 * s} frames, these have {t_long}; lengthen data.duration"
        )
    per_frame = ta_long / t_long
    length = int(round(t * per_frame))
    unrelated = classes == num_classes(cfg) - 1

    def window(shift):
        start = jnp.round((s + shift) * per_frame).astype(jnp.int32)
        return jax.vmap(lambda x, i: jax.lax.dynamic_slice_in_dim(x, i, length, axis=0))(logmel, start)

    moved = window(jnp.where(unrelated, 0, classes - s))
    other = jnp.roll(window(jnp.zeros_like(classes)), 1, axis=0)  # the previous clip's, in sync with its own picture
    out = (video[:, s : s + t], jnp.where(unrelated[:, None, None], other, moved))
    if events is None:
        return out
    shifted = jax.vmap(lambda e, i: jax.lax.dynamic_slice_in_dim(e, i, t))(events, s + jnp.where(unrelated, 0, classes - s))
    sound_events = jnp.where(unrelated[:, None], jnp.roll(events[:, s : s + t], 1, axis=0), shifted)
    return out + (events[:, s : s + t], sound_events)


def training_loss(model: SyncScorer, batch: dict, key: jax.Array, cfg) -> tuple[jax.Array, dict]:
    """Cross-entropy of the offset class of real clips, each given a random class (uniform)."""
    for k in ("video", "logmel"):
        if k not in batch:
            raise ValueError(
                f"the sync model trains on batch['video'] and batch['logmel'] but the batch has {sorted(batch)}; set data.fields=('video', 'logmel')"
            )
    m = cfg.model
    video, logmel = batch["video"], batch["logmel"]
    if video.shape[0] < 2:
        raise ValueError("the sync model swaps soundtracks between clips of a batch: train.batch_size must be at least 2")
    classes = jax.random.randint(key, (video.shape[0],), 0, num_classes(m))
    with_events = m.get("event_weight", 0.0) > 0
    if with_events and "events" not in batch:
        raise ValueError("model.event_weight > 0 trains on the world's contact frames: add 'events' to data.fields")
    video, logmel, *events = crops(m, video, logmel, classes, batch["events"] if with_events else None)
    logits, similarity, *event_logits = model(video, logmel, with_similarity=True, with_events=with_events)
    offset_loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), classes[:, None], axis=1))
    frames = frame_matching_loss(model.scale[...] * similarity, classes - m.max_shift, classes < num_classes(m) - 1)
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == classes), "offset_loss": offset_loss, "frame_loss": frames}
    loss = offset_loss + m.frame_weight * frames
    if with_events:
        bce = lambda z, y: jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))  # noqa: E731
        metrics["event_loss"] = bce(event_logits[0], events[0]) + bce(event_logits[1], events[1])
        loss = loss + m.event_weight * metrics["event_loss"]
    return loss, metrics


def frame_matching_loss(logits: jax.Array, shift: jax.Array, known: jax.Array) -> jax.Array:
    """Cross-entropy of picture frame f choosing sound frame f + shift among the clip's
    frames. logits [B, T, T] (picture f, sound g), shift [B] frames, known [B]: clips
    whose sound is their own (the others have no right frame). Frames whose partner
    falls outside the clip are left out."""
    t = logits.shape[1]
    target = jnp.arange(t)[None, :] + shift[:, None]  # [B, T]
    valid = (target >= 0) & (target < t) & known[:, None]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, jnp.clip(target, 0, t - 1)[..., None], axis=-1)[..., 0]
    return -(picked * valid).sum() / jnp.maximum(valid.sum(), 1)


def auc(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """The probability that a positive scores above a negative (ties count half)."""
    p, n = positive[:, None], negative[None, :]
    return jnp.mean((p > n) + 0.5 * (p == n))


def labelled_auc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """`auc` of the positive entries of `scores` against the others, under jit (NaN if either set is empty)."""
    pairs = positive[:, None] & ~positive[None, :]
    wins = (scores[:, None] > scores[None, :]) + 0.5 * (scores[:, None] == scores[None, :])
    count = pairs.sum()
    return jnp.where(count > 0, jnp.sum(wins * pairs) / jnp.maximum(count, 1), jnp.nan)


# Frames a whole clip loses at each end before it is scored. The model learns from windows cut
# from inside longer clips, so it has never seen a clip's first frame; scored whole, real 2 s clips
# read as the largest shift (64 held-out clips: p(in sync) 0.06, every offset read as -4 frames,
# AUC 0.275 against 250 ms shifts). Without 2 frames at each end: AUC 0.988 against the same clips
# 250 ms off, 0.975 against another clip's sound (1 frame: 0.963; 3: 0.967; 4: 0.964;
# benchmarks/sync_reading.py, RESULTS.md "Reward tuning").
EDGE_FRAMES = 2


def inner(video: jax.Array, logmel: jax.Array, edge: int = EDGE_FRAMES) -> tuple[jax.Array, jax.Array]:
    """A whole clip without `edge` video frames at each end, and its log-mel over the same span:
    what `reward` and `predicted_offset` read. video [B, T, ...], logmel [B, Ta, n_mels]."""
    t, ta = video.shape[1], logmel.shape[1]
    if t <= 2 * edge + 1:
        raise ValueError(f"a clip of {t} frames is too short to score without {edge} frames at each end")
    per_frame = ta / t
    return video[:, edge : t - edge], logmel[:, int(round(edge * per_frame)) : int(round((t - edge) * per_frame))]


def reward(model: SyncScorer, video: jax.Array, logmel: jax.Array) -> jax.Array:
    """The reward of generated clips (the reward phase's contract, jav/train/reward.py):
    [B] log-probability that each clip's sound is in sync with its picture (0 at best),
    read on the clip without its edge frames (`inner`)."""
    return jax.nn.log_softmax(model(*inner(video, logmel)))[:, model.cfg.max_shift]


def event_agreement(model: SyncScorer, video: jax.Array, logmel: jax.Array) -> jax.Array:
    """A second reward reading (`reward.models.NAME.reading="event_agreement"`): [B] the
    soft event F1 of a clip's picture and sound frame by frame, 2 sum(p_v p_a) /
    (sum p_v + sum p_a), where p_v and p_a are the event heads' probabilities that a
    frame's picture shows a contact and that its sound has a burst (model.event_weight > 0),
    read on the clip without its edge frames. 1: every contact heard in its own frame and
    every burst seen; a clip with neither reads 0."""
    _, _, picture, sound = model.embeddings(*inner(video, logmel), with_events=True)
    p_v, p_a = jax.nn.sigmoid(picture), jax.nn.sigmoid(sound)
    return 2 * jnp.sum(p_v * p_a, -1) / (jnp.sum(p_v, -1) + jnp.sum(p_a, -1) + 1e-3)


# what reward.models.NAME.reading may name (jav/train/reward.py)
READINGS = ("reward", "event_agreement")


def predicted_offset(model: SyncScorer, video: jax.Array, logmel: jax.Array) -> jax.Array:
    """[B] the sound's offset in video frames (positive: late) by the most likely shift class,
    read on the clip without its edge frames (`inner`)."""
    logits = model(*inner(video, logmel))[:, :-1]
    return jnp.argmax(logits, -1) - model.cfg.max_shift


def evaluate(model: SyncScorer, batch: dict, cfg) -> dict:
    """Held-out scores: every clip at every shift class and swapped. offset_within_frame: the
    share of shifted clips whose offset is read within one frame; auc_250ms: in-sync
    probability of aligned clips against the same clips 2 frames early or late; auc_unrelated:
    against another clip's soundtrack; accuracy: the exact class."""
    m = cfg.model
    video, logmel = batch["video"], batch["logmel"]
    b = video.shape[0]
    k = num_classes(m)
    classes = jnp.repeat(jnp.arange(k), b)
    pairs = [crops(m, video, logmel, jnp.full((b,), c)) for c in range(k)]  # unrelated: the previous held-out clip's sound
    logits = model(jnp.concatenate([v for v, _ in pairs]), jnp.concatenate([a for _, a in pairs]))
    log_p = jax.nn.log_softmax(logits)[:, m.max_shift].reshape(k, b)
    offsets = (jnp.argmax(logits[:, :-1], -1) - m.max_shift).reshape(k, b)
    truth = jnp.arange(k)[:, None] - m.max_shift
    shift_rows = slice(0, k - 1)
    near = int(round(0.25 * cfg.data.get("fps", 8)))  # 250 ms in whole frames
    if not 0 < near <= m.max_shift:
        raise ValueError(f"auc_250ms needs a shift of {near} frames (250 ms at data.fps); model.max_shift={m.max_shift} is smaller")
    two = [m.max_shift - near, m.max_shift + near]
    scores = dict(
        accuracy=jnp.mean(jnp.argmax(logits, -1) == classes),
        offset_within_frame=jnp.mean(jnp.abs(offsets[shift_rows] - truth[shift_rows]) <= 1),
        auc_250ms=auc(log_p[m.max_shift], log_p[jnp.array(two)].reshape(-1)),
        auc_unrelated=auc(log_p[m.max_shift], log_p[-1]),
    )
    if model.events is not None and "events" in batch:  # how well each frame's picture and sound tell a contact
        aligned = jnp.full((b,), m.max_shift)
        v, a, picture_events, sound_events = crops(m, video, logmel, aligned, batch["events"])
        _, picture_logits, sound_logits = model(v, a, with_events=True)
        for name, z, y in (("picture", picture_logits, picture_events), ("sound", sound_logits, sound_events)):
            scores[f"event_auc_{name}"] = labelled_auc(z.reshape(-1), y.reshape(-1) > 0.5)
    return scores
