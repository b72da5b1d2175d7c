"""Peak FLOP/s per device, for the MFU that the trainer and benchmarks report.

Accelerators use their vendor's dense peak for the compute dtype; a CPU (or any
device not in the table) has no published figure that XLA can reach, so its
peak is measured: the best rate of a large jitted matmul, the honest ceiling of
what the step's matmuls could do there.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense peak FLOP/s per chip by device kind: (bfloat16, float32). float32 on
# TPUs runs through bf16 passes; the GPUs' float32 figure is TF32 without
# sparsity.
PEAKS = {
    "NVIDIA H100 80GB HBM3": (989e12, 494e12),
    "NVIDIA H100": (989e12, 494e12),
    "NVIDIA H200": (989e12, 494e12),
    "NVIDIA A100-SXM4-80GB": (312e12, 156e12),
    "NVIDIA A100-SXM4-40GB": (312e12, 156e12),
    "TPU v4": (275e12, 275e12 / 3),
    "TPU v5 lite": (197e12, 197e12 / 3),
    "TPU v5e": (197e12, 197e12 / 3),
    "TPU v5": (459e12, 459e12 / 3),
    "TPU v5p": (459e12, 459e12 / 3),
    "TPU v6 lite": (918e12, 918e12 / 3),
    "TPU v6e": (918e12, 918e12 / 3),
}


def matmul_peak(dtype=jnp.float32, n: int = 2048, repeats: int = 10, device=None) -> float:
    """Best FLOP/s of an n x n x n matmul on `device` (default: the first)."""
    device = device or jax.devices()[0]
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype), device)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops(dtype: str = "float32", device=None) -> tuple[float, str]:
    """(peak FLOP/s of one device for `dtype`, where the figure comes from)."""
    return _peak_flops(dtype, device or jax.devices()[0])


@functools.lru_cache(maxsize=None)
def _peak_flops(dtype: str, device) -> tuple[float, str]:
    kind = device.device_kind
    if kind in PEAKS:
        bf16, f32 = PEAKS[kind]
        return (bf16 if dtype == "bfloat16" else f32), f"{kind} {dtype} datasheet"
    peak = matmul_peak(jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, device=device)
    return peak, f"measured {dtype} matmul on {kind}"
