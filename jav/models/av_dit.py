"""The dual-branch audio-video diffusion transformer.

A video branch and an audio branch, each a stack of DiT blocks (self-attention,
text cross-attention, MLP) modulated per token by AdaLN-single from each
token's own timestep, coupled by a cross-modal module chosen by config:

- `cross_attn`: audio-to-video and video-to-audio attention after the text
  attention of every k-th layer, each side with its own timestep-driven AdaLN
  (LTX-2, Ovi);
- `joint_attn`: in every k-th layer one attention over the concatenated video
  and audio tokens, with per-modality projections and norms (MMDiT, as
  Seedance 1.5 pro describes);
- `none`: the branches share only the text (the ablation).

Cross-modal attention rotates by time only (MM-RoPE with h = w = 0), so
tokens at the same instant share their phase. Options that make it LTX-2's
transformer exactly (configs/ltx2.py; their defaults keep jav's own model):
`model.norm` ("layer" | "rms" pre-norms), `model.qk_norm_across_heads`,
`model.rope.layout` / `pairs` / `max_pos` (jav.models.rope; layout "wan" for
Wan 2.1's video branch, configs/wan.py, with `model.text_norm="affine"`: a
LayerNorm with a learned scale and bias before text cross-attention),
`model.joint.heads` ("own": each side's queries in its own heads; "audio": both
cross-modal attentions in the audio branch's heads) and `model.joint.adaln`
("shared": cross-modal shifts, scales and gates are chunks of each branch's
AdaLN; "own": from their own timestep embeddings, `CrossModalAdaLN`, plus a
per-block `cross_table`). A per-sample `cross_modal` flag
switches the coupling off, which modality guidance contrasts against; a
per-sample `perturbed` flag makes the self-attention of the blocks `stg_blocks`
return each token's own value projection (as if it attended to itself alone),
the pass spatio-temporal guidance contrasts against (LTX-2's STG).

Two inputs for distilled students (jav/train/distill.py), each embedded like the
timestep and added to it, starting at zero so that a student starts as its
teacher: `model.guidance_embed` (the guidance scales text_video, text_audio,
modality, per sample: one pass gives the guided velocity) and
`model.interval_embed` (per token, the length t - r of the step the network's
output spans: the mean velocity from t to r, so that x_r = x_t - (t - r) v; 0
is the instantaneous velocity of an ordinary flow model).

Layers are grouped `joint.every` at a time (the last layer of a group is the
coupled one) and the groups are scanned, so compile time does not grow with
depth.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav import schema
from jav.models import context_parallel, lora
from jav.models.attention import Attention, AttentionProjections
from jav.models.attention_kernels import KERNELS, Mask, dot_product_attention, key_mask
from jav.models.layers import (
    MLP,
    AdaLNSingle,
    ConditionEmbedder,
    Dense,
    LayerNorm,
    TimestepEmbedder,
    dtype_of,
    jit_init,
    NORMS,
    modulate,
    modulation_table,
    zeros,
)
from jav.models.patch import as_batch_positions
from jav.models.remat import remat, validate_remat
from jav.models.rope import LAYOUTS, PAIRS, angles_for
from jav.models.text_encoder import MODEL_TEXT_ENCODERS, TextEncoder
from jav.sharding import constrain

MODALITIES = ("video", "audio")
JOINT_MODES = ("cross_attn", "joint_attn", "none")
ALIGNED_READS = ("mix", "pair")  # joint.aligned_read: how a sound token reads the frames around its instant
VIDEO_READS = ("mix", "bins")  # joint.aligned_read_video: how a frame reads the sound around it
SOUND_BINS = 4  # joint.aligned_read_video="bins": parts of the two frame intervals around a frame
PREDICTIONS = ("velocity", "x0")
CROSS_HEADS = ("own", "audio")  # joint.heads
CROSS_ADALN = ("shared", "own")  # joint.adaln
TEXT_NORMS = ("plain", "affine")  # model.text_norm
# joint.adaln="own": the chunks of a block's cross_table; the first four come from
# CrossModalAdaLN's scale-shift embedding, the gate from its gate embedding
CROSS_NAMES = ("cross_q_shift", "cross_q_scale", "cross_kv_shift", "cross_kv_scale", "cross_q_gate")
GUIDANCE_TERMS = ("text_video", "text_audio", "modality")  # the order of AVDiT's `guidance` input
GUIDANCE_EMBED_SCALE = 0.1  # guidance scales of 1-10 embed like timesteps of 0.1-1

# Logical token axes: video tokens may be split over devices (context
# parallelism); audio tokens, ~1% of them, stay whole on every device.
LENGTH = {"video": "activation_length", "audio": "activation_audio_length"}


def _act(modality: str) -> tuple[str, str, str]:
    return ("activation_batch", LENGTH[modality], "activation_embed")


def attention_options(cfg) -> dict:
    """`model.attention` as Attention keyword arguments; a config saved before
    the key existed means its defaults (configs/common.py)."""
    return dict(kernel=cfg.attention.kernel, context=cfg.attention.context)


def projection_options(cfg) -> dict:
    """QK-norm and RoPE pairing of every attention, as AttentionProjections keywords."""
    return dict(qk_norm=cfg.qk_norm, qk_norm_across_heads=bool(cfg.qk_norm_across_heads), rope_pairs=cfg.rope.pairs)


def own_cross_adaln(cfg) -> bool:
    return cfg.joint.mode == "cross_attn" and cfg.joint.adaln == "own"


def self_axes(cfg, modality: str) -> str:
    """Which position axes a modality's self-attention rotates by: LTX-2 rotates
    audio over its whole head by time; jav's layout gives audio (t, 0, 0)."""
    return "t" if modality == "audio" and cfg.rope.layout == "ltx2" else "thw"


