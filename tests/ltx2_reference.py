"""The small random diffusers LTX-2 transformer the LTX-2 tests compare jav against:
configs/ltx2.py's TINY sizes (2 blocks) in diffusers' own class, seeded."""

import diffusers
import torch

from configs import ltx2

T = ltx2.TINY


def tiny_transformer(rope_type: str = "split", **options) -> diffusers.LTX2VideoTransformer3DModel:
    """`LTX2VideoTransformer3DModel` at TINY's sizes, seed 0, in eval mode; `options` go to the class."""
    torch.manual_seed(0)
    inner, audio_inner = T["video_heads"] * T["video_head_dim"], T["audio_heads"] * T["audio_head_dim"]
    return diffusers.LTX2VideoTransformer3DModel(
        in_channels=T["channels"],
        out_channels=T["channels"],
        num_attention_heads=T["video_heads"],
        attention_head_dim=T["video_head_dim"],
        cross_attention_dim=inner,
        audio_in_channels=T["audio_channels"],
        audio_out_channels=T["audio_channels"],
        audio_num_attention_heads=T["audio_heads"],
        audio_attention_head_dim=T["audio_head_dim"],
        audio_cross_attention_dim=audio_inner,
        num_layers=T["depth"],
        caption_channels=T["text_dim"],
        rope_type=rope_type,
        **options,
    ).eval()
