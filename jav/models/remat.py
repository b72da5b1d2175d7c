"""Rematerialisation policies of a layer group, chosen by name (`model.remat`).

Activation memory of the backward pass against recompute:

- `none`: keep every intermediate (fastest, most memory);
- `full`: keep nothing but the group's inputs and recompute the whole group in
  the backward pass (least memory, about a third more FLOPs);
- `dots`: keep the outputs of matmuls against weights (no batch dimensions) and
  recompute the element-wise work around them (norms, modulation, GELU) and the
  attention scores;
- `projections`: keep only the attention projections' outputs (q, k, v, o) and the
  MLP's output; recompute the MLP's wide hidden layer, the attention scores and
  the element-wise work. Between `dots` and `full` in memory (9 activations of a
  token's width a layer where `dots` keeps 13) and in recompute (the scores and
  half the MLP);
- `offload`: as `dots`, but the kept matmul outputs go to pinned host memory
  and come back for the backward pass, trading HBM for host-link bandwidth. On
  CPU, device and host memory are the same and XLA drops the copies, so there
  it computes exactly what `dots` computes.
"""

from __future__ import annotations

from typing import Callable

import jax

REMAT_POLICIES = ("none", "full", "dots", "projections", "offload")
SAVED_BY_PROJECTIONS = ("attention_projection", "mlp_output")  # layers.Dense(saved_as=...) names


def validate_remat(policy: str) -> None:
    if policy not in REMAT_POLICIES:
        raise ValueError(
            f"model.remat={policy!r} is not one of {REMAT_POLICIES}: 'none' keeps all activations, 'dots' keeps matmul "
            "outputs, 'projections' keeps the attention projections and MLP outputs, 'offload' keeps matmul outputs in host "
            "memory, 'full' keeps nothing (least memory)"
        )


def remat(fn: Callable, policy: str) -> Callable:
    """`fn` (one layer group, or the body of the layer scan) under `policy`."""
    validate_remat(policy)
    if policy == "none":
        return fn
    if policy == "full":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.nothing_saveable)
    if policy == "dots":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    if policy == "projections":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.save_only_these_names(*SAVED_BY_PROJECTIONS))
    offload = jax.checkpoint_policies.offload_dot_with_no_batch_dims(offload_src="device", offload_dst="pinned_host")
    return jax.checkpoint(fn, policy=offload)
