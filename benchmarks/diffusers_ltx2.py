"""Train-step time of diffusers' LTX-2 audio-video transformer on the CPU, the
PyTorch counterpart of `python -m benchmarks.step_time --config configs/ltx2_bench.py`.

    .venv-torch/bin/python benchmarks/diffusers_ltx2.py [--batch 2] [--steps 10] [--threads 2] [--json OUT]

(the venv from benchmarks/requirements-torch.txt; this script does not import jav).

Builds `diffusers.LTX2VideoTransformer3DModel` with random weights and times one
training step: forward on random latents, MSE against random targets on the
video and the audio output, backward, gradient clipping to norm 1 and an AdamW
step (lr 1e-4, betas 0.9/0.99, no weight decay, as jav's step). Two warm-up
steps, then `--steps` timed ones; prints one JSON line (median, mean and min seconds
per step, parameter count, forward FLOPs per sample of matmuls and attention
counted by PyTorch's FlopCounterMode, the model arguments) and appends it to
`--json OUT` if given.

Sizes, as configs/ltx2_bench.py:
- video_width=512, video_heads=8 -> num_attention_heads=8, attention_head_dim=64
  (cross_attention_dim=512: the text keys come from the caption projection);
- audio_width=256, audio_heads=4 -> audio_num_attention_heads=4,
  audio_attention_head_dim=64, audio_cross_attention_dim=256;
- depth=4 -> num_layers=4; mlp_ratio 4 is diffusers' fixed FeedForward mult;
- video_patch=(1,1,1), video_channels=128, video_latent_shape=(8,8,16,128)
  -> in_channels=128, patch 1, 8 x 8 x 16 = 1,024 video tokens;
- audio_patch=1, audio_channels=128, audio_latent_shape=(64,128)
  -> audio_in_channels=128, 64 audio tokens;
- text_dim=512, text_len=64 -> caption_channels=512, 64 caption tokens, the same
  embeddings fed to both branches' caption projections;
- fps=8 latent frames/s -> fps=64 pixel frames/s (diffusers' RoPE counts pixel
  frames, 8 per latent frame); audio_rate=25 latents/s is diffusers' default
  (16 kHz, hop 160, 4x downsampling);
- batch_size=2, float32; timesteps per token, as jav's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import diffusers
import torch
import torch.nn.functional as F
from diffusers import LTX2VideoTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

MODEL_ARGS = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1,
    num_attention_heads=8, attention_head_dim=64, cross_attention_dim=512,
    audio_in_channels=128, audio_out_channels=128, audio_patch_size=1, audio_patch_size_t=1,
    audio_num_attention_heads=4, audio_attention_head_dim=64, audio_cross_attention_dim=256,
    num_layers=4, caption_channels=512,
)
GRID = (8, 8, 16)  # latent frames, height, width
AUDIO_TOKENS = 64
TEXT_LEN = 64
FPS = 64.0  # pixel frames per second: 8 latent frames per second x 8


def random_inputs(batch: int) -> dict:
    n = GRID[0] * GRID[1] * GRID[2]
    text = torch.randn(batch, TEXT_LEN, MODEL_ARGS["caption_channels"])
    return dict(
        hidden_states=torch.randn(batch, n, MODEL_ARGS["in_channels"]),
        audio_hidden_states=torch.randn(batch, AUDIO_TOKENS, MODEL_ARGS["audio_in_channels"]),
        encoder_hidden_states=text,
        audio_encoder_hidden_states=text,
        timestep=1000 * torch.rand(batch, n),
        audio_timestep=1000 * torch.rand(batch, AUDIO_TOKENS),
        encoder_attention_mask=torch.ones(batch, TEXT_LEN),
        audio_encoder_attention_mask=torch.ones(batch, TEXT_LEN),
        num_frames=GRID[0], height=GRID[1], width=GRID[2], fps=FPS, audio_num_frames=AUDIO_TOKENS,
        return_dict=False,
    )


def count_forward_flops(model, inputs: dict) -> int:
    """Matmul and attention FLOPs of one forward pass (2 per multiply-add)."""
    # PyTorch's counter has no formula for the CPU attention kernel: give it the GPU kernels' one
    def attention(q, k, v, *args, **kwargs):
        return sdpa_flop_count(q, k, v)

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={cpu_attention: attention})
    with torch.no_grad(), counter:
        model(**inputs)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after two warm-up steps")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LTX2VideoTransformer3DModel(**MODEL_ARGS).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    inputs = random_inputs(args.batch)
    targets = [torch.randn_like(inputs["hidden_states"]), torch.randn_like(inputs["audio_hidden_states"])]

    forward_flops = count_forward_flops(model, inputs) // args.batch

    def step():
        opt.zero_grad(set_to_none=True)
        video, audio = model(**inputs)
        loss = F.mse_loss(video, targets[0]) + F.mse_loss(audio, targets[1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)

    result = dict(
        model="diffusers.LTX2VideoTransformer3DModel", diffusers=diffusers.__version__, torch=torch.__version__,
        threads=args.threads, batch=args.batch, steps=args.steps,
        params=sum(p.numel() for p in model.parameters()),
        tokens_per_sample=dict(video=GRID[0] * GRID[1] * GRID[2], audio=AUDIO_TOKENS, text=TEXT_LEN),
        forward_flops_per_sample=forward_flops,
        step_s_median=statistics.median(times), step_s_mean=statistics.mean(times), step_s_min=min(times),
        model_args=MODEL_ARGS,
    )
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
