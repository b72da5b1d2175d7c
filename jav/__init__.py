"""jav: a JAX-native stack for joint audio-video diffusion models."""

from jav.platforms import quiet_platforms

quiet_platforms()  # before any jav module imports JAX
