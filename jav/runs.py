"""Loading a run directory: the config it was trained with, and its model with
the EMA or raw weights of its latest or a given step, on one device.

    cfg = load_config("runs/demo/run")
    cfg, model, step = load_run("runs/demo/run")           # a diffusion or distill run: the AVDiT
    cfg, vae = load_autoencoder("runs/demo_latent/vae/video")     # an autoencoder run: VAE or vocoder

Sampling, evaluation, the latent codec, frozen text encoders and curation load
runs through here; it imports no command-line tool and no training loop. A run
directory may be local or on Google Cloud Storage (`gs://bucket/run`, through
`etils.epath`).
"""

from __future__ import annotations

import json

import jax
import ml_collections
from etils import epath
from flax import nnx

from jav import cli, schema, sharding
from jav.models import AVDiT
from jav.models.autoencoders import model_module
from jav.train.checkpoint import abstract_like, latest_step, restore_params_from

WEIGHTS = ("ema", "params")


def load_config(workdir) -> ml_collections.ConfigDict:
    """The config a run was trained with (workdir/config.json), every key it lacks (written
    before the key existed) at its default (jav.schema.complete)."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a run directory written by `python -m jav.train`")
    return schema.complete(ml_collections.ConfigDict(json.loads(path.read_text())))


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")


def _restore(workdir, state, weights: str, step: int | None, shardings=None):
    """`weights` of `step` (None: the latest) shaped like `state` -> (params, step): onto the
    first device, or placed by `shardings` (one per variable of `state`, `sharding.param_shardings`)."""
    if shardings is None:
        abstract = abstract_like(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    else:
        abstract = jax.tree.map(lambda placement, variable: abstract_like(variable, placement), shardings, state)
    return restore_params_from(workdir, use_ema=weights == "ema", abstract_params=abstract, step=step, with_step=True)


def load_run(
    workdir, weights: str = "ema", step: int | None = None, mesh: jax.sharding.Mesh | None = None, rules=None, overrides: dict[str, str] | None = None
) -> tuple[ml_collections.ConfigDict, nnx.Module, int]:
    """A diffusion run's config and model with the `weights` ("ema" or "params") of `step`
    (default: the latest) -> (cfg, model, step). A run that kept no EMA gives its raw weights.
    With `mesh`, each parameter is read straight into its shards on the mesh, placed by
    the logical-axis `rules` (default: the run's mesh.rules), as the trainer places them.
    `overrides` ({KEY: VALUE} of `--config.KEY=VALUE` flags, jav.cli) change the run's config
    before the model is built: sampling settings, model.dtype, model.attention.kernel."""
    _check_weights(weights)
    cfg = cli.apply_overrides(load_config(workdir), overrides or {}, what=f"{workdir}/config.json")
    if cfg.phase not in schema.DIFFUSION_PHASES:  # a distilled student and a reward-tuned policy are AVDiTs too
        raise ValueError(f"{workdir} is a run of the {cfg.phase} phase; load it with jav.runs.load_autoencoder")
    if weights == "ema" and not cfg.train.ema_decay:
        weights = "params"  # the run kept no EMA
    graphdef, state = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    shardings = None
    if mesh is not None:
        rules = tuple(tuple(r) for r in (rules if rules is not None else cfg.mesh.rules))
        shardings = sharding.param_shardings(state, mesh, rules)
    params, step = _restore(workdir, state, weights, step, shardings)
    return cfg, nnx.merge(graphdef, params), step


def load_autoencoder(workdir, weights: str = "ema", step: int | None = None) -> tuple[ml_collections.ConfigDict, nnx.Module]:
    """An autoencoder-phase run's config and model (video VAE, audio VAE, vocoder, reward model,
    or a published part `python -m jav.convert` imported; by cfg.model.kind), rebuilt from its
    config with the `weights` of `step` (default: the latest)."""
    _check_weights(weights)
    cfg = load_config(workdir)
    module = model_module(cfg.model.get("kind", None))
    if weights == "ema" and not cfg.train.get("ema_decay"):
        raise ValueError(f"{workdir} was trained without EMA (train.ema_decay=0); load it with weights='params'")
    graphdef, state = nnx.split(module.init_model(cfg.model, jax.random.key(0)))
    params, _ = _restore(workdir, state, weights, step)
    return cfg, nnx.merge(graphdef, params)


def pinned_reference(workdir, name: str, run_dir: str, step: int, weights: str) -> dict:
    """{dir, step, weights} of another run a phase reads (a teacher, a policy's start),
    recorded in WORKDIR/NAME.json at the first start and read back on every later one,
    so that a resumed run reads the same weights even if that run has trained on.
    `step` 0: its latest step at the first start. The file is written by process 0."""
    path = epath.Path(workdir) / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    _check_weights(weights)
    step = step or latest_step(run_dir)
    if step is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint; train it first")
    ref = dict(dir=str(run_dir), step=int(step), weights=weights)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ref, indent=2))
    return ref
