"""jav's models: the dual-branch audio-video DiT and its parts."""

from jav.models.av_dit import AVDiT, init_model, validate_config  # noqa: F401