def modulation_names(cfg, modality: str) -> tuple[str, ...]:
    """The AdaLN chunks a modality's blocks read, in table order."""
    names = ["attn_shift", "attn_scale", "attn_gate", "mlp_shift", "mlp_scale", "mlp_gate"]
    if modality == "video" and cfg.video.decoupled:
        names += ["temporal_shift", "temporal_scale", "temporal_gate"]
    if cfg.joint.mode == "cross_attn" and not own_cross_adaln(cfg):
        names += ["cross_q_shift", "cross_q_scale", "cross_q_gate", "cross_kv_shift", "cross_kv_scale"]
    return tuple(names)


def patch_dim(cfg, modality: str) -> int:
    b = cfg[modality]
    if modality == "video":
        pt, ph, pw = b.patch
        return pt * ph * pw * b.channels
    return b.patch * b.channels


def validate_config(cfg) -> None:
    """Checks a model config once, with errors that name the key and the fix."""
    missing = schema.missing_keys(cfg, schema.model())
    if missing:
        raise ValueError(
            f"the model config lacks {', '.join('model.' + k for k in missing[:6])}"
            + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
            + "; build it with jav.schema.model (configs/common.py) or fill it with jav.schema.complete_model"
        )
    if cfg.joint.mode not in JOINT_MODES:
        raise ValueError(f"model.joint.mode={cfg.joint.mode!r} is not one of {JOINT_MODES}")
    if cfg.prediction not in PREDICTIONS:
        raise ValueError(f"model.prediction={cfg.prediction!r} is not one of {PREDICTIONS}")
    validate_remat(cfg.remat)
    lora.parse(cfg.lora)
    for m in MODALITIES:
        b = cfg[m]
        if b.width % b.heads:
            raise ValueError(f"model.{m}.width={b.width} is not divisible by model.{m}.heads={b.heads}")
        if (b.width // b.heads) % 2:
            raise ValueError(f"model.{m} head dimension {b.width // b.heads} must be even for RoPE; change model.{m}.heads")
    if cfg.joint.mode != "none" and cfg.depth % cfg.joint.every:
        raise ValueError(f"model.depth={cfg.depth} is not divisible by model.joint.every={cfg.joint.every}")
    if cfg.joint.time_bias < 0:
        raise ValueError(f"model.joint.time_bias={cfg.joint.time_bias} must be >= 0 (0: off)")
    if cfg.joint.aligned and cfg.joint.mode == "none":
        raise ValueError("model.joint.aligned=True couples the branches; set it to False with model.joint.mode='none'")
    if cfg.joint.frame_tokens and not cfg.joint.aligned:
        raise ValueError(f"model.joint.frame_tokens={cfg.joint.frame_tokens} shapes the aligned path; set model.joint.aligned=True or frame_tokens=0")
    if cfg.joint.aligned_read not in ALIGNED_READS:
        raise ValueError(f"model.joint.aligned_read={cfg.joint.aligned_read!r}; choose one of {ALIGNED_READS}")
    if cfg.joint.aligned_read_video not in VIDEO_READS:
        raise ValueError(f"model.joint.aligned_read_video={cfg.joint.aligned_read_video!r}; choose one of {VIDEO_READS}")
    if cfg.joint.time_bias > 0 and cfg.joint.mode == "joint_attn":
        raise ValueError("model.joint.time_bias applies to model.joint.mode='cross_attn'; set it to 0 with joint_attn")
    if cfg.video.decoupled and cfg.joint.mode == "joint_attn":
        raise ValueError("model.video.decoupled=True needs model.joint.mode 'cross_attn' or 'none': joint_attn attends over all video tokens")
    if cfg.norm not in NORMS:
        raise ValueError(f"model.norm={cfg.norm!r} is not one of {tuple(NORMS)}")
    if cfg.text_norm not in TEXT_NORMS:
        raise ValueError(f"model.text_norm={cfg.text_norm!r} is not one of {TEXT_NORMS}")
    if cfg.rope.layout not in LAYOUTS:
        raise ValueError(f"model.rope.layout={cfg.rope.layout!r} is not one of {LAYOUTS}")
    if cfg.rope.pairs not in PAIRS:
        raise ValueError(f"model.rope.pairs={cfg.rope.pairs!r} is not one of {PAIRS}")
    if cfg.rope.layout == "ltx2" and len(cfg.rope.max_pos) != 3:
        raise ValueError("model.rope.layout='ltx2' needs model.rope.max_pos=(t seconds, h pixels, w pixels), e.g. (20, 2048, 2048)")
    if cfg.joint.heads not in CROSS_HEADS:
        raise ValueError(f"model.joint.heads={cfg.joint.heads!r} is not one of {CROSS_HEADS}")
    if cfg.joint.adaln not in CROSS_ADALN:
        raise ValueError(f"model.joint.adaln={cfg.joint.adaln!r} is not one of {CROSS_ADALN}")
    if cfg.joint.mode != "cross_attn" and (cfg.joint.heads, cfg.joint.adaln) != ("own", "shared"):
        raise ValueError(f"model.joint.heads / adaln shape cross_attn layers; with model.joint.mode={cfg.joint.mode!r} set them to 'own' / 'shared'")
    options = attention_options(cfg)
    if options["kernel"] not in KERNELS:
        raise ValueError(f"model.attention.kernel={options['kernel']!r} is not one of {KERNELS}")
    if options["context"] not in context_parallel.CONTEXT_MODES:
        raise ValueError(f"model.attention.context={options['context']!r} is not one of {context_parallel.CONTEXT_MODES}")
    if cfg.text.encoder not in MODEL_TEXT_ENCODERS:
        raise ValueError(
            f"model.text.encoder={cfg.text.encoder!r} is not one of {MODEL_TEXT_ENCODERS} "
            "('builtin': trained here from caption ids; 'precomputed': embeddings from the records)"
        )
    if cfg.text.encoder == "builtin" and cfg.text.dim != cfg.text.width:
        raise ValueError(f"model.text.dim={cfg.text.dim} must equal model.text.width={cfg.text.width} with the builtin text encoder")


class Context(NamedTuple):
    """Per-call inputs every layer reads (loop-invariant under the layer scan)."""

    mod: dict  # modality -> [B, N, K, D] shared AdaLN projection
    pos: dict  # modality -> [B or 1, N, 3]
    mask: dict  # modality -> [B, N] bool or None
    text: dict  # modality -> [B, L, D] projected caption
    text_mask: dict  # modality -> [B, L]
    cross_modal: jax.Array  # [B] bool
    grid: tuple[int, int, int] | None  # video token grid, for decoupled attention
    cross_mod: dict | None = None  # joint.adaln="own": modality -> [B, N, 5, D] (CROSS_NAMES)
    perturbed: jax.Array | None = None  # [B] bool: STG's perturbed samples (AVDiT's `perturbed`)


def chunk(ctx: Context, table: nnx.Param, names: Sequence[str], modality: str, name: str) -> jax.Array:
    i = names.index(name)
    return ctx.mod[modality][:, :, i, :] + table[...][i].astype(ctx.mod[modality].dtype)


class BranchBlock(nnx.Module):
    """One modality's DiT block: self-attention (unless a joint layer owns it),
    text cross-attention and MLP, with its own modulation table."""

    def __init__(self, cfg, modality: str, own_self_attn: bool, *, rngs: nnx.Rngs, coupled: bool = False):
        b = cfg[modality]
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        self.modality = modality
        self.names = modulation_names(cfg, modality)
        self.table = modulation_table(rngs, len(self.names), b.width, cfg.param_dtype)
        # joint.adaln="own": this block's own shifts, scales and gate of cross-modal attention
        self.cross_table = modulation_table(rngs, len(CROSS_NAMES), b.width, cfg.param_dtype) if coupled and own_cross_adaln(cfg) else None
        self.decoupled = modality == "video" and bool(cfg.video.decoupled)
        self.window = int(cfg.video.temporal_window) if self.decoupled else 0
        self.rope = cfg.rope
        self.axes = self_axes(cfg, modality)
        self.norm = cfg.norm
        self.heads = b.heads
        self.head_dim = b.width // b.heads
        akw = dict(kw, **projection_options(cfg), **attention_options(cfg))
        self.self_attn = Attention(b.width, b.width, b.heads, **akw) if own_self_attn else None
        self.temporal_attn = Attention(b.width, b.width, b.heads, **akw) if (self.decoupled and own_self_attn) else None
        self.text_attn = Attention(b.width, b.width, b.heads, **akw)
        # model.text_norm="affine" (Wan): the text attention's own LayerNorm, with a scale and bias
        self.text_norm = LayerNorm(b.width, rngs=rngs, param_dtype=cfg.param_dtype) if cfg.text_norm == "affine" else None
        self.mlp = MLP(b.width, int(b.width * b.mlp_ratio), **kw)

    def mod(self, ctx: Context, name: str) -> jax.Array:
        if self.cross_table is not None and name in CROSS_NAMES:
            i = CROSS_NAMES.index(name)
            return ctx.cross_mod[self.modality][:, :, i, :] + self.cross_table[...][i].astype(ctx.cross_mod[self.modality].dtype)
        return chunk(ctx, self.table, self.names, self.modality, name)

    def pre_norm(self, x: jax.Array) -> jax.Array:
        return NORMS[self.norm](x)

    def self_attention(self, x: jax.Array, ctx: Context, skip: jax.Array | None = None) -> jax.Array:
        """skip: [B] bool, samples whose attention here is each token's own value (STG's perturbation)."""
        m = self.modality
        h = modulate(self.pre_norm(x), self.mod(ctx, "attn_shift"), self.mod(ctx, "attn_scale"))
        a = angles_for(self.rope, ctx.pos[m], self.heads, self.head_dim, self.axes)
        angles = jnp.broadcast_to(a, (x.shape[0], x.shape[1]) + a.shape[2:])
        mask = key_mask(None, ctx.mask[m])
        if skip is not None:
            attn = self.self_attn
            q = attn.proj.query(h, angles, LENGTH[m])
            k, v = attn.proj.key_value(h, angles)
            o = context_parallel.attention(q, k, v, mask, q_length=LENGTH[m], k_length=LENGTH[m], kernel=attn.kernel, context=attn.context)
            return x + self.mod(ctx, "attn_gate") * attn.proj.out(jnp.where(skip[:, None, None, None], v, o))
        if not self.decoupled:
            out = self.self_attn(h, h, q_angles=angles, k_angles=angles, mask=mask, q_length=LENGTH[m], k_length=LENGTH[m])
            return x + self.mod(ctx, "attn_gate") * out
        x = x + self.mod(ctx, "attn_gate") * self._factorised(self.self_attn, h, angles, ctx, spatial=True)
        h = modulate(self.pre_norm(x), self.mod(ctx, "temporal_shift"), self.mod(ctx, "temporal_scale"))
        return x + self.mod(ctx, "temporal_gate") * self._factorised(self.temporal_attn, h, angles, ctx, spatial=False)

    def _factorised(self, attn: Attention, h: jax.Array, angles: jax.Array, ctx: Context, spatial: bool) -> jax.Array:
        """Seedance-style decoupled attention: within a frame, or along time in a window."""
        shards = context_parallel.context_size(LENGTH["video"])
        if shards > 1:
            raise ValueError(
                f"model.video.decoupled=True does not support context parallelism (video tokens split over {shards} devices); "
                "set mesh.shape.context=1 or model.video.decoupled=False"
            )
        b, n, d = h.shape
        t, hh, ww = ctx.grid
        hw = hh * ww

        # [B, T*H*W, ...] -> [B*T, H*W, ...] (spatial) or [B*H*W, T, ...] (temporal)
        def split(a):
            rest = a.shape[2:]
            a = a.reshape(b, t, hw, *rest)
            a = a if spatial else jnp.swapaxes(a, 1, 2)
            return a.reshape(-1, a.shape[2], *rest)

        def merge(a):
            a = a.reshape(b, t, hw, d) if spatial else a.reshape(b, hw, t, d).transpose(0, 2, 1, 3)
            return a.reshape(b, n, d)

        km = None if ctx.mask["video"] is None else split(ctx.mask["video"][..., None].astype(h.dtype))[..., 0] > 0
        mask = None if spatial and km is None else Mask(None, km, None if spatial else self.window)
        a = split(angles)
        return merge(attn(split(h), split(h), q_angles=a, k_angles=a, mask=mask))

    def text_attention(self, x: jax.Array, ctx: Context) -> jax.Array:
        m = self.modality
        h = self.pre_norm(x) if self.text_norm is None else self.text_norm(x)
        return x + self.text_attn(h, ctx.text[m], mask=key_mask(ctx.mask[m], ctx.text_mask[m]), q_length=LENGTH[m])

    def feed_forward(self, x: jax.Array, ctx: Context) -> jax.Array:
        h = modulate(self.pre_norm(x), self.mod(ctx, "mlp_shift"), self.mod(ctx, "mlp_scale"))
        return x + self.mod(ctx, "mlp_gate") * self.mlp(h)


PHASE_FREQS = 4  # sinusoids of a sound token's phase between two frames (aligned_read="pair")


def time_bias_slopes(sharpest: float, heads: int) -> jax.Array:
    """Per head, the logit penalty per second of time between query and key: `sharpest`
    for head 0, halving from head to head (ALiBi's geometric slopes), so some heads
    look at the same instant and others further around it."""
    return sharpest / 2.0 ** jnp.arange(heads, dtype=jnp.float32)


def time_bias(q_times: jax.Array, k_times: jax.Array, slopes: jax.Array) -> jax.Array:
    """[B or 1, Nq], [B or 1, Nk] seconds, [H] slopes -> [B or 1, H, Nq, Nk] logit bias -slope |t_q - t_k|."""
    dt = jnp.abs(q_times[:, :, None] - k_times[:, None, :])
    return -slopes[None, :, None, None] * dt[:, None]


class AlignedPath:
    """`model.joint.aligned`: beside the learned cross-modal attention, a fixed
    time-aligned read of the other modality (no softmax to sharpen first), shared by
    `cross_attn` and `joint_attn` layers. Its parameters live on the layer that
    mixes it in, under the names below."""

    def _init_aligned(self, cfg, rngs: nnx.Rngs) -> None:
        v, a = cfg.video, cfg.audio
        self.aligned = bool(cfg.joint.aligned)
        self.frame_tokens = int(cfg.joint.frame_tokens)
        if self.aligned:
            dkw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
            # each token of the frame in its place (where the disc is, not just that it is),
            # or the frame's tokens averaged over space
            frame_in, frame_axes = ((self.frame_tokens, v.width), (None, "embed", "embed")) if self.frame_tokens else (v.width, ("embed", "embed"))
            self.frames_to_audio = Dense(frame_in, a.width, frame_axes, **dkw)
            self.read_video = cfg.joint.aligned_read_video
            # "bins": the sound in each part of the frame's neighbourhood through its own projection
            sound_in, sound_axes = ((SOUND_BINS, a.width), (None, "embed", "embed")) if self.read_video == "bins" else (a.width, ("embed", "embed"))
            self.audio_to_frames = Dense(sound_in, v.width, sound_axes, **dkw)
            self.read = cfg.joint.aligned_read
            if self.read == "pair":  # the frames before and after apart, and where between them the instant falls
                self.next_frame_to_audio = Dense(frame_in, a.width, frame_axes, **dkw)
                self.phase_to_audio = Dense(2 * PHASE_FREQS, a.width, (None, "embed"), **dkw)

    def _aligned(self, m: str, kv_in: dict, ctx: Context) -> jax.Array:
        """The other modality's features at this token's instant, read through a fixed
        linear-interpolation kernel in time instead of a learned softmax: a sound token
        gets the frames either side of it (each frame's tokens averaged over space), a
        frame's tokens get the sound tokens within one frame interval of it."""
        if ctx.grid is None:
            raise ValueError("model.joint.aligned=True needs the video token grid: pass grid=(T', H', W')")
        t, hh, ww = ctx.grid
        b = kv_in["video"].shape[0]
        frame_t = jnp.broadcast_to(ctx.pos["video"][..., 0], (b, t * hh * ww)).reshape(b, t, hh * ww)[:, :, 0]  # [B, T']
        audio_t = jnp.broadcast_to(ctx.pos["audio"][..., 0], kv_in["audio"].shape[:2])  # [B, N_a]
        spacing = (frame_t[:, -1:] - frame_t[:, :1]) / max(t - 1, 1)  # [B, 1] seconds between frames
        if m == "audio":
            video = kv_in["video"].reshape(b, t, hh * ww, -1)
            valid = None if ctx.mask["video"] is None else ctx.mask["video"].reshape(b, t, hh * ww, 1).astype(video.dtype)
            if self.frame_tokens:
                if hh * ww != self.frame_tokens:
                    raise ValueError(f"model.joint.frame_tokens={self.frame_tokens} but frames have {hh * ww} tokens")
                frames = video if valid is None else video * valid  # [B, T', H'W', Dv]: where each token is kept
            else:
                frames = video.mean(2) if valid is None else (video * valid).sum(2) / jnp.maximum(valid.sum(2), 1.0)  # [B, T', Dv]
            if self.read == "pair":
                return self._pair(frames, frame_t, audio_t, spacing)
            kernel = self._kernel(frame_t, audio_t, spacing)
            weights = kernel / jnp.maximum(kernel.sum(-1, keepdims=True), 1e-6)
            return self.frames_to_audio(jnp.einsum("baf,bf...->ba...", weights, frames))  # [B, N_a, Da]
        audio = kv_in["audio"]
        if self.read_video == "bins":
            return jnp.repeat(self._bins(audio, frame_t, audio_t, spacing, ctx.mask["audio"]), hh * ww, axis=1)
        kernel = self._kernel(frame_t, audio_t, spacing)
        if ctx.mask["audio"] is not None:
            kernel = kernel * ctx.mask["audio"][:, :, None].astype(kernel.dtype)
        weights = kernel / jnp.maximum(kernel.sum(1, keepdims=True), 1e-6)  # each frame averages the sound around it
        per_frame = self.audio_to_frames(jnp.einsum("baf,bad->bfd", weights, audio))  # [B, T', Dv]
        return jnp.repeat(per_frame, hh * ww, axis=1)  # [B, N_v, Dv], token order (t, h, w)

    @staticmethod
    def _kernel(frame_t, audio_t, spacing) -> jax.Array:
        """[B, N_a, T'] linear-interpolation weights between sound tokens and frames in time."""
        return jnp.maximum(0.0, 1.0 - jnp.abs(audio_t[:, :, None] - frame_t[:, None, :]) / spacing[:, :, None])

    def _bins(self, audio, frame_t, audio_t, spacing, mask) -> jax.Array:
        """joint.aligned_read_video="bins": frame n reads the sound tokens within one frame
        interval of it as SOUND_BINS averages, one per equal part of [t_n - spacing,
        t_n + spacing), each through its own projection, so that the frame knows where
        around it a burst falls, which one average over the window ("mix") blurs. -> [B, T', Dv]."""
        rel = (audio_t[:, :, None] - frame_t[:, None, :]) / spacing[:, :, None]  # [B, N_a, T'] in frame intervals
        part = jnp.floor((rel + 1.0) * SOUND_BINS / 2).astype(jnp.int32)
        member = jax.nn.one_hot(part, SOUND_BINS, dtype=audio.dtype)  # [B, N_a, T', K]; 0 outside [-1, 1)
        if mask is not None:
            member = member * mask[:, :, None, None].astype(member.dtype)
        weights = member / jnp.maximum(member.sum(1, keepdims=True), 1.0)
        return self.audio_to_frames(jnp.einsum("bafk,bad->bfkd", weights, audio))  # [B, T', Dv]

    def _pair(self, frames, frame_t, audio_t, spacing) -> jax.Array:
        """joint.aligned_read="pair": a sound token at time tau between frames n and n + 1
        gets frame n through one projection, frame n + 1 through another and the phase
        (tau - t_n) / spacing as sinusoids: a contact between two frames is where the
        disc's distances to the wall in the two frames say, which a mix of the two
        frames (aligned_read="mix") blurs."""
        t = frames.shape[1]
        if t < 2:
            raise ValueError('model.joint.aligned_read="pair" needs clips of at least 2 latent frames; use aligned_read="mix"')
        rel = (audio_t - frame_t[:, :1]) / spacing  # [B, N_a] frames since the first
        idx = jnp.clip(jnp.floor(rel), 0, t - 2).astype(jnp.int32)
        phase = jnp.clip(rel - idx, 0.0, 1.0)[..., None] * jnp.pi * jnp.arange(1, PHASE_FREQS + 1, dtype=jnp.float32)
        before = jnp.take_along_axis(self.frames_to_audio(frames), idx[..., None], axis=1)  # [B, N_a, Da]
        after = jnp.take_along_axis(self.next_frame_to_audio(frames), idx[..., None] + 1, axis=1)
        return before + after + self.phase_to_audio(jnp.concatenate([jnp.sin(phase), jnp.cos(phase)], -1).astype(before.dtype))


class CrossModalAttention(AlignedPath, nnx.Module):
    """Audio-to-video and video-to-audio attention, temporal RoPE only; each side's
    queries and context are modulated by that side's own timesteps.

    With `joint.time_bias` > 0 each head's logits also fall linearly with the time
    between query and key (`time_bias_slopes`), so from the first step a sound
    token reads the frames around its own instant and a frame the sound around
    its own, instead of an average over the clip that no gradient can sharpen
    until the other branch's features carry timing (benchmarks/RESULTS.md,
    "Synchrony").
    """

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype, **projection_options(cfg), **attention_options(cfg))
        v, a = cfg.video, cfg.audio
        # joint.heads="audio" (LTX-2): both directions attend in the audio branch's heads
        layout = {m: a if cfg.joint.heads == "audio" else cfg[m] for m in MODALITIES}
        heads = {m: b.heads for m, b in layout.items()}
        head_dims = {m: b.width // b.heads for m, b in layout.items()}
        self.a2v = Attention(v.width, a.width, heads["video"], head_dim=head_dims["video"], **kw)  # video queries audio
        self.v2a = Attention(a.width, v.width, heads["audio"], head_dim=head_dims["audio"], **kw)  # audio queries video
        self.head_dims = tuple(head_dims.items())
        self.rope = cfg.rope
        self.time_bias = float(cfg.joint.time_bias)
        self.heads = tuple(heads.items())
        self._init_aligned(cfg, rngs)

    def __call__(self, xv, xa, video: BranchBlock, audio: BranchBlock, ctx: Context):
        blocks, xs = {"video": video, "audio": audio}, {"video": xv, "audio": xa}
        normed = {m: blocks[m].pre_norm(xs[m]) for m in MODALITIES}
        q_in = {m: modulate(normed[m], blocks[m].mod(ctx, "cross_q_shift"), blocks[m].mod(ctx, "cross_q_scale")) for m in MODALITIES}
        kv_in = {m: modulate(normed[m], blocks[m].mod(ctx, "cross_kv_shift"), blocks[m].mod(ctx, "cross_kv_scale")) for m in MODALITIES}
        flag = ctx.cross_modal.astype(xv.dtype)[:, None, None]
        out = {}
        for m, other, attn in (("video", "audio", self.a2v), ("audio", "video", self.v2a)):
            hd, nh = dict(self.head_dims)[m], dict(self.heads)[m]
            qa = angles_for(self.rope, ctx.pos[m], nh, hd, "t")
            ka = angles_for(self.rope, ctx.pos[other], nh, hd, "t")
            mask = key_mask(ctx.mask[m], ctx.mask[other])
            if self.time_bias > 0:
                q = attn.proj.query(q_in[m], qa, LENGTH[m])
                k, v = attn.proj.key_value(kv_in[other], ka)
                bias = time_bias(ctx.pos[m][..., 0], ctx.pos[other][..., 0], time_bias_slopes(self.time_bias, dict(self.heads)[m]))
                # einsums: this attention spans the audio tokens on one side, about 1% of the video's
                y = attn.proj.out(dot_product_attention(q, k, v, None if mask is None else mask.dense(q.shape[1], k.shape[1]), bias))
            else:
                y = attn(q_in[m], kv_in[other], q_angles=qa, k_angles=ka, mask=mask, q_length=LENGTH[m], k_length=LENGTH[other])
            if self.aligned:
                y = y + self._aligned(m, kv_in, ctx)
            out[m] = xs[m] + flag * blocks[m].mod(ctx, "cross_q_gate") * y
        return out["video"], out["audio"]


class JointAttention(AlignedPath, nnx.Module):
    """MMDiT attention over [video; audio] with per-modality projections and QK norms.

    Both modalities project into the video branch's heads x head_dim. When a
    sample's cross_modal flag is off, its attention is block-diagonal. With
    `joint.aligned` each side also adds the other's features at its instant
    (`AlignedPath`, read from the attention's modulated inputs, through its gate).
    """

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype, **projection_options(cfg))
        heads, head_dim = cfg.video.heads, cfg.video.width // cfg.video.heads
        self.heads, self.head_dim = heads, head_dim
        self.rope = cfg.rope
        self.options = tuple(attention_options(cfg).items())  # hashable: part of the graphdef
        self.video = AttentionProjections(cfg.video.width, cfg.video.width, heads, head_dim, **kw)
        self.audio = AttentionProjections(cfg.audio.width, cfg.audio.width, heads, head_dim, **kw)
        self._init_aligned(cfg, rngs)

    def __call__(self, xv, xa, video: BranchBlock, audio: BranchBlock, ctx: Context):
        blocks, xs, projs = {"video": video, "audio": audio}, {"video": xv, "audio": xa}, {"video": self.video, "audio": self.audio}
        qkv, hs = {}, {}
        for m in MODALITIES:
            h = hs[m] = modulate(blocks[m].pre_norm(xs[m]), blocks[m].mod(ctx, "attn_shift"), blocks[m].mod(ctx, "attn_scale"))
            a = angles_for(self.rope, ctx.pos[m], self.heads, self.head_dim, "thw")
            angles = jnp.broadcast_to(a, (h.shape[0], h.shape[1]) + a.shape[2:])
            qkv[m] = (projs[m].query(h, angles, LENGTH[m]), *projs[m].key_value(h, angles))  # 3 x [B, N_m, H, Dh]
        ov, oa = context_parallel.joint_attention(
            qkv["video"],
            qkv["audio"],
            ctx.mask["video"],
            ctx.mask["audio"],
            ctx.cross_modal,
            video_length=LENGTH["video"],
            audio_length=LENGTH["audio"],
            **dict(self.options),
        )
        ov, oa = self.video.out(ov), self.audio.out(oa)
        if self.aligned:
            flag = ctx.cross_modal.astype(xv.dtype)[:, None, None]
            ov = ov + flag * self._aligned("video", hs, ctx)
            oa = oa + flag * self._aligned("audio", hs, ctx)
        xv = xv + video.mod(ctx, "attn_gate") * ov
        xa = xa + audio.mod(ctx, "attn_gate") * oa
        return xv, xa


