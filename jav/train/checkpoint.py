"""A run's checkpoints: params, EMA params, optimizer state, step, data iterator
state, config and a phase's extra networks, written by Orbax's CheckpointManager.

Saves are asynchronous and atomic (a step directory appears only once complete),
old steps are pruned to `max_to_keep`, and restores take abstract arrays carrying
the *target* sharding, so a checkpoint written on one mesh loads onto another.
One run directory holds `checkpoints/<step>/{params,ema,opt_state,extra,
data_state,config}`; another phase starts from it with `restore_params_from`.
A run directory may be local or on Google Cloud Storage (`gs://bucket/run`):
every path goes through `etils.epath`, which Orbax takes as it is.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any


def abstract_like(tree: PyTree, shardings: PyTree | jax.sharding.Sharding | None = None) -> PyTree:
    """`jax.ShapeDtypeStruct`s shaped like `tree`'s leaves, for `Checkpointer.restore`.

    `shardings` is one sharding for every leaf, a pytree of shardings matching
    `tree`, or None to keep each leaf's own `.sharding` (arrays already placed on
    the target mesh, or the output of `jax.eval_shape` under `jax.jit` shardings).
    """
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def is_remote(path) -> bool:
    """Whether `path` names an object store (gs://bucket/...) rather than a local file system."""
    return "://" in os.fspath(path)


def run_path(workdir) -> epath.Path:
    """A run directory as an epath.Path: gs://bucket/run as it is, a local one made
    absolute (Orbax's array store needs an absolute path; a relative --workdir is
    the common case, and os.path.abspath would turn gs://b/r into CWD/gs:/b/r)."""
    path = epath.Path(workdir)
    return path if is_remote(path) else epath.Path(os.path.abspath(path))


def _encode_data_state(state: dict | bytes | None) -> dict:
    # JsonSave takes a mapping only; Grain's DataLoader state is bytes and a
    # DatasetIterator's is a dict, so tag which one it was to give back exactly that.
    if state is None:
        return {"format": "none"}
    if isinstance(state, bytes):
        return {"format": "bytes", "value": base64.b64encode(state).decode("ascii")}
    return {"format": "dict", "value": state}


def _decode_data_state(stored: dict) -> dict | bytes | None:
    if stored["format"] == "bytes":
        return base64.b64decode(stored["value"])
    return stored.get("value")


def _manager(directory: epath.Path, *, max_to_keep: int | None, save_interval_steps: int, async_save: bool) -> ocp.CheckpointManager:
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save,
        # Policies instead of the deprecated `max_to_keep` option; a preemption
        # and the first save of a run are written whatever the interval.
        save_decision_policy=policies.AnySavePolicy(
            [
                policies.FixedIntervalPolicy(save_interval_steps),
                policies.PreemptionCheckpointingPolicy(),
                policies.InitialSavePolicy(),
            ]
        ),
        preservation_policy=policies.LatestN(n=max_to_keep),
    )
    return ocp.CheckpointManager(directory, options=options)


def _reader(directory: epath.Path) -> ocp.CheckpointManager:
    # Read-only, so reading another run can never prune or create its steps.
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    return ocp.CheckpointManager(directory, options=options)


def _require_step(mngr: ocp.CheckpointManager, step: int | None, directory: epath.Path) -> int:
    steps = mngr.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory} (is this a run directory that has saved a step?)")
    if step is None:
        return max(steps)
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; saved steps: {sorted(steps)}")
    return step


def _restore(mngr: ocp.CheckpointManager, step: int, directory: epath.Path, **items) -> Any:
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types; all mean "unreadable"
        raise ValueError(f"could not restore checkpoint {directory / str(step)} (items {sorted(items)}): {type(e).__name__}: {e}") from e


class Checkpointer:
    """Saves and restores one run's checkpoints under `workdir/checkpoints/<step>`."""

    def __init__(self, workdir, *, max_to_keep: int | None = 3, save_interval_steps: int = 1, async_save: bool = True):
        self.directory = run_path(workdir) / "checkpoints"
        self._mngr = _manager(self.directory, max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, async_save=async_save)

    def save(
        self,
        step: int,
        *,
        params: PyTree,
        ema: PyTree,
        opt_state: PyTree,
        data_state: dict | bytes | None,
        config: ml_collections.ConfigDict,
        extra: PyTree | None = None,
        force: bool = False,
    ) -> bool:
        """Starts writing step `step` (returns at once when async) -> whether it saves.

        Skipped unless `step` is on the save interval (or `force`). The arrays are
        copied off the device before this returns, so the caller may donate them.
        """
        items = dict(
            data_state=ocp.args.JsonSave(_encode_data_state(data_state)),
            config=ocp.args.JsonSave({"config_json": config.to_json_best_effort()}),
        )
        for name, tree in dict(params=params, ema=ema, opt_state=opt_state, extra=extra).items():
            # Orbax refuses a tree without arrays (say `{}` for a stateless
            # optimizer); restore rebuilds such a tree from its abstract twin.
            if jax.tree.leaves(tree):
                items[name] = ocp.args.StandardSave(tree)
        return self._mngr.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def wait(self):
        """Blocks until every started save is committed to disk."""
        self._mngr.wait_until_finished()

    def close(self):
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def restore(
        self, step: int | None = None, *, abstract_params: PyTree, abstract_ema: PyTree, abstract_opt_state: PyTree, abstract_extra: PyTree | None = None
    ) -> dict:
        """Reads step `step` (default: the latest) onto the shardings of the abstract trees.

        Returns dict(step, params, ema, opt_state, data_state, config_json, extra);
        `extra` is None unless `abstract_extra` is given. `config_json` is the saved
        config as a JSON string (the run's own config stays the source of truth).
        """
        self.wait()  # a save still in flight is not yet listed as a step
        step = _require_step(self._mngr, step, self.directory)
        trees = dict(params=abstract_params, ema=abstract_ema, opt_state=abstract_opt_state, extra=abstract_extra)
        items = dict(data_state=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
        items.update({name: ocp.args.StandardRestore(tree) for name, tree in trees.items() if jax.tree.leaves(tree)})
        out = _restore(self._mngr, step, self.directory, **items)
        restored = {name: out[name] if name in items else tree for name, tree in trees.items()}
        return dict(
            step=step,
            **restored,
            data_state=_decode_data_state(out["data_state"]),
            config_json=out["config"]["config_json"],
        )


def latest_step(run_dir) -> int | None:
    """The latest saved step of another run (None: it has saved none), read-only."""
    directory = run_path(run_dir) / "checkpoints"
    if not directory.exists():
        return None
    with _reader(directory) as mngr:
        return mngr.latest_step()


def restore_params_from(run_dir, *, use_ema: bool, abstract_params: PyTree, step: int | None = None, with_step: bool = False):
    """Params (or EMA params) of step `step` (default: the latest) of another run, onto
    `abstract_params`' shardings (-> (params, step) when `with_step`).

    How a phase starts from another (`--config.init_from=DIR[:ema]`) and how
    jav.runs loads a run: only that one tree is read, so the optimizer state never
    touches memory.
    """
    directory = run_path(run_dir) / "checkpoints"
    if not directory.exists():
        raise FileNotFoundError(f"no checkpoint in {directory} ({run_dir} is not a run directory)")
    name = "ema" if use_ema else "params"
    with _reader(directory) as mngr:
        step = _require_step(mngr, step, directory)
        params = _restore(mngr, step, directory, **{name: ocp.args.StandardRestore(abstract_params)})[name]
    return (params, step) if with_step else params
