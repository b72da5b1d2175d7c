"""The autoencoder phase's optional adversary: a small patch discriminator that
scores every patch of a frame (or of a spectrogram seen as a one-channel image)
as real or reconstructed, trained with a hinge loss and its own optimiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def as_images(x: jax.Array) -> jax.Array:
    """Video [B, T, H, W, C] -> frames [B T, H, W, C]; spectrogram [B, Ta, F] -> [B, Ta, F, 1]."""
    if x.ndim == 5:
        return x.reshape(-1, *x.shape[2:])
    if x.ndim == 3:
        return x[..., None]
    raise ValueError(f"the adversarial term takes video [B, T, H, W, C] or spectrograms [B, Ta, F], not shape {x.shape}; set loss.adv_weight=0 for this model")


class PatchDiscriminator(nnx.Module):
    """Three stride-2 4x4 convolutions with leaky ReLUs, then a 3x3 convolution to
    one logit per patch: [N, H, W, C] -> [N, H / 8, W / 8, 1]."""

    def __init__(self, in_channels: int, width: int, *, rngs: nnx.Rngs):
        widths = (width, 2 * width, 4 * width)
        cins = (in_channels,) + widths[:-1]
        self.convs = nnx.List([nnx.Conv(ci, co, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs) for ci, co in zip(cins, widths)])
        self.out = nnx.Conv(widths[-1], 1, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for conv in self.convs:
            h = jax.nn.leaky_relu(conv(h), 0.2)
        return self.out(h).astype(jnp.float32)


def hinge_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_generator(fake_logits: jax.Array) -> jax.Array:
    return -jnp.mean(fake_logits)