class LayerPair(nnx.Module):
    """One layer of both branches: self (or joint) attention, text attention,
    cross-modal attention if this layer is coupled, then the MLPs."""

    def __init__(self, cfg, coupled: bool, *, rngs: nnx.Rngs):
        self.mode = cfg.joint.mode if coupled else "none"
        joint = self.mode == "joint_attn"
        cross = self.mode == "cross_attn"
        self.video = BranchBlock(cfg, "video", own_self_attn=not joint, rngs=rngs, coupled=cross)
        self.audio = BranchBlock(cfg, "audio", own_self_attn=not joint, rngs=rngs, coupled=cross)
        self.joint = JointAttention(cfg, rngs=rngs) if joint else None
        self.cross = CrossModalAttention(cfg, rngs=rngs) if self.mode == "cross_attn" else None

    def __call__(self, xv, xa, ctx: Context, stg: jax.Array | None = None):
        """stg: whether this layer is one of STG's blocks (a bool, traced under the layer scan)."""
        if self.joint is not None:
            xv, xa = self.joint(xv, xa, self.video, self.audio, ctx)
        else:
            skip = None if stg is None else ctx.perturbed & stg
            xv, xa = self.video.self_attention(xv, ctx, skip), self.audio.self_attention(xa, ctx, skip)
        xv, xa = self.video.text_attention(xv, ctx), self.audio.text_attention(xa, ctx)
        if self.cross is not None:
            xv, xa = self.cross(xv, xa, self.video, self.audio, ctx)
        xv, xa = self.video.feed_forward(xv, ctx), self.audio.feed_forward(xa, ctx)
        return constrain(xv, _act("video")), constrain(xa, _act("audio"))


