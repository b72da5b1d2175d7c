"""jav: a JAX-native stack for joint audio-video diffusion models."""
from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest",))
]

setup(
    name="jav",
    version="0.1.0",
    description="JAX-native training and sampling of joint audio-video diffusion transformers",
    packages=find_packages(include=["jav", "jav.*", "configs", "data_pipelines", "data_pipelines.*"]),
    python_requires=">=3.11",
    install_requires=requirements,
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0"],
        # the libtpu release built against the pinned jax (requirements-tpu.txt)
        "tpu": ["libtpu==0.0.42.1"],
        # the curation pipeline's engine (requirements-beam.txt)
        "beam": ["apache-beam==2.77.0", "protobuf>=5.28.3,<7"],
        # Hugging Face T5 / UMT5 text encoders and the LTX-2 reference (requirements-hf.txt); install torch==2.13.0 first for the CPU build
        "hf": ["torch==2.13.0", "transformers==5.18.0", "safetensors==0.8.0", "tokenizers==0.23.2", "sentencepiece==0.2.2", "diffusers==0.42.1"],
    },
)
