"""The one training loop (jav/train/loop.py) with a phase defined here: a frozen
teacher, a student distilled from it (the primary network, with EMA) and a critic
with its own optimiser, tiny MLPs on random inputs. A run stopped by SIGTERM and
rerun ends bit-exactly where an uninterrupted run ends, the teacher is never
changed or saved, the critic is kept in the checkpoint's extra item, and steps
that are all non-finite stop the run with a checkpoint."""

import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jav.sharding import DEFAULT_RULES
from jav.train import loop
from jav.train.checkpoint import Checkpointer, abstract_like


class MLP(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, 16, rngs=rngs)
        self.out = nnx.Linear(16, dout, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.tanh(self.hidden(x)))


class RandomInputs:
    """Batch i: inputs drawn from seed (seed, i); NaN everywhere when `nan`."""

    def __init__(self, batch_size: int, seed: int, nan: bool):
        self.batch_size, self.seed, self.nan, self.i = batch_size, seed, nan, 0

    def __next__(self):
        x = np.random.default_rng([self.seed, self.i]).normal(size=(self.batch_size, 4)).astype(np.float32)
        self.i += 1
        return {"x": np.full_like(x, np.nan) if self.nan else x}

    def get_state(self):
        return {"next": self.i}

    def set_state(self, state):
        self.i = state["next"]


@functools.partial(jax.jit, static_argnames=("graphdefs", "txs", "ema_decay"), donate_argnums=(0,))
def distill_step(state, batch, key, *, graphdefs, txs, ema_decay):
    graphdefs, txs = dict(graphdefs), dict(txs)
    teacher = nnx.merge(graphdefs["teacher"], state["teacher"].params)
    noisy = batch["x"] + 0.1 * jax.random.normal(key, batch["x"].shape)
    target = jax.lax.stop_gradient(teacher(noisy))

    def student_loss(p):
        err = jnp.sum((nnx.merge(graphdefs["student"], p)(noisy) - target) ** 2, axis=-1)
        return jnp.mean(err), err

    (loss, err), grads = jax.value_and_grad(student_loss, has_aux=True)(state["student"].params)

    def critic_loss(p):
        return jnp.mean((nnx.merge(graphdefs["critic"], p)(noisy)[:, 0] - jax.lax.stop_gradient(err)) ** 2)

    c_loss, c_grads = jax.value_and_grad(critic_loss)(state["critic"].params)
    ok = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads)) & jnp.isfinite(c_loss)

    def update(net, grads, tx):
        updates, opt_state = tx.update(grads, net.opt_state, net.params)
        params = optax.apply_updates(net.params, updates)
        ema = None if net.ema is None else jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, net.ema, params)
        new = loop.Trainable(params, opt_state, ema)
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, net)

    new = dict(state, student=update(state["student"], grads, txs["student"]), critic=update(state["critic"], c_grads, txs["critic"]))
    return new, dict(loss=loss, critic=c_loss, skipped=(~ok).astype(jnp.int32))


class DistillPhase(loop.Phase):
    """The shape of a distillation phase: frozen teacher, trainable student and critic."""

    primary = "student"
    finals = []  # the state after the last step of each run, for the test to read

    def validate(self, mesh):
        if self.cfg.train.batch_size % mesh.shape["fsdp"]:
            raise ValueError("train.batch_size must divide over mesh fsdp")

    def init_state(self, run):
        replicated = jax.sharding.NamedSharding(run.mesh, jax.P())
        nets = {
            "teacher": MLP(4, 3, rngs=nnx.Rngs(100)),
            "student": MLP(4, 3, rngs=nnx.Rngs(self.cfg.train.seed)),
            "critic": MLP(4, 1, rngs=nnx.Rngs(self.cfg.train.seed + 1)),
        }
        split = {name: nnx.split(net) for name, net in nets.items()}
        self.graphdefs = tuple((name, g) for name, (g, _) in split.items())  # static jit arguments: hashable
        self.txs = (("student", optax.adam(1e-2)), ("critic", optax.sgd(1e-2)))
        params = {name: jax.device_put(p, replicated) for name, (_, p) in split.items()}
        return {
            "teacher": loop.Frozen(params["teacher"]),
            "student": loop.trainable(params["student"], dict(self.txs)["student"], run, ema=True),
            "critic": loop.trainable(params["critic"], dict(self.txs)["critic"], run, ema=False),
        }

    def stream(self, run):
        return RandomInputs(self.cfg.train.batch_size, self.cfg.train.seed, self.cfg.get("nan", False))

    def step(self, state, batch, key, step):
        state, metrics = distill_step(state, batch, key, graphdefs=self.graphdefs, txs=self.txs, ema_decay=self.cfg.train.ema_decay)
        DistillPhase.finals.append(state)
        return state, metrics