class LayerGroup(nnx.Module):
    """`joint.every` layers, the last one coupled: the unit the layer scan repeats."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        size = cfg.joint.every if cfg.joint.mode != "none" else 1
        coupled = [cfg.joint.mode != "none" and i == size - 1 for i in range(size)]
        self.layers = nnx.List([LayerPair(cfg, c, rngs=rngs) for c in coupled])

    def __call__(self, xv, xa, ctx: Context, stg: jax.Array | None = None):
        """stg: [layers] bool, which of the group's layers are STG's blocks (None: no STG)."""
        for i, layer in enumerate(self.layers):
            xv, xa = layer(xv, xa, ctx, None if stg is None else stg[i])
        return xv, xa


class FinalLayer(nnx.Module):
    """AdaLN-modulated norm and a zero-initialised projection back to patch values."""

    def __init__(self, dim: int, out_dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        self.table = modulation_table(rngs, 2, dim, param_dtype)
        self.proj = Dense(dim, out_dim, ("embed", "patch"), rngs=rngs, init=zeros, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, t_emb: jax.Array) -> jax.Array:
        table = self.table[...].astype(x.dtype)
        shift, scale = t_emb + table[0], t_emb + table[1]
        return self.proj(modulate(NORMS["layer"](x), shift, scale))  # LayerNorm whatever model.norm: LTX-2's too


class CrossModalAdaLN(nnx.Module):
    """`joint.adaln="own"` (LTX-2): a modality's cross-modal shifts and scales, and
    its gate, each from its own embedding of the token's timestep, [B, N] ->
    [B, N, 5, D] in CROSS_NAMES order; each coupled block adds its `cross_table`."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.time = TimestepEmbedder(dim, **kw)
        self.adaln = AdaLNSingle(dim, len(CROSS_NAMES) - 1, **kw)
        self.gate_time = TimestepEmbedder(dim, **kw)
        self.gate_adaln = AdaLNSingle(dim, 1, **kw)

    def __call__(self, t: jax.Array) -> jax.Array:
        return jnp.concatenate([self.adaln(self.time(t)), self.gate_adaln(self.gate_time(t))], axis=2)


