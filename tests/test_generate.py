"""Jitted generation: conditioning holds the given tokens, batching and seeds behave."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from jav.clip_tokens import TokenLayout, clip_to_arrays, mel_params
from jav.data.bounce import generate_clip
from jav.generate import generate
from jav.models import init_model
from jav.samplers import Guidance

CAPTIONS = ["a red ball bouncing on a dark background", "a blue ball and a green ball bouncing on a navy background"]


@functools.lru_cache(maxsize=None)
def setup():
    cfg = test_config.get_config()
    model = init_model(cfg.model, jax.random.key(0))
    # random weights everywhere: the zero-initialised output layer would make
    # every x0-prediction 0 and every sample identical
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(0)
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, [np.asarray(0.1 * rng.standard_normal(l.shape), l.dtype) for l in leaves]))
    layout = TokenLayout.from_config(cfg)
    clips = [generate_clip(s) for s in (0, 1)]
    arrays = [clip_to_arrays(c.frames, c.audio, mel_params(cfg)) for c in clips]
    video = np.stack([a[0] for a in arrays])
    audio = np.stack([a[1] for a in arrays])
    return cfg, model, layout, video, audio


def run(key=0, **kw):
    cfg, model, layout, _, _ = setup()
    return generate(model, layout, CAPTIONS, jax.random.key(key), num_steps=3, flow_cfg=cfg.flow, **kw)


def test_batched_and_deterministic():
    cfg, _, layout, _, _ = setup()
    v1, a1 = run(0)
    v2, a2 = run(0)
    v3, _ = run(1)
    assert v1.shape == (2,) + layout.video_shape and a1.shape == (2,) + layout.audio_shape
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(a1, a2)
    assert np.abs(v1 - v3).mean() > 0.1


def test_per_clip_keys_make_a_clip_independent_of_its_batch():
    """One key per caption (jav.sample.clip_keys): the second clip sampled alone is
    the second clip of the batch; another seed gives another clip."""
    from jav.sample import clip_keys

    cfg, model, layout, _, _ = setup()
    both = generate(model, layout, CAPTIONS, clip_keys([11, 5]), num_steps=3, flow_cfg=cfg.flow)
    alone = generate(model, layout, CAPTIONS[1:], clip_keys([5]), num_steps=3, flow_cfg=cfg.flow)
    for batched, single in zip(both, alone):
        np.testing.assert_allclose(batched[1:], single, atol=1e-4)
    other = generate(model, layout, CAPTIONS[1:], clip_keys([6]), num_steps=3, flow_cfg=cfg.flow)
    assert np.abs(other[0] - alone[0]).mean() > 0.1


def test_the_sde_sampler_draws_each_clips_step_noise_from_its_own_key():
    from jav.sample import clip_keys

    cfg, model, layout, _, _ = setup()
    kw = dict(num_steps=3, flow_cfg=cfg.flow, sampler="sde", noise_level=0.7)
    both = generate(model, layout, CAPTIONS, clip_keys([11, 5]), **kw)
    alone = generate(model, layout, CAPTIONS[1:], clip_keys([5]), **kw)
    for batched, single in zip(both, alone):
        np.testing.assert_allclose(batched[1:], single, atol=1e-4)
    ode = generate(model, layout, CAPTIONS[1:], clip_keys([5]), num_steps=3, flow_cfg=cfg.flow)
    assert np.abs(ode[0] - alone[0]).mean() > 1e-3  # same initial noise, other path: the step noise acts
    with pytest.raises(ValueError, match="sampler='euler' is not one of"):
        generate(model, layout, CAPTIONS, clip_keys([1, 2]), num_steps=3, flow_cfg=cfg.flow, sampler="euler")


def test_conditions_are_held_exactly():
    _, _, layout, video, audio = setup()
    pt = layout.video_patch[0]
    v, a = run(first_frame=video[:, :pt])  # I2VA
    np.testing.assert_array_equal(v[:, :pt], video[:, :pt])
    assert np.abs(v[:, pt:] - video[:, pt:]).mean() > 0.1
    with pytest.raises(ValueError, match=f"pass first_frame with {pt} frame"):
        run(first_frame=video[:, : pt + 1])
    v, a = run(video=video)  # V2A
    np.testing.assert_array_equal(v, video)
    v, a = run(audio=audio)  # A2V
    np.testing.assert_array_equal(a, audio)


def test_guidance_runs_all_passes():
    v, a = run(guidance=Guidance(text_video=3.0, text_audio=7.0, modality=3.0))
    assert np.isfinite(v).all() and np.isfinite(a).all()


def test_negative_prompts_replace_the_unconditional_pass():
    """Text guidance with a negative caption steers from it instead of from no caption:
    negative = the caption itself cancels the guidance (the unguided sample), "" is
    the plain guided sample, another caption gives another sample."""
    from jav.sample import clip_keys

    cfg, model, layout, _, _ = setup()
    keys, g = clip_keys([3, 4]), Guidance(text_video=4.0, text_audio=4.0)
    sample = functools.partial(generate, model, layout, CAPTIONS, keys, num_steps=3, flow_cfg=cfg.flow)
    plain_v, plain_a = sample()
    guided_v, guided_a = sample(guidance=g)
    assert np.abs(guided_v - plain_v).mean() > 1e-3
    self_v, self_a = sample(guidance=g, negative_captions=CAPTIONS)
    np.testing.assert_allclose(self_v, plain_v, atol=1e-4)
    np.testing.assert_allclose(self_a, plain_a, atol=1e-4)
    none_v, _ = sample(guidance=g, negative_captions=["", ""])
    np.testing.assert_allclose(none_v, guided_v, atol=1e-4)
    other_v, _ = sample(guidance=g, negative_captions=["a green ball", ""])
    assert np.abs(other_v[0] - guided_v[0]).mean() > 1e-3  # the first clip steered from its negative
    np.testing.assert_allclose(other_v[1], guided_v[1], atol=1e-4)  # the second has none
    with pytest.raises(ValueError, match="text guidance scale above 1"):
        sample(negative_captions=CAPTIONS)
    with pytest.raises(ValueError, match="one per caption"):
        sample(guidance=g, negative_captions=CAPTIONS[:1])


def test_two_stage_is_the_joint_video_then_its_v2a_soundtrack():
    """two_stage: the video of the one-stage joint sample, and the audio that V2A makes
    for that video from the second-stage keys (each clip's key folded with 1)."""
    from jav.sample import clip_keys

    cfg, model, layout, video, _ = setup()
    keys = clip_keys([3, 4])
    one_v, one_a = generate(model, layout, CAPTIONS, keys, num_steps=3, flow_cfg=cfg.flow)
    two_v, two_a = generate(model, layout, CAPTIONS, keys, num_steps=3, flow_cfg=cfg.flow, two_stage=True)
    np.testing.assert_array_equal(two_v, one_v)
    second = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    _, v2a = generate(model, layout, CAPTIONS, second, num_steps=3, flow_cfg=cfg.flow, video=one_v)
    np.testing.assert_allclose(two_a, v2a, atol=1e-5)
    assert np.abs(two_a - one_a).mean() > 1e-3
    with pytest.raises(ValueError, match="two_stage"):
        generate(model, layout, CAPTIONS, keys, num_steps=3, flow_cfg=cfg.flow, two_stage=True, video=video)
