"""The prompt-consistency reward model: does a clip show and sound what its caption says.

A bounce-world caption names the discs' colours and the background
("a red ball and a blue ball bouncing on a navy background"); each colour has
its pitch, so a clip agrees with its caption when its picture has discs of
exactly the named colours on the named background and its sound holds only the
pitches of those colours. The model (`PromptScorer`) reads a clip's video [B, T,
H, W, 3] (model space, [-1, 1]) and log-mel [B, Ta, n_mels] (jav.data.mel's
normalisation: what the pixel-space diffusion model generates) and predicts,
from the picture, which palette colours have a disc and which background it is,
and from the sound, which colours' pitches sound. It is trained on real clips
by the world's own labels (data.fields "colours", "background", "sounds",
jav/data/bounce_stream.py), a clip model of the autoencoder phase
(configs/prompt_reward.py, `phase: reward_model`).

`reward(model, video, logmel, text_ids, text_mask)` is the reward of clips
against their captions (the reward phase passes the captions to a model whose
module sets `READS_CAPTION`): the log-probability, under the model, of the
picture the caption names (its colour set and background) plus the
log-probability that no pitch of an unnamed colour sounds (a named disc that
never touches a wall is silent, so named pitches are not required). Captions
are read from the built-in tokenizer's ids (`caption_attributes`).

Held-out scores (`evaluate`): the share of clips whose colour set, background
and sounding pitches are each read exactly, and the prompt-consistency
accuracy: for each held-out clip its own caption against the same caption
altered in one attribute (one colour swapped for an absent one, the
background changed, a disc added or dropped), the share of pairs where the own
caption scores higher (`consistency_accuracy`, the mean over the three
alterations; target 0.95).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jav.data.bounce import BounceParams
from jav.models.sync_reward import check_clip_shapes
from jav.tokenizer import HashTokenizer

READS_CAPTION = True  # the reward phase passes the captions' ids (jav/train/reward.py)


def model_config(width=64, video_patch=4, video_shape=(16, 32, 32, 3), n_mels=64, vocab_size=1024, max_len=16) -> ml_collections.ConfigDict:
    """Keys:
    width: the size of the picture's and the sound's features.
    video_patch: each frame is cut into video_patch x video_patch patches, each embedded
      on its own (a disc's colour is a property of a few pixels, the background of all).
    video_shape: [T, H, W, 3] of the clips; n_mels: log-mel bins.
    vocab_size, max_len: the built-in tokenizer of the captions it reads (the policy's
      model.text settings: the reward phase checks that they agree).
    palette, backgrounds: the world's names, in the order of the labels.
    """
    params = BounceParams()
    return ml_collections.ConfigDict(
        dict(
            width=width,
            video_patch=video_patch,
            video_shape=tuple(video_shape),
            n_mels=n_mels,
            vocab_size=vocab_size,
            max_len=max_len,
            palette=tuple(params.palette),
            backgrounds=tuple(params.backgrounds),
        )
    )


class PromptScorer(nnx.Module):
    """Per patch of every frame a feature; the picture is their maximum (a disc of a
    colour anywhere) beside their mean (the background), giving colour logits [P] and
    background logits [G]. Per log-mel frame a feature, the sound their maximum over
    time (a burst of a pitch anywhere), giving pitch logits [P]."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so the graphdef can be a jit static
        _, h, w, c = cfg.video_shape
        p = cfg.video_patch
        if h % p or w % p:
            raise ValueError(f"model.video_shape {tuple(cfg.video_shape)}: H and W must be multiples of model.video_patch={p}")
        colours, backgrounds = len(cfg.palette), len(cfg.backgrounds)
        self.patch = nnx.Linear(p * p * c, cfg.width, rngs=rngs)
        self.patch2 = nnx.Linear(cfg.width, cfg.width, rngs=rngs)
        self.colour = nnx.Linear(2 * cfg.width, colours, rngs=rngs)
        self.background = nnx.Linear(2 * cfg.width, backgrounds, rngs=rngs)
        self.frame = nnx.Linear(cfg.n_mels, cfg.width, rngs=rngs)
        self.frame2 = nnx.Linear(cfg.width, cfg.width, rngs=rngs)
        self.pitch = nnx.Linear(cfg.width, colours, rngs=rngs)

    def __call__(self, video: jax.Array, logmel: jax.Array) -> dict:
        """-> {"colours": [B, P], "background": [B, G], "sounds": [B, P]} logits."""
        cfg = self.cfg
        check_clip_shapes(cfg, video, logmel, "the prompt model")
        b, t, h, w, c = video.shape
        p = cfg.video_patch
        v = video.astype(jnp.float32).reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, -1, p * p * c)
        v = self.patch2(jax.nn.gelu(self.patch(v)))  # [B, T * patches, width]
        picture = jnp.concatenate([v.max(axis=1), v.mean(axis=1)], axis=-1)
        a = self.frame2(jax.nn.gelu(self.frame(logmel.astype(jnp.float32))))  # [B, Ta, width]
        return {"colours": self.colour(picture), "background": self.background(picture), "sounds": self.pitch(jax.nn.gelu(a.max(axis=1)))}