def config(**overrides):
    cfg = ml_collections.ConfigDict(
        dict(
            phase="distill",
            mesh=dict(shape=dict(data=1, fsdp=-1, context=1, tensor=1), rules=[list(r) for r in DEFAULT_RULES]),
            train=dict(steps=6, batch_size=8, seed=0, log_every=1, checkpoint_every=3, keep_checkpoints=5, max_nonfinite=2, ema_decay=0.9),
        )
    )
    cfg.update(overrides)
    return cfg


def losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_a_phase_of_several_networks_resumes_bit_exactly_and_keeps_its_teacher_frozen(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    DistillPhase.finals.clear()
    loop.run(config(), whole, DistillPhase(config()), log=lambda _: None)
    straight = DistillPhase.finals[-1]

    def preempt_at_2(msg):
        if msg.startswith("step      2/"):
            os.kill(os.getpid(), signal.SIGTERM)

    first = loop.run(config(), split, DistillPhase(config()), log=preempt_at_2)
    assert first["step"] == 2
    messages = []
    loop.run(config(), split, DistillPhase(config()), log=messages.append)
    assert any(m.startswith("resumed from") and m.endswith("at step 2") for m in messages), messages
    resumed = DistillPhase.finals[-1]

    assert losses(split) == losses(whole) and sorted(losses(whole)) == [1, 2, 3, 4, 5, 6]
    assert losses(whole)[6] < losses(whole)[1]
    for a, b in zip(leaves(straight), leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    teacher = nnx.state(MLP(4, 3, rngs=nnx.Rngs(100)))
    for a, b in zip(leaves(teacher), leaves(resumed["teacher"].params)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(nnx.state(MLP(4, 3, rngs=nnx.Rngs(0)))), leaves(resumed["student"].params)))

    # the checkpoint: the student as params / ema / opt_state, the critic in extra, no teacher
    with Checkpointer(whole) as ckpt:
        got = ckpt.restore(
            abstract_params=abstract_like(straight["student"].params),
            abstract_ema=abstract_like(straight["student"].ema),
            abstract_opt_state=abstract_like(straight["student"].opt_state),
            abstract_extra=abstract_like({"critic": straight["critic"].params, "critic_opt": straight["critic"].opt_state}),
        )
    assert got["step"] == 6 and got["data_state"] == {"next": 6}
    for a, b in zip(leaves(straight["critic"]), leaves((got["extra"]["critic"], got["extra"]["critic_opt"]))):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (whole / "checkpoints" / "6").iterdir() if p.is_dir()) == ["config", "data_state", "ema", "extra", "opt_state", "params"]


def test_non_finite_steps_stop_the_run_with_a_checkpoint(tmp_path):
    cfg = config(nan=True)
    with pytest.raises(FloatingPointError, match=r"2 steps in a row had a non-finite loss or gradient \(by step 3\)"):
        loop.run(cfg, tmp_path, DistillPhase(cfg), log=lambda _: None)
    assert (tmp_path / "checkpoints" / "3").is_dir()
    initial = nnx.state(MLP(4, 3, rngs=nnx.Rngs(0)))
    for a, b in zip(leaves(initial), leaves(DistillPhase.finals[-1]["student"].params)):
        np.testing.assert_array_equal(a, b)


def test_network_names_that_collide_in_the_checkpoint_are_refused(tmp_path):
    class Clash(DistillPhase):
        def init_state(self, run):
            state = super().init_state(run)
            return dict(state, critic_opt=state["critic"])

    with pytest.raises(ValueError, match=r"collide in the checkpoint's extra item"):
        loop.run(config(), tmp_path, Clash(config()), log=lambda _: None)


def test_a_phase_missing_a_method_cannot_be_made():
    class Half(loop.Phase):
        def validate(self, mesh):
            pass

    with pytest.raises(TypeError, match="init_state"):
        Half(None)


def test_the_profiled_steps_leave_a_trace(tmp_path):
    cfg = config(train=dict(config().train.to_dict(), steps=4, profile_steps=[2, 4]))
    messages = []
    loop.run(cfg, tmp_path, DistillPhase(cfg), log=messages.append)
    assert "profiled steps 2..3 into " + str(tmp_path / "profile") in " ".join(messages)
    assert list((tmp_path / "profile").rglob("*.xplane.pb")), list((tmp_path / "profile").rglob("*"))
    with pytest.raises(ValueError, match=r"train.profile_steps=\[3, 1\] must be \[first, end\)"):
        loop.run(config(train=dict(config().train.to_dict(), profile_steps=[3, 1])), tmp_path / "bad", DistillPhase(cfg), log=lambda _: None)
