"""jav: a JAX-native stack for joint audio-video diffusion models.

`install_requires` holds compatible ranges (`~=`: the pinned release and its
patch or minor successors), so jav installs beside other stacks; the exact pins
that `make` installs and the tests ran with stay in the requirements*.txt files.
Accelerators: `pip install -e .[cuda12]` (NVIDIA GPUs) or `.[tpu]` (TPU VMs),
each at the release built against the pinned jax.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def pins(name: str) -> dict[str, str]:
    """requirements file -> {package (with extras): exact version}."""
    out = {}
    for line in (HERE / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, version = line.split("==")
            out[package.strip()] = version.strip()
    return out


def compatible(package: str, version: str) -> str:
    """`pkg~=X.Y.Z` for 0.x releases (patches only: their minors break APIs), `pkg~=X.Y` otherwise."""
    parts = re.match(r"(\d+)\.(\d+)", version)
    if parts is None:
        return f"{package}=={version}"
    return f"{package}~={version}" if parts.group(1) == "0" else f"{package}~={parts.group(1)}.{parts.group(2)}"


TEST_TOOLS = ("pytest", "pytest-xdist", "ruff")  # the suite and its lint check (tests/test_lint.py)
runtime = {p: v for p, v in pins("requirements.txt").items() if p not in TEST_TOOLS}
jax_version = runtime["jax"]

setup(
    name="jav",
    version="0.1.0",
    description="JAX-native training and sampling of joint audio-video diffusion transformers",
    packages=find_packages(include=["jav", "jav.*", "configs", "data_pipelines", "data_pipelines.*"]),
    python_requires=">=3.11",
    # jax and jaxlib move together and with their plugins: kept exact
    install_requires=[f"{p}=={v}" if p in ("jax", "jaxlib") else compatible(p, v) for p, v in runtime.items()],
    extras_require={
        "test": [compatible(p, v) for p, v in pins("requirements.txt").items() if p in TEST_TOOLS],
        # NVIDIA GPUs: the CUDA 12 plugin of the pinned jax with its CUDA libraries (requirements-cuda12.txt)
        "cuda12": [f"jax[cuda12]=={jax_version}"],
        # TPU VMs: the libtpu release built against the pinned jax (requirements-tpu.txt)
        "tpu": [f"{p}=={v}" for p, v in pins("requirements-tpu.txt").items()],
        # the curation pipeline's engine (requirements-beam.txt)
        "beam": ["apache-beam==2.77.0", "protobuf>=5.28.3,<7"],
        # Hugging Face T5 / UMT5 text encoders and the LTX-2 reference (requirements-hf.txt); install torch first for the CPU build
        "hf": [compatible(p, v) for p, v in pins("requirements-hf.txt").items()],
    },
)
