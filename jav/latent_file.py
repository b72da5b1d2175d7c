"""The latent codec's file, `latent.json`: the two VAE runs, the latent statistics and where they
came from, kept beside every shard set encoded with them. Plain JSON, no JAX, so that curation's
packing and fingerprinting read it without the models (jav.latents loads the codec it names).
Local or gs:// paths (etils.epath)."""

from __future__ import annotations

import json

from etils import epath

LATENT_JSON = "latent.json"
FIELDS = ("video_vae", "audio_vae", "stats")


def latent_json_path(path) -> epath.Path:
    """A latent.json file: `path` itself when it names a .json file, else the one inside that directory."""
    path = epath.Path(path)
    return path if path.suffix == ".json" and not path.is_dir() else path / LATENT_JSON


def read_latent_json(path) -> dict:
    """The codec file at `path` (a file, or a shard directory holding one), checked."""
    path = latent_json_path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: a latent codec is written by `python -m jav.data.synthetic --latent "
            "--video-vae DIR --audio-vae DIR` (the bounce world) or `python -m jav.data.latent_stats` "
            "(over pixel shards), which record the VAEs and latent statistics there"
        )
    info = json.loads(path.read_text())
    missing = [k for k in FIELDS if k not in info]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it is not a latent codec file; write it again with python -m jav.data.latent_stats")
    return info


def write_latent_json(path, info: dict) -> epath.Path:
    """Writes `info` to `path` (a .json file, or a directory that gets latent.json) -> the file."""
    path = latent_json_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    return path
