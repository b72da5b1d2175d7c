"""Analytic FLOPs of one AVDiT forward pass: matmuls and attention, counted as
2 FLOPs per multiply-add, as MFU is conventionally reported. A training step
costs about 3x the forward (4x with full rematerialisation)."""

from __future__ import annotations

import jax

from jav.models.av_dit import modulation_names, patch_dim

_FREQ_DIM = 256  # TimestepEmbedder's sinusoid width
_ABS_POS_FREQS = 8  # AbsolutePosition's frequencies per axis


def _scores(nq: int, nk: int, inner: int) -> int:
    """QK^T and AV: the products a remat policy that keeps matmul outputs against
    weights (`dots`, `offload`) still recomputes in the backward pass."""
    return 2 * 2 * nq * nk * inner


def forward_flops(
    cfg,
    num_tokens: dict,
    text_len: int,
    batch: int = 1,
    grid: tuple[int, int, int] | None = None,
    include_text_encoder: bool = True,
    part: str = "all",
) -> int:
    """FLOPs of one forward pass for `num_tokens` {'video': Nv, 'audio': Na}:
    `part="all"`, or only the transformer layers' (`"layers"`: what a remat
    policy wraps), or only their attention's QK^T and AV products (`"scores"`),
    or only their MLPs (`"mlp"`).

    `grid` (T', H', W') is needed for decoupled video attention, whose spatial
    and temporal attentions cost less than full attention.
    """

    if part not in ("all", "layers", "scores", "mlp"):
        raise ValueError(f"part={part!r} is not 'all', 'layers', 'scores' or 'mlp'")

    def _dense(n: int, d_in: int, d_out: int) -> int:
        return 0 if part in ("scores", "mlp") else 2 * n * d_in * d_out

    def _mlp(n: int, d: int, hidden: int) -> int:
        return 0 if part == "scores" else 2 * 2 * n * d * hidden

    def scores(nq: int, nk: int, inner: int) -> int:
        return 0 if part == "mlp" else _scores(nq, nk, inner)

    def _attention(nq: int, nk: int, q_dim: int, kv_dim: int, inner: int) -> int:
        """Projections plus QK^T and AV for `nq` queries over `nk` keys."""
        return _dense(nq, q_dim, inner) + _dense(nk, kv_dim, 2 * inner) + _dense(nq, inner, q_dim) + scores(nq, nk, inner)

    total = 0
    n = num_tokens
    for m in ("video", "audio") if part == "all" else ():
        d, p = cfg[m].width, patch_dim(cfg, m)
        k = len(modulation_names(cfg, m))
        total += _dense(n[m], p, d)  # patch embedding
        if cfg.abs_pos:
            total += _dense(n[m], 6 * _ABS_POS_FREQS, d)
        total += _dense(n[m], _FREQ_DIM, d) + _dense(n[m], d, d)  # timestep MLP
        total += _dense(n[m], d, k * d)  # AdaLN-single
        total += _dense(text_len, cfg.text.dim, d) + _dense(text_len, d, d)  # caption projection
        total += _dense(n[m], d, p)  # final projection

    group = cfg.joint.every if cfg.joint.mode != "none" else 1
    for layer in range(cfg.depth):
        coupled = cfg.joint.mode != "none" and layer % group == group - 1
        mode = cfg.joint.mode if coupled else "none"
        for m in ("video", "audio"):
            d = cfg[m].width
            if mode != "joint_attn":
                if m == "video" and cfg.video.decoupled:
                    # spatial then temporal attention, each with its own q, k, v, o
                    # projections over all N tokens; the temporal window is a mask,
                    # so all T' keys are computed
                    t, h, w = grid
                    total += 2 * (4 * _dense(n[m], d, d)) + scores(n[m], h * w + t, d)
                else:
                    total += _attention(n[m], n[m], d, d, d)
            total += _attention(n[m], text_len, d, d, d)  # text cross-attention
            total += _mlp(n[m], d, int(d * cfg[m].mlp_ratio))
        dv, da = cfg.video.width, cfg.audio.width
        if mode == "cross_attn":
            total += _attention(n["video"], n["audio"], dv, da, dv)
            total += _attention(n["audio"], n["video"], da, dv, da)
        elif mode == "joint_attn":
            nt = n["video"] + n["audio"]
            total += _dense(n["video"], dv, 3 * dv) + _dense(n["audio"], da, 3 * dv)
            total += _dense(n["video"], dv, dv) + _dense(n["audio"], dv, da)
            total += scores(nt, nt, dv)

    if include_text_encoder and part == "all" and cfg.text.encoder == "builtin":
        d, length = cfg.text.width, text_len
        total += cfg.text.depth * (_attention(length, length, d, d, d) + 2 * _dense(length, d, 4 * d))
    return batch * total


def param_count(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))
