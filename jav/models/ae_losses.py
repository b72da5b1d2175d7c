"""Reconstruction scores and loss terms of the autoencoder models (their
`training_loss` / `evaluate`, which the autoencoder phase calls): PSNR and a
multi-scale structure (finite-difference) loss.

The structure term stands in for a perceptual loss: LPIPS needs published VGG
weights, which jav does not download, so it is not used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(target: jax.Array, output: jax.Array, data_range: float = 2.0) -> jax.Array:
    """Mean over the batch of each example's PSNR in dB (signals in [-1, 1] span 2)."""
    mse = jnp.mean((output - target) ** 2, axis=tuple(range(1, target.ndim)))
    return jnp.mean(10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10)))


def _pool2(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """2x average pooling along `axes` (odd sizes lose their last element)."""
    for a in axes:
        n = x.shape[a] // 2 * 2
        x = jax.lax.slice_in_dim(x, 0, n, axis=a)
        x = x.reshape(x.shape[:a] + (n // 2, 2) + x.shape[a + 1 :]).mean(axis=a + 1)
    return x


def structure_loss(target: jax.Array, output: jax.Array, diff_axes: tuple[int, ...], pool_axes: tuple[int, ...], scales: int = 3) -> jax.Array:
    """Mean L1 between the finite differences of target and output along `diff_axes`,
    at `scales` resolutions made by 2x pooling along `pool_axes`: edges and motion
    count, as a perceptual loss would weigh them, not just pixel values."""
    total = 0.0
    for s in range(scales):
        if s:
            target, output = _pool2(target, pool_axes), _pool2(output, pool_axes)
        for a in diff_axes:
            if target.shape[a] > 1:
                total = total + jnp.mean(jnp.abs(jnp.diff(output, axis=a) - jnp.diff(target, axis=a)))
    return total