class AbsolutePosition(nnx.Module):
    """Sinusoidal features of a token's absolute (t, h, w), projected to the width.

    RoPE alone makes attention translation-equivariant; where the frame's edges
    matter (balls bounce off walls), tokens also need to know where they are.
    """

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str, num_freqs: int = 8):
        self.num_freqs = num_freqs
        self.proj = Dense(3 * 2 * num_freqs, dim, ("norm", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, pos: jax.Array) -> jax.Array:
        freqs = 2.0 ** jnp.arange(self.num_freqs, dtype=jnp.float32) * 0.1  # periods from ~0.2 to ~60 units
        args = pos.astype(jnp.float32)[..., None] * freqs  # [B, N, 3, F]
        feats = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
        return self.proj(feats.reshape(*pos.shape[:-1], -1))


class CaptionProjection(nnx.Module):
    """Text embedding [B, L, Dt] -> a branch's width [B, L, D], shared by its blocks."""

    def __init__(self, text_dim: int, dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = Dense(text_dim, dim, ("embed", "mlp"), **kw)
        self.fc2 = Dense(dim, dim, ("mlp", "embed"), **kw)

    def __call__(self, text: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(text), approximate=True))


class AVDiT(nnx.Module):
    """The joint audio-video denoiser.

    The network predicts velocity directly or, with `prediction='x0'`, the clean
    tokens, converted to velocity; either way the call returns velocity.

    Call: tokens x[m] [B, N_m, P_m], per-token timesteps t[m] [B, N_m], text
    embeddings [B, L, Dt] with mask [B, L] (or one of each per modality, dicts
    keyed like x: LTX-2's text connectors give each branch its own), per-sample
    cross_modal [B] bool, optional guidance scales [B, 3] or [3] (GUIDANCE_TERMS; default
    1 = off; model.guidance_embed) and step lengths interval[m] [B, N_m] (default
    0; model.interval_embed),
    positions pos[m] [B or 1, N_m, 3] (t seconds, h, w), optional padding
    masks token_mask[m] [B, N_m], and the video token grid (needed by decoupled
    video attention) -> velocities v[m] [B, N_m, P_m] in float32.
    Spatio-temporal guidance's perturbed pass: `perturbed` [B] bool and `stg_blocks`
    (0-based block indices): in those blocks a perturbed sample's video and audio
    self-attention outputs each token's value projection, as if every token attended
    to itself alone (LTX-2's STG; blocks with plain self-attention only).
    """

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        validate_config(cfg)
        with lora.building(cfg.lora):  # adapters on the projections model.lora targets (jav.models.lora)
            cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so the graphdef can be a jit static
            self.cfg = cfg
            kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
            self.embed = nnx.Dict({m: Dense(patch_dim(cfg, m), cfg[m].width, ("patch", "embed"), **kw) for m in MODALITIES})
            self.time = nnx.Dict({m: TimestepEmbedder(cfg[m].width, **kw) for m in MODALITIES})
            self.guide = (
                nnx.Dict({m: ConditionEmbedder(len(GUIDANCE_TERMS), cfg[m].width, scale=GUIDANCE_EMBED_SCALE, **kw) for m in MODALITIES})
                if cfg.guidance_embed
                else None
            )
            self.interval = nnx.Dict({m: ConditionEmbedder(1, cfg[m].width, **kw) for m in MODALITIES}) if cfg.interval_embed else None
            self.abs_pos = nnx.Dict({m: AbsolutePosition(cfg[m].width, **kw) for m in MODALITIES}) if cfg.abs_pos else None
            self.adaln = nnx.Dict({m: AdaLNSingle(cfg[m].width, len(modulation_names(cfg, m)), **kw) for m in MODALITIES})
            self.cross_adaln = nnx.Dict({m: CrossModalAdaLN(cfg[m].width, **kw) for m in MODALITIES}) if own_cross_adaln(cfg) else None
            self.caption = nnx.Dict({m: CaptionProjection(cfg.text.dim, cfg[m].width, **kw) for m in MODALITIES})
            self.final = nnx.Dict({m: FinalLayer(cfg[m].width, patch_dim(cfg, m), **kw) for m in MODALITIES})
            self.text_encoder = TextEncoder(cfg.text, **kw) if cfg.text.encoder == "builtin" else None
            group = cfg.joint.every if cfg.joint.mode != "none" else 1
            self.num_groups = cfg.depth // group
            if cfg.scan_layers:

                @nnx.split_rngs(splits=self.num_groups)
                @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
                def make(r):
                    return LayerGroup(cfg, rngs=r)

                self.groups = make(rngs)
            else:
                self.groups = nnx.List([LayerGroup(cfg, rngs=rngs) for _ in range(self.num_groups)])

    def encode_text(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        if self.text_encoder is None:
            raise ValueError("model.text.encoder='precomputed': pass precomputed text embeddings (batch['text_emb']) instead of token ids")
        return self.text_encoder(ids, mask)

    def stg_layers(self, blocks: Sequence[int]) -> np.ndarray:
        """STG's block indices -> [groups, layers per group] bool, the layer scan's layout."""
        cfg = self.cfg
        if not blocks:
            raise ValueError("a perturbed pass needs stg_blocks: the blocks whose self-attention STG skips (sample.stg_blocks)")
        if cfg.joint.mode == "joint_attn" or cfg.video.decoupled:
            raise ValueError("STG skips plain self-attention: a model with model.joint.mode='joint_attn' or model.video.decoupled=True has none to skip")
        outside = [b for b in blocks if not 0 <= b < cfg.depth]
        if outside:
            raise ValueError(f"stg_blocks {outside} are outside the model's blocks 0..{cfg.depth - 1}")
        return np.isin(np.arange(cfg.depth), blocks).reshape(self.num_groups, cfg.depth // self.num_groups)

    def __call__(
        self,
        x: dict,
        t: dict,
        text: jax.Array | dict,
        text_mask: jax.Array | dict,
        cross_modal: jax.Array | None = None,
        *,
        pos: dict,
        token_mask: dict | None = None,
        grid: tuple[int, int, int] | None = None,
        guidance: jax.Array | None = None,
        interval: dict | None = None,
        perturbed: jax.Array | None = None,
        stg_blocks: Sequence[int] = (),
    ) -> dict:
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        batch = x["video"].shape[0]
        if cross_modal is None:
            cross_modal = jnp.ones((batch,), bool)
        if cfg.video.decoupled and grid is None:
            raise ValueError("model.video.decoupled=True needs the video token grid: pass grid=(T', H', W')")
        if guidance is not None and self.guide is None:
            raise ValueError("guidance scales were passed to a model without model.guidance_embed; guide it with several passes (jav.samplers.guided_velocity)")
        if interval is not None and self.interval is None:
            raise ValueError("step lengths (interval) were passed to a model without model.interval_embed")
        stg = None if perturbed is None else self.stg_layers(stg_blocks)
        token_mask = token_mask or {}
        pos = {m: as_batch_positions(pos[m]) for m in MODALITIES}  # [B or 1, N, 3]
        h, t_emb, mod = {}, {}, {}
        for m in MODALITIES:
            h[m] = self.embed[m](x[m].astype(dtype))  # [B, N, D]
            if self.abs_pos is not None:
                h[m] = h[m] + self.abs_pos[m](pos[m])
            h[m] = constrain(h[m], _act(m))
            t_emb[m] = self.time[m](constrain(t[m], ("activation_batch", LENGTH[m])))  # [B, N, D]
            if self.guide is not None:
                g = jnp.ones((batch, len(GUIDANCE_TERMS)), jnp.float32) if guidance is None else jnp.broadcast_to(guidance, (batch, len(GUIDANCE_TERMS)))
                t_emb[m] = t_emb[m] + self.guide[m](g)[:, None, :]
            if self.interval is not None:
                h_m = jnp.zeros_like(t[m]) if interval is None else interval[m]
                t_emb[m] = t_emb[m] + self.interval[m](h_m[..., None])
            # per-token timestep embeddings and modulation, batch-sharded like the tokens; what kept the
            # TPU compiler from splitting them over embed and all-reducing the whole [B, N, D] microbatch
            # was the same constraint between the MLPs' layers (layers.py, constrain_batch;
            # benchmarks/aot_plans.md, "Raising the estimated MFU")
            t_emb[m] = constrain(t_emb[m], _act(m))
            mod[m] = constrain(self.adaln[m](t_emb[m]), ("activation_batch", LENGTH[m], None, "activation_embed"))  # [B, N, K, D]
        texts = text if isinstance(text, dict) else {m: text for m in MODALITIES}
        text_masks = text_mask if isinstance(text_mask, dict) else {m: text_mask for m in MODALITIES}
        ctx = Context(
            mod=mod,
            pos=pos,
            mask={m: token_mask.get(m) for m in MODALITIES},
            text={m: self.caption[m](texts[m].astype(dtype)) for m in MODALITIES},
            text_mask={m: text_masks[m].astype(bool) for m in MODALITIES},
            cross_modal=cross_modal.astype(bool),
            grid=tuple(grid) if grid is not None else None,
            cross_mod=None if self.cross_adaln is None else {m: self.cross_adaln[m](t[m]) for m in MODALITIES},
            perturbed=None if perturbed is None else perturbed.astype(bool),
        )

        def body(carry, group, group_stg):
            return group(carry[0], carry[1], ctx, group_stg)

        carry = (h["video"], h["audio"])
        if cfg.scan_layers:
            # a plain lax.scan over the stacked group state: it nests in any
            # trace (the samplers call the model inside their own scan)
            graphdef, state = nnx.split(self.groups)

            def scan_body(carry, xs):
                group_state, group_stg = xs
                return body(carry, nnx.merge(graphdef, group_state), group_stg), None

            carry, _ = jax.lax.scan(remat(scan_body, cfg.remat), carry, (state, stg))
        else:
            for i, group in enumerate(self.groups):
                graphdef, state = nnx.split(group)
                group_stg = None if stg is None else stg[i]
                carry = remat(lambda c, st: body(c, nnx.merge(graphdef, st), group_stg), cfg.remat)(carry, state)
        out = dict(zip(MODALITIES, carry))
        y = {m: self.final[m](out[m], t_emb[m]).astype(jnp.float32) for m in MODALITIES}
        if cfg.prediction == "velocity":
            return y
        # x0-prediction: the network outputs the clean sample, which lies on a
        # low-dimensional manifold even when a patch is wider than the model;
        # velocity = (x_t - x0) / t, with t floored where it would blow up.
        return {m: (x[m].astype(jnp.float32) - y[m]) / jnp.maximum(t[m], cfg.x0_min_t)[..., None] for m in MODALITIES}


def init_model(cfg, key: jax.Array, out_shardings=None) -> AVDiT:
    """Creates an AVDiT with one jitted initialisation (`layers.jit_init`),
    its parameters placed by `out_shardings` if given."""
    return jit_init(AVDiT, cfg, key, out_shardings)
