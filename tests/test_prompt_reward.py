"""The prompt-consistency reward model (jav/models/prompt_reward.py): the stream's labels
are what each clip's caption says, captions are read back from the tokenizer's ids,
the consistency score is the log-probability of what a caption names, alterations
change one attribute each, the tiny config trains, scores held-out clips and loads,
and the reward phase passes it the captions and refuses a tokenizer it was not
trained for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import prompt_reward as prompt_configs
from jav.data import bounce, bounce_stream
from jav.models import prompt_reward
from jav.runs import load_autoencoder, load_config
from jav.tokenizer import HashTokenizer
from jav.train import loop
from jav.train.autoencoder import AutoencoderPhase

SEEDS = range(40)


def world_labels(params):
    return bounce_stream.stack(SEEDS, params, ("colours", "background", "sounds"))


def test_the_streams_labels_are_what_each_caption_says_and_the_ids_read_back():
    params = bounce.BounceParams(duration=2.0)
    cfg = prompt_reward.model_config()
    labels = world_labels(params)
    captions = [bounce.generate_clip(s, params).caption for s in SEEDS]
    palette, backgrounds = list(params.palette), list(params.backgrounds)
    for i, caption in enumerate(captions):
        colours, background = bounce.caption_colours(caption)
        assert {palette[j] for j in np.flatnonzero(labels["colours"][i])} == colours
        assert backgrounds[labels["background"][i]] == background
        assert set(np.flatnonzero(labels["sounds"][i])) <= set(np.flatnonzero(labels["colours"][i]))  # only a disc sounds
    assert labels["colours"].sum(-1).max() == 2 and labels["colours"].sum(-1).min() == 1
    assert (labels["sounds"] != labels["colours"]).any() or labels["sounds"].sum() > 0
    ids, mask = HashTokenizer(cfg.vocab_size, cfg.max_len).encode(captions)
    colours, background = jax.jit(lambda i, m: prompt_reward.caption_attributes(cfg, i, m))(ids, mask)
    np.testing.assert_array_equal(np.asarray(colours), labels["colours"])
    np.testing.assert_array_equal(np.argmax(np.asarray(background), -1), labels["background"])
    np.testing.assert_array_equal(np.asarray(background).sum(-1), 1.0)


def test_consistency_is_the_log_probability_of_what_the_caption_names():
    rng = np.random.default_rng(0)
    logits = {k: jnp.asarray(rng.normal(size=(3, n)), jnp.float32) for k, n in (("colours", 4), ("background", 3), ("sounds", 4))}
    colours = jnp.asarray([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], jnp.float32)
    background = jax.nn.one_hot(jnp.asarray([2, 0, 1]), 3)
    got = np.asarray(prompt_reward.consistency(logits, colours, background))
    sig = lambda z: 1 / (1 + np.exp(-np.asarray(z, np.float64)))  # noqa: E731
    c, g = np.asarray(colours), np.asarray(background)
    p_c, p_s = sig(logits["colours"]), sig(logits["sounds"])
    ls = np.asarray(logits["background"], np.float64)
    want = (
        (c * np.log(p_c) + (1 - c) * np.log(1 - p_c)).sum(-1)
        + (g * (ls - np.log(np.exp(ls).sum(-1, keepdims=True)))).sum(-1)
        + ((1 - c) * np.log(1 - p_s)).sum(-1)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_each_alteration_changes_one_attribute():
    colours = jnp.asarray([[1, 0, 0, 1], [0, 1, 0, 0]], jnp.float32)
    background = jax.nn.one_hot(jnp.asarray([2, 0]), 3)
    out = prompt_reward.altered(colours, background)
    np.testing.assert_array_equal(out["colour"][0], [[0, 1, 0, 1], [1, 0, 0, 0]])  # same count, one colour swapped
    np.testing.assert_array_equal(out["background"][1], jax.nn.one_hot(jnp.asarray([0, 1]), 3))
    np.testing.assert_array_equal(out["count"][0], [[0, 0, 0, 1], [1, 1, 0, 0]])  # two discs -> one, one -> two
    for name in ("colour", "count"):
        np.testing.assert_array_equal(out[name][1], background)
    np.testing.assert_array_equal(out["background"][0], colours)


def test_tiny_config_trains_scores_and_loads(tmp_path):
    cfg = prompt_configs.get_config("tiny")
    lines = []
    loop.run(cfg, tmp_path / "run", AutoencoderPhase(cfg), log=lines.append)
    evals = [line for line in lines if "eval_consistency_accuracy" in line or "consistency_accuracy" in line]
    assert evals, lines
    loaded_cfg, model = load_autoencoder(tmp_path / "run")
    assert loaded_cfg.model.kind == "prompt_reward"
    batch = bounce_stream.heldout_batch(cfg.data, 4)
    scores = jax.jit(lambda v, a, c, g, s: prompt_reward.evaluate(model, dict(video=v, logmel=a, colours=c, background=g, sounds=s), loaded_cfg))(
        *(batch[k] for k in ("video", "logmel", "colours", "background", "sounds"))
    )
    for key in ("accuracy", "colour_accuracy", "background_accuracy", "sound_accuracy", "consistency_accuracy", "consistency_count"):
        assert 0.0 <= float(scores[key]) <= 1.0, (key, scores)
    captions = [bounce.generate_clip(bounce_stream.HELDOUT_SEED + i, bounce_stream.bounce_params(cfg.data)).caption for i in range(4)]
    ids, mask = HashTokenizer(cfg.model.vocab_size, cfg.model.max_len).encode(captions)
    r = prompt_reward.reward(model, jnp.asarray(batch["video"]), jnp.asarray(batch["logmel"]), jnp.asarray(ids), jnp.asarray(mask))
    assert r.shape == (4,) and bool(jnp.all(r <= 0)) and bool(jnp.all(jnp.isfinite(r)))
    # another caption, another reward: the model reads the caption
    other, other_mask = HashTokenizer(cfg.model.vocab_size, cfg.model.max_len).encode(["a red ball and a blue ball bouncing on a navy background"] * 4)
    r2 = prompt_reward.reward(model, jnp.asarray(batch["video"]), jnp.asarray(batch["logmel"]), jnp.asarray(other), jnp.asarray(other_mask))
    assert not np.allclose(np.asarray(r), np.asarray(r2))


@pytest.mark.xdist_group("tiny_diffusion_run")  # with the other tests of conftest's tiny run, which trains once per worker
def test_missing_labels_and_a_foreign_tokenizer_are_named(tiny_diffusion_run, tmp_path):
    cfg = prompt_configs.get_config("tiny")
    model = prompt_reward.init_model(cfg.model, jax.random.key(0))
    with pytest.raises(ValueError, match="lacks \\['colours', 'background', 'sounds'\\]"):
        prompt_reward.training_loss(model, dict(video=jnp.zeros((2, 16, 32, 32, 3)), logmel=jnp.zeros((2, 200, 64))), jax.random.key(0), cfg)
    with pytest.raises(ValueError, match=r"the prompt model takes video \[B, T, 32, 32, 3\]"):
        model(jnp.zeros((1, 16, 16, 16, 3)), jnp.zeros((1, 200, 64)))
    from configs import reward as reward_configs
    from configs import sync_reward as sync_configs
    from jav import sharding
    from jav.train.reward import RewardPhase

    runs = {}
    for name, configs, extra in (("sync", sync_configs, {}), ("prompt", prompt_configs, {"vocab_size": 512})):
        c = configs.get_config("tiny")
        c.train.steps = 1
        c.model.update(extra)
        loop.run(c, tmp_path / name, AutoencoderPhase(c), log=lambda _: None)
        runs[name] = tmp_path / name
    tuning = reward_configs.get_config(f"{tiny_diffusion_run},{runs['sync']},{runs['prompt']}")
    with pytest.raises(ValueError, match="reads captions tokenized with vocab_size 512"):
        RewardPhase(tuning).validate(sharding.mesh_from_config(tuning.mesh))

    # benchmarks/prompt_reading reads a folder of clips as jav.evaluate writes them
    from benchmarks import prompt_reading
    from jav.sampling import write_sample

    diffusion_cfg = load_config(tiny_diffusion_run)
    params = bounce.BounceParams(duration=2.0)
    for i in range(2):
        clip = bounce.generate_clip(i, params)
        info = dict(prompt=clip.caption, workdir=str(tiny_diffusion_run), metrics=dict(colour_accuracy=1.0))
        write_sample(tmp_path / "samples", i, clip.frames, clip.audio, diffusion_cfg, info)
    _, scorer = load_autoencoder(runs["prompt"])
    row = prompt_reading.folder_reading(scorer, tmp_path / "samples")
    assert row["clips"] == 2 and row["world_colour_accuracy"] == 1.0
    assert all(0.0 <= row[k] <= 1.0 for k in ("picture_agrees", "sound_agrees", "picture_agrees_with_world", "consistency_accuracy"))
    with pytest.raises(FileNotFoundError, match="holds no NNN.json clips"):
        prompt_reading.folder_reading(scorer, tmp_path)
