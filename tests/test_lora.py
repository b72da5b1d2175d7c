"""LoRA adapters (jav.models.lora) and frozen parameters (train.trainable): a fresh adapter changes
nothing, a merged one changes nothing further, a fine-tune from another run trains only what it
names, resumes bit-exactly, and merges into a plain run."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from jav.models import AVDiT, lora
from jav.train.step import LORA_PATTERN, optimizer, param_path, trainable_mask
from test_distill import perturbed, tiny_inputs


def lora_config(rank=4, targets="attn,mlp"):
    cfg = test_config.get_config()
    cfg.model.lora.rank, cfg.model.lora.alpha, cfg.model.lora.targets = rank, 2.0 * rank, targets
    return cfg


def velocities(model, cfg):
    layout, x, t, text, mask = tiny_inputs(cfg)
    out = jax.jit(lambda: layout.denoiser(model)(x, t, text, mask, jnp.ones((2,), bool)))()
    return {m: np.asarray(v) for m, v in out.items()}


def flat(state):
    return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_adapters_start_as_the_base_model_and_merge_into_the_same_function():
    cfg = lora_config()
    model = AVDiT(cfg.model, rngs=nnx.Rngs(0))
    adapters = flat(nnx.state(model, nnx.LoRAParam))
    # attention q, k, v, o and the two MLP layers of every block get an A and a B; B starts at zero
    assert adapters and all(p.endswith(("lora/a", "lora/b")) for p in adapters)
    assert any("/q/lora/a" in p for p in adapters) and any("/o/lora/b" in p for p in adapters)
    assert any("/mlp/up/lora/a" in p for p in adapters)
    assert all(not np.any(x) for p, x in adapters.items() if p.endswith("/b"))
    perturbed(model)  # every parameter moved: gates open, B no longer zero
    with_adapters = velocities(model, cfg)
    without = nnx.clone(model)
    for _, module in nnx.iter_modules(without):
        if isinstance(getattr(module, "lora", None), lora.Adapter):
            module.lora.b[...] = jnp.zeros_like(module.lora.b[...])
    assert not np.allclose(velocities(without, cfg)["video"], with_adapters["video"], atol=1e-4)  # the adapters act
    assert lora.merge(model) == len(adapters) // 2
    assert not jax.tree.leaves(nnx.state(model, nnx.LoRAParam))
    # the merged model is a plain model: the same parameter tree as one built without adapters
    plain = nnx.eval_shape(lambda: AVDiT(test_config.get_config().model, rngs=nnx.Rngs(0)))
    assert jax.tree.structure(nnx.state(model)) == jax.tree.structure(nnx.state(plain))
    merged = velocities(model, cfg)
    for m in with_adapters:
        np.testing.assert_allclose(merged[m], with_adapters[m], rtol=1e-5, atol=1e-5)


def test_a_fresh_adapter_computes_exactly_the_base_weights():
    cfg = lora_config(targets="mlp")
    model = perturbed(AVDiT(cfg.model, rngs=nnx.Rngs(0)))
    for path, module in nnx.iter_modules(model):
        if isinstance(getattr(module, "lora", None), lora.Adapter):
            module.lora.b[...] = jnp.zeros_like(module.lora.b[...])
    before = velocities(model, cfg)
    kernels = flat(nnx.state(model, nnx.Param))
    lora.merge(model)
    after = flat(nnx.state(model, nnx.Param))
    assert {p for p in kernels if "/lora/" not in p} == set(after)
    for p, x in after.items():
        np.testing.assert_array_equal(x, kernels[p])  # B = 0: merging adds exactly nothing
    for m, v in velocities(model, cfg).items():  # the same function (the compiled graph differs: last-bit rounding)
        np.testing.assert_allclose(v, before[m], rtol=1e-5, atol=1e-5)


def test_bad_lora_and_trainable_settings_are_named():
    from jav.train.step import trainable_pattern

    with pytest.raises(ValueError, match="model.lora.targets"):
        AVDiT(lora_config(targets="attn,conv").model, rngs=nnx.Rngs(0))
    cfg = test_config.get_config()
    cfg.train.trainable = "audio["
    with pytest.raises(ValueError, match="train.trainable='audio\\[' is not a regular expression"):
        trainable_pattern(cfg)
    assert trainable_pattern(test_config.get_config()) is None  # auto without adapters: everything trains
    assert trainable_pattern(lora_config()) == LORA_PATTERN


@pytest.mark.xdist_group("tiny_diffusion_run")  # with the distillation and reward tests, which train the fixture's run
def test_lora_finetune_from_a_run_trains_only_adapters_resumes_and_merges(tiny_diffusion_run, shards, tmp_path):
    from jav.convert.__main__ import main as convert
    from jav.runs import load_run
    from jav.train.diffusion import train

    def config(steps):
        cfg = lora_config()
        cfg.data.dir, cfg.train.steps, cfg.train.ema_decay, cfg.train.log_every = shards, steps, 0.0, 1
        cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 0
        cfg.init_from = f"{tiny_diffusion_run}:ema"
        return cfg

    messages = []
    train(config(2), str(tmp_path / "straight"), log=messages.append)
    assert any("LoRA adapters start fresh" in m for m in messages)
    assert any("trains " in m and " of " in m and "train.trainable='auto'" in m for m in messages), messages
    _, source, _ = load_run(tiny_diffusion_run, weights="ema")
    _, tuned, _ = load_run(tmp_path / "straight", weights="params")
    base, got = flat(nnx.state(source)), flat(nnx.state(tuned))
    for p, x in base.items():  # every base weight is the source run's EMA, bit for bit
        np.testing.assert_array_equal(got[p], x, err_msg=p)
    moved = [p for p in got if p.endswith("lora/b") and np.any(got[p])]
    assert moved, "no adapter trained"
    # the optimiser keeps moments (Adam's two) for the adapters only
    opt_size = sum(x.size for x in jax.tree.leaves(jax.eval_shape(optimizer(config(2)).init, nnx.state(tuned))))
    adapter_size = sum(x.size for p, x in got.items() if "/lora/" in p)
    assert 2 * adapter_size <= opt_size <= 2 * adapter_size + 16, (opt_size, adapter_size)

    # preempted (SIGTERM) after step 1 and rerun: the same adapters, bit for bit
    def preempt_at_1(msg):
        if msg.startswith("step      1/"):
            os.kill(os.getpid(), signal.SIGTERM)

    train(config(2), str(tmp_path / "resumed"), log=preempt_at_1)
    rerun = []
    train(config(2), str(tmp_path / "resumed"), log=rerun.append)
    assert any(m.startswith("resumed from") and "step 1" in m for m in rerun), rerun
    _, resumed, _ = load_run(tmp_path / "resumed", weights="params")
    for p, x in flat(nnx.state(resumed)).items():
        np.testing.assert_array_equal(x, got[p], err_msg=p)

    # merged into a plain run that computes the same velocities
    convert(["merge-lora", str(tmp_path / "straight"), "--workdir", str(tmp_path / "merged"), "--weights", "params"])
    merged_cfg, merged, _ = load_run(tmp_path / "merged")
    assert merged_cfg.model.lora.rank == 0 and merged_cfg.merged_from.run == str(tmp_path / "straight")
    want, have = velocities(tuned, config(2)), velocities(merged, merged_cfg)
    for m in want:
        np.testing.assert_allclose(have[m], want[m], rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit):
        convert(["merge-lora", str(tmp_path / "merged"), "--workdir", str(tmp_path / "again")])  # no adapters left


def test_freezing_by_pattern_trains_only_the_named_parameters(shards):
    """train.trainable="(^|/)audio/": one step of the diffusion step changes audio parameters only, and
    the optimiser keeps state for them only."""
    import ml_collections

    from jav.clip_tokens import TokenLayout
    from jav.data.loader import make_loader, text_input_for
    from jav.models import init_model
    from jav.train.step import train_step, trainable_pattern

    cfg = test_config.get_config()
    cfg.train.trainable = r"(^|/)audio/"
    cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 0
    graphdef, params = nnx.split(init_model(cfg.model, jax.random.key(0)))
    before = {p: np.array(x) for p, x in flat(params).items()}  # copies: the step donates its inputs
    mask = flat(trainable_mask(params, trainable_pattern(cfg)))
    tx = optimizer(cfg)
    opt_state = tx.init(params)
    assert sum(x.size for x in jax.tree.leaves(opt_state)) <= 2 * sum(before[p].size for p, m in mask.items() if m) + 16
    m = cfg.model.text
    batch = next(make_loader(shards, batch_size=2, seed=0, tokenizer_vocab=m.vocab_size, tokenizer_len=m.max_len, text_input=text_input_for(m), text_dim=m.dim))
    params, *_ = train_step(
        graphdef,
        params,
        opt_state,
        None,
        batch,
        jax.random.key(1),
        tx=tx,
        layout=TokenLayout.from_config(cfg),
        flow_cfg=ml_collections.FrozenConfigDict(cfg.flow),
        trainable=trainable_pattern(cfg),
    )
    after = flat(params)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed and changed <= {p for p, t in mask.items() if t}, sorted(changed - {p for p, t in mask.items() if t})[:5]
    assert all("audio/" in p for p in changed)
