"""Train-step time of diffusers' LTX-2 audio-video transformer on the CPU: the
PyTorch reference that `python -m benchmarks.step_time --reference` runs beside
jav's step at the same shapes (it passes the sizes below from the config).

    .venv-torch/bin/python benchmarks/diffusers_ltx2.py [--batch 4] [--layers 8] [--steps 5] [--json OUT]

It runs in its own venv (`make .venv-torch`, from benchmarks/requirements-torch.txt)
and does not import jav.

Builds `diffusers.LTX2VideoTransformer3DModel` with random weights and times one
training step: forward on random latents, MSE against random targets on the
video and the audio output, backward, gradient clipping to norm 1 and an AdamW
step (lr 1e-4, betas 0.9/0.99, no weight decay, as jav's step). Two warm-up
steps, then `--steps` timed ones; prints one JSON line (median, mean and min
seconds per step, tokens/s, parameter count, forward FLOPs per sample of matmuls
and attention counted by PyTorch's FlopCounterMode, the model arguments) and
appends it to `--json OUT` if given.

Sizes (defaults = configs/ltx2_bench.py):
- video width = heads x 64 (`--video-heads`, head dim 64), cross_attention_dim =
  video width (the text keys come from the caption projection);
- audio width = `--audio-heads` x 64, audio_cross_attention_dim = audio width;
- `--layers` blocks; mlp_ratio 4 is diffusers' fixed FeedForward mult;
- video latents patch 1 with `--channels` channels on a `--grid` T H W grid;
  `--audio-tokens` audio latents of `--channels` channels, patch 1;
- `--text-len` caption tokens of `--text-dim`, the same embeddings fed to both
  branches' caption projections;
- float32; timesteps per token, as jav's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import diffusers
import torch
import torch.nn.functional as F
from diffusers import LTX2VideoTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

HEAD_DIM = 64


def model_args(args) -> dict:
    return dict(
        in_channels=args.channels,
        out_channels=args.channels,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=args.video_heads,
        attention_head_dim=HEAD_DIM,
        cross_attention_dim=args.video_heads * HEAD_DIM,
        audio_in_channels=args.channels,
        audio_out_channels=args.channels,
        audio_patch_size=1,
        audio_patch_size_t=1,
        audio_num_attention_heads=args.audio_heads,
        audio_attention_head_dim=HEAD_DIM,
        audio_cross_attention_dim=args.audio_heads * HEAD_DIM,
        num_layers=args.layers,
        caption_channels=args.text_dim,
    )


def random_inputs(args) -> dict:
    frames, height, width = args.grid
    n, b = frames * height * width, args.batch
    text = torch.randn(b, args.text_len, args.text_dim)
    return dict(
        hidden_states=torch.randn(b, n, args.channels),
        audio_hidden_states=torch.randn(b, args.audio_tokens, args.channels),
        encoder_hidden_states=text,
        audio_encoder_hidden_states=text,
        timestep=1000 * torch.rand(b, n),
        audio_timestep=1000 * torch.rand(b, args.audio_tokens),
        encoder_attention_mask=torch.ones(b, args.text_len),
        audio_encoder_attention_mask=torch.ones(b, args.text_len),
        # diffusers' RoPE counts pixel frames, 8 per latent frame
        num_frames=frames,
        height=height,
        width=width,
        fps=8.0 * args.fps,
        audio_num_frames=args.audio_tokens,
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
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--video-heads", type=int, default=8, help="video width = heads x 64")
    parser.add_argument("--audio-heads", type=int, default=4, help="audio width = heads x 64")
    parser.add_argument("--channels", type=int, default=128, help="latent channels of both modalities")
    parser.add_argument("--grid", type=int, nargs=3, default=(8, 8, 16), metavar=("T", "H", "W"), help="video latent grid")
    parser.add_argument("--audio-tokens", type=int, default=256)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--fps", type=float, default=8.0 / 10.24, help="latent frames per second")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after two warm-up steps")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: every core)")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    margs = model_args(args)
    model = LTX2VideoTransformer3DModel(**margs).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    inputs = random_inputs(args)
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

    print(
        f"diffusers LTX2VideoTransformer3DModel: {sum(p.numel() for p in model.parameters()):,} params, {torch.get_num_threads()} threads, warming up",
        file=sys.stderr,
        flush=True,
    )
    for _ in range(2):
        step()
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        print(f"  step {i + 1}/{args.repeats}: {times[-1]:.2f}s", file=sys.stderr, flush=True)

    tokens = dict(video=args.grid[0] * args.grid[1] * args.grid[2], audio=args.audio_tokens, text=args.text_len)
    step_s = statistics.median(times)
    result = dict(
        model="diffusers.LTX2VideoTransformer3DModel",
        diffusers=diffusers.__version__,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        batch=args.batch,
        steps=args.repeats,
        params=sum(p.numel() for p in model.parameters()),
        tokens_per_sample=tokens,
        forward_flops_per_sample=forward_flops,
        step_s_median=step_s,
        step_s_mean=statistics.mean(times),
        step_s_min=min(times),
        tokens_per_s=args.batch * (tokens["video"] + tokens["audio"]) / step_s,
        model_args=margs,
    )
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