def init_model(cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> PromptScorer:
    """The autoencoder phase's constructor (cfg: the model's keys)."""
    del out_shardings  # a small model: made on one device, spread by the phase
    cfg = cfg.model if "model" in cfg else cfg
    return PromptScorer(cfg, rngs=nnx.Rngs(params=key))


def word_ids(cfg) -> tuple[np.ndarray, np.ndarray]:
    """The built-in tokenizer's ids of the palette's and the backgrounds' names ([P], [G]);
    an error if two of them share a bucket (the caption could not be read)."""
    tok = HashTokenizer(cfg.vocab_size, cfg.max_len)
    colours = np.array([tok.word_id(n) for n in cfg.palette], np.int32)
    backgrounds = np.array([tok.word_id(n) for n in cfg.backgrounds], np.int32)
    both = np.concatenate([colours, backgrounds])
    if len(set(both.tolist())) != len(both):
        raise ValueError(f"model.vocab_size={cfg.vocab_size}: the world's colour and background names share hash buckets; use another vocab_size")
    return colours, backgrounds


def caption_attributes(cfg, text_ids: jax.Array, text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Captions' token ids [B, L] (and mask) -> (colours [B, P] float, 1 for each named
    colour; background [B, G] float, 1 for the named background)."""
    colours, backgrounds = word_ids(cfg)
    ids = jnp.where(text_mask, text_ids, -1)[..., None]  # [B, L, 1]
    named = lambda words: (ids == jnp.asarray(words)[None, None]).any(axis=1).astype(jnp.float32)  # noqa: E731
    return named(colours), named(backgrounds)


def consistency(logits: dict, colours: jax.Array, background: jax.Array) -> jax.Array:
    """[B] log-probability that clips with these logits are what (colours [B, P] multi-hot,
    background [B, G] one-hot) describe: the picture's colour set and background, and no
    pitch of an unnamed colour."""
    picture = -optax.sigmoid_binary_cross_entropy(logits["colours"], colours).sum(-1)
    ground = (jax.nn.log_softmax(logits["background"]) * background).sum(-1)
    silent = -(optax.sigmoid_binary_cross_entropy(logits["sounds"], jnp.zeros_like(colours)) * (1.0 - colours)).sum(-1)
    return picture + ground + silent


def reward(model: PromptScorer, video: jax.Array, logmel: jax.Array, text_ids: jax.Array, text_mask: jax.Array) -> jax.Array:
    """The reward of generated clips against their captions (the reward phase's contract,
    jav/train/reward.py, for a model that reads captions): [B] `consistency` (0 at best)."""
    colours, background = caption_attributes(model.cfg, text_ids, text_mask)
    return consistency(model(video, logmel), colours, background)


def _labels(batch: dict, cfg) -> tuple[jax.Array, jax.Array, jax.Array]:
    missing = [k for k in ("video", "logmel", "colours", "background", "sounds") if k not in batch]
    if missing:
        raise ValueError(
            f"the prompt model trains on the world's labels but the batch lacks {missing}; "
            "set data.fields=('video', 'logmel', 'colours', 'background', 'sounds')"
        )
    background = jax.nn.one_hot(batch["background"], len(cfg.backgrounds))
    return batch["colours"].astype(jnp.float32), background, batch["sounds"].astype(jnp.float32)


def training_loss(model: PromptScorer, batch: dict, key: jax.Array, cfg) -> tuple[jax.Array, dict]:
    """Binary cross-entropy of the colours and the sounding pitches, cross-entropy of the
    background, on real clips."""
    del key
    colours, background, sounds = _labels(batch, cfg.model)
    logits = model(batch["video"], batch["logmel"])
    losses = {
        "colour_loss": optax.sigmoid_binary_cross_entropy(logits["colours"], colours).sum(-1).mean(),
        "background_loss": -(jax.nn.log_softmax(logits["background"]) * background).sum(-1).mean(),
        "sound_loss": optax.sigmoid_binary_cross_entropy(logits["sounds"], sounds).sum(-1).mean(),
    }
    r = reads(logits, colours, background, sounds)
    metrics = dict(losses, accuracy=(r["colours"] & r["background"] & r["sounds"]).mean())
    return sum(losses.values()), metrics


def reads(logits: dict, colours: jax.Array, background: jax.Array, sounds: jax.Array | None = None) -> dict:
    """{attribute: [B] bool}: where the model reads each attribute as given ("colours": the
    colour set, "background"; "sounds": the sounding pitches, given their labels), and
    "silent": where it hears no pitch of a colour outside `colours`."""
    heard = logits["sounds"] > 0
    out = {
        "colours": ((logits["colours"] > 0) == (colours > 0.5)).all(-1),
        "background": jnp.argmax(logits["background"], -1) == jnp.argmax(background, -1),
        "silent": ~(heard & (colours < 0.5)).any(-1),
    }
    if sounds is not None:
        out["sounds"] = (heard == (sounds > 0.5)).all(-1)
    return out


def altered(colours: jax.Array, background: jax.Array) -> dict:
    """Each caption altered in one attribute -> name -> (colours, background): "colour", one
    named colour swapped for the first unnamed one; "background", the next background;
    "count", the first unnamed colour added to a one-disc caption, the first named one
    dropped from a two-disc caption."""
    named = colours > 0.5
    first_named = jax.nn.one_hot(jnp.argmax(named, -1), colours.shape[-1])
    first_free = jax.nn.one_hot(jnp.argmax(~named, -1), colours.shape[-1])
    one_disc = (named.sum(-1) == 1)[:, None]
    return {
        "colour": (colours - first_named + first_free, background),
        "background": (colours, jnp.roll(background, 1, axis=-1)),
        "count": (jnp.where(one_disc, colours + first_free, colours - first_named), background),
    }


def wins_over_alterations(logits: dict, colours: jax.Array, background: jax.Array) -> dict:
    """{alteration: [B] float}: 1 where the caption (colours, background) scores above the same
    caption altered in that attribute (`altered`)."""
    own = consistency(logits, colours, background)
    return {name: (own > consistency(logits, c, g)).astype(jnp.float32) for name, (c, g) in altered(colours, background).items()}


def evaluate(model: PromptScorer, batch: dict, cfg) -> dict:
    """Held-out scores: each attribute read exactly (colour_accuracy, background_accuracy,
    sound_accuracy, and all three: accuracy), and the prompt-consistency accuracy of the
    own caption against each one-attribute alteration (consistency_NAME) and their mean."""
    colours, background, sounds = _labels(batch, cfg.model)
    logits = model(batch["video"], batch["logmel"])
    r = reads(logits, colours, background, sounds)
    scores = dict(
        accuracy=(r["colours"] & r["background"] & r["sounds"]).mean(),
        colour_accuracy=r["colours"].mean(),
        background_accuracy=r["background"].mean(),
        sound_accuracy=r["sounds"].mean(),
    )
    wins = wins_over_alterations(logits, colours, background)
    scores.update({f"consistency_{name}": w.mean() for name, w in wins.items()})
    scores["consistency_accuracy"] = jnp.concatenate(list(wins.values())).mean()
    return scores
