"""Parameter count and forward FLOPs of each config in configs/ (no weights are
allocated: the model is built abstractly).

    python -m benchmarks.model_stats            # every config
    python -m benchmarks.model_stats --config configs/ltx2_19b.py
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

import jax
from flax import nnx

from jav.models import AVDiT
from jav.models.flops import forward_flops, param_count


def load_config(path: str):
    """A config file's config: `configs/NAME.py` or `configs/NAME.py:ARG`."""
    path, _, arg = path.partition(":")
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def token_counts(cfg) -> tuple[dict, int, tuple[int, int, int]]:
    """Tokens per sample of each modality, the text length, and the video grid."""
    m = cfg.model
    if cfg.data.world == "bounce":
        from jav.clip_tokens import TokenLayout

        layout = TokenLayout.from_config(cfg)
        return layout.num_tokens, m.text.max_len, layout.grid
    t, h, w, _ = cfg.data.video_latent_shape
    pt, ph, pw = m.video.patch
    grid = (t // pt, h // ph, w // pw)
    audio = cfg.data.audio_latent_shape[0] // m.audio.patch
    return {"video": grid[0] * grid[1] * grid[2], "audio": audio}, cfg.data.text_len, grid


def stats(cfg) -> dict:
    abstract = nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    per_branch = {}
    for path, leaf in nnx.to_flat_state(params):
        names = [str(p) for p in path]
        key = "video" if {"video", "a2v"} & set(names) else "audio" if {"audio", "v2a"} & set(names) else "text" if "text_encoder" in names else "shared"
        per_branch[key] = per_branch.get(key, 0) + leaf.size
    tokens, text_len, grid = token_counts(cfg)
    flops = forward_flops(cfg.model, tokens, text_len, batch=1, grid=grid)
    return dict(params=param_count(params), per_branch=per_branch, tokens=tokens, text_len=text_len, forward_flops=flops)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config file (default: every file in configs/)")
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent / "configs"
    paths = args.config or sorted(str(p) for p in root.glob("*.py") if p.stem not in ("__init__", "common"))
    print(f"{'config':<28} {'params':>14} {'video':>14} {'audio':>14} {'tokens v/a':>14} {'fwd FLOPs/sample':>18}")
    for path in paths:
        s = stats(load_config(path))
        b = s["per_branch"]
        print(
            f"{pathlib.Path(path).stem:<28} {s['params']:>14,} {b.get('video', 0):>14,} {b.get('audio', 0):>14,} "
            f"{s['tokens']['video']:>7}/{s['tokens']['audio']:<6} {s['forward_flops']:>18.3e}"
        )


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
