"""LTX-2's sampling recipe in jav against diffusers' `LTX2Pipeline`: a small random LTX-2
transformer and text connectors (as tests/test_ltx2_parity.py and tests/test_ltx2_text.py
build them), converted by jav.convert, sample from the same noise and caption states in
the pipeline and in `jav.samplers.euler_sample`, and the final video and audio latents
agree: LTX-2's shifted, stretched schedule with its guidance (text CFG per modality,
modality guidance, STG, rescale) in two settings, and the distilled model's fixed
8-step schedule without guidance.

The pipeline returns latents (output_type="latent"): its VAEs and vocoder never run, so
stand-ins give the compression ratios and latent statistics (mean 0, std 1) it reads.
The transformer uses the perturbed-attention processor (diffusers' `perturbed_attn`,
which adds no weights), without which diffusers' STG pass perturbs nothing.
"""

import functools
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
diffusers = pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors  # noqa: E402
from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift  # noqa: E402
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES  # noqa: E402

from configs import ltx2  # noqa: E402
from jav import flow, samplers  # noqa: E402
from jav.convert import ltx2 as convert  # noqa: E402
from jav.convert import ltx2_text  # noqa: E402
from jav.models import rope  # noqa: E402
from ltx2_reference import tiny_transformer  # noqa: E402

T = ltx2.TINY
B, GRID, AUDIO_LEN = 2, (3, 2, 4), 10  # clips; latent frames x height x width; audio latents
AUDIO_CHANNELS, MEL = 2, 4  # audio latent channels x mel bins: T["audio_channels"] per token
CAPTION_LEN, LAYERS = 8, 3  # caption tokens; text-encoder hidden states the connectors stack
FPS, FRAMES = 24.0, 17  # pixel frames: 3 latent frames of the 8x causal VAE
RTOL = 1e-4

# LTX-2's scheduler (its scheduler_config.json): the shift from the video token count, stretched to end at 0.1
LTX2_SCHEDULER = dict(use_dynamic_shifting=True, base_image_seq_len=1024, max_image_seq_len=4096, base_shift=0.95, max_shift=2.05, shift_terminal=0.1)
# name -> (diffusers scheduler options, pipeline arguments, jav schedule, jav guidance); the tiny model has blocks 0 and 1
CASES = {
    "ltx2 defaults": (
        LTX2_SCHEDULER,
        dict(num_inference_steps=4, spatio_temporal_guidance_blocks=[1]),  # the pipeline's scales: 3 / 7, STG 1, modality 3, rescale 0.7
        samplers.SCHEDULES["ltx2"],
        samplers.Guidance(text_video=3.0, text_audio=7.0, modality=3.0, stg=1.0, stg_blocks=(1,), rescale=0.7),
    ),
    "text cfg, stg": (
        LTX2_SCHEDULER,
        dict(
            num_inference_steps=4,
            guidance_scale=4.0,
            audio_guidance_scale=2.0,
            stg_scale=0.5,
            audio_stg_scale=0.5,
            modality_scale=1.0,
            audio_modality_scale=1.0,
            guidance_rescale=0.0,
            audio_guidance_rescale=0.0,
            spatio_temporal_guidance_blocks=[0],
        ),
        samplers.SCHEDULES["ltx2"],
        samplers.Guidance(text_video=4.0, text_audio=2.0, stg=0.5, stg_blocks=(0,)),
    ),
    "distilled": (
        {},  # the distilled checkpoints' scheduler: no shift, the sigmas as given
        dict(
            num_inference_steps=8,
            sigmas=DISTILLED_SIGMA_VALUES,
            guidance_scale=1.0,
            audio_guidance_scale=1.0,
            stg_scale=0.0,
            audio_stg_scale=0.0,
            modality_scale=1.0,
            audio_modality_scale=1.0,
            guidance_rescale=0.0,
            audio_guidance_rescale=0.0,
        ),
        samplers.SCHEDULES["ltx2_distilled"],
        samplers.NO_GUIDANCE,
    ),
}


class LatentStats(types.SimpleNamespace):
    """A VAE stand-in: the attributes of a VAE the pipeline reads when it returns latents."""


def reference_transformer():
    # perturbed_attn adds no weights; without it diffusers' STG pass changes nothing
    return tiny_transformer(perturbed_attn=True)


def reference_connectors():
    torch.manual_seed(1)
    model = LTX2TextConnectors(
        caption_channels=T["text_dim"],
        text_proj_in_factor=LAYERS,
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=T["text_dim"] // 2,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=T["text_dim"] // 2,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4,
        connector_rope_base_seq_len=32,
    ).eval()
    with torch.no_grad():  # the default init leaves biases at 0 and norm scales at 1: make every parameter count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def to_jav(transformer):
    """The diffusers transformer -> jav's AVDiT, through jav.convert.ltx2's tensor map, in memory."""
    cfg = convert.model_config(dict(transformer.config))
    graphdef, state = convert.abstract_params(cfg)
    flat = dict(nnx.to_flat_state(state))
    tensors = {k: v.detach().numpy() for k, v in transformer.state_dict().items()}
    arrays = {p: np.zeros(v.get_value().shape, np.float32) for p, v in flat.items()}
    for e in convert.tensor_map(cfg.depth):
        target = arrays[e.path] if e.layer is None else arrays[e.path][e.layer]
        target[...] = convert.to_jav_tensor(tensors[e.hf], e, target.shape)
    return nnx.merge(graphdef, nnx.from_flat_state([(p, v.replace(jnp.asarray(arrays[p]))) for p, v in flat.items()]))


@pytest.fixture(scope="module")
def models():
    transformer, connectors = reference_transformer(), reference_connectors()
    tensors = {k: v.detach().numpy() for k, v in connectors.state_dict().items()}
    return transformer, connectors, to_jav(transformer), ltx2_text.connectors_from_tensors(tensors, dict(connectors.config))


@pytest.fixture(scope="module")
def inputs():
    """Initial noise (diffusers' unpacked layouts) and caption states [B, L, C * F] with left-padded masks."""
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, CAPTION_LEN, dtype=torch.int64)
    mask[1, :3] = 0
    negative_mask = torch.ones(B, CAPTION_LEN, dtype=torch.int64)
    negative_mask[:, :5] = 0
    return dict(
        latents=torch.randn(B, T["channels"], *GRID, generator=g),
        audio_latents=torch.randn(B, AUDIO_CHANNELS, AUDIO_LEN, MEL, generator=g),
        prompt_embeds=torch.randn(B, CAPTION_LEN, T["text_dim"] * LAYERS, generator=g),
        prompt_attention_mask=mask,
        negative_prompt_embeds=torch.randn(B, CAPTION_LEN, T["text_dim"] * LAYERS, generator=g),
        negative_prompt_attention_mask=negative_mask,
    )


def run_pipeline(transformer, connectors, inp, scheduler_options, arguments) -> dict:
    """The pipeline's final latents as tokens: video [B, N_v, C], audio [B, N_a, C_a * M]."""
    channels, audio_width = T["channels"], T["audio_channels"]
    vae = LatentStats(
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
        latents_mean=torch.zeros(channels),
        latents_std=torch.ones(channels),
        config=types.SimpleNamespace(scaling_factor=1.0),
    )
    audio_vae = LatentStats(
        mel_compression_ratio=4,
        temporal_compression_ratio=4,
        latents_mean=torch.zeros(audio_width),
        latents_std=torch.ones(audio_width),
        config=types.SimpleNamespace(sample_rate=16_000, mel_hop_length=160, mel_bins=4 * MEL, latent_channels=AUDIO_CHANNELS),
    )
    pipe = diffusers.LTX2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**scheduler_options),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=None,
        tokenizer=None,
        connectors=connectors,
        transformer=transformer,
        vocoder=None,
    )
    pipe.set_progress_bar_config(disable=True)
    guided = arguments.get("guidance_scale", 3.0) > 1.0
    text = {k: v for k, v in inp.items() if guided or not k.startswith("negative")}
    video, audio = pipe(**text, num_frames=FRAMES, frame_rate=FPS, output_type="latent", return_dict=False, **arguments)
    return {"video": pipe._pack_latents(video).numpy(), "audio": pipe._pack_audio_latents(audio).numpy()}


def run_jav(model, connectors, inp, schedule: samplers.Schedule, guidance: samplers.Guidance, num_steps: int) -> dict:
    """jav's sampler from the same noise, captions through jav's connectors (a text per branch)."""
    noise = {
        "video": diffusers.LTX2Pipeline._pack_latents(inp["latents"]).numpy(),
        "audio": diffusers.LTX2Pipeline._pack_audio_latents(inp["audio_latents"]).numpy(),
    }
    pos = {"video": rope.ltx2_video_positions(*GRID, fps=FPS), "audio": rope.ltx2_audio_positions(AUDIO_LEN)}
    mu = flow.sampling_mu(flow.flow_config(), {m: x.shape[1] for m, x in noise.items()})  # LTX-2's line, audio shares the video's

    def caption(states, mask):
        video, audio, kept = connectors(states.numpy(), mask.numpy())
        return {"video": video, "audio": audio}, {"video": kept, "audio": kept}

    text, mask = caption(inp["prompt_embeds"], inp["prompt_attention_mask"])
    negative = caption(inp["negative_prompt_embeds"], inp["negative_prompt_attention_mask"]) if guidance.uses_text() else None
    graphdef, state = nnx.split(model)

    @jax.jit
    def sample(state, noise, text, mask, negative):
        net = nnx.merge(graphdef, state)

        def denoise(x, t, text, text_mask, cross_modal, **kw):
            return net(x, t, text, text_mask, cross_modal, pos=pos, **kw)

        return samplers.euler_sample(denoise, None, noise, text, mask, num_steps=num_steps, mu=mu, guidance=guidance, negative=negative, schedule=schedule)

    return jax.tree.map(np.asarray, sample(state, noise, text, mask, negative))


def test_distilled_sigmas_are_diffusers():
    assert samplers.LTX2_DISTILLED_SIGMAS == tuple(DISTILLED_SIGMA_VALUES)


@pytest.mark.parametrize("steps, tokens", [(4, 24), (30, 3000), (40, 14_080)])
def test_ltx2_schedule_matches_scheduler(steps, tokens):
    """sigma_schedule's "ltx2" against LTX-2's scheduler at the pipeline's mu, for a tiny, a mid-size and the 720p, 5 s clip."""
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**LTX2_SCHEDULER)
    mu = calculate_shift(tokens, 1024, 4096, 0.95, 2.05)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
    got = samplers.sigma_schedule(steps, flow.shift_mu(tokens), samplers.SCHEDULES["ltx2"])
    np.testing.assert_allclose(np.asarray(got), scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="2 or more steps"):
        samplers.sigma_schedule(1, 0.5, samplers.SCHEDULES["ltx2"])
    with pytest.raises(ValueError, match="8 fixed steps"):
        samplers.sigma_schedule(steps, 0.5, samplers.SCHEDULES["ltx2_distilled"])


@pytest.mark.parametrize("case", list(CASES))
def test_sampling_matches_ltx2_pipeline(models, inputs, case):
    transformer, connectors, jav_model, jav_connectors = models
    scheduler_options, arguments, schedule, guidance = CASES[case]
    start = time.time()
    want = run_pipeline(transformer, connectors, inputs, scheduler_options, arguments)
    middle = time.time()
    got = run_jav(jav_model, jav_connectors, inputs, schedule, guidance, arguments["num_inference_steps"])
    print(f"{case}: diffusers {middle - start:.1f} s, jav {time.time() - middle:.1f} s (with its compile)")
    for m in ("video", "audio"):
        rel = float(np.abs(got[m] - want[m]).max() / np.abs(want[m]).max())
        print(f"{case} {m}: max relative difference {rel:.2e}")
        assert got[m].shape == want[m].shape
        assert rel <= RTOL, (case, m, rel)


def test_stg_perturbs_only_the_flagged_samples_and_blocks(models):
    """AVDiT's perturbed pass: a flagged sample differs from the plain pass, an unflagged one
    does not, and blocks out of range or a model without plain self-attention are refused."""
    _, _, model, _ = models
    r = np.random.default_rng(3)
    n = int(np.prod(GRID))
    x = {"video": r.normal(size=(2, n, T["channels"])).astype(np.float32), "audio": r.normal(size=(2, AUDIO_LEN, T["audio_channels"])).astype(np.float32)}
    t = {m: np.full(a.shape[:2], 0.6, np.float32) for m, a in x.items()}
    text = r.normal(size=(2, 5, T["text_dim"])).astype(np.float32)
    mask = np.ones((2, 5), bool)
    pos = {"video": rope.ltx2_video_positions(*GRID, fps=FPS), "audio": rope.ltx2_audio_positions(AUDIO_LEN)}
    call = functools.partial(model, x, t, text, mask, pos=pos)
    plain = call()
    perturbed = call(perturbed=jnp.array([True, False]), stg_blocks=(1,))
    for m in x:
        assert np.abs(np.asarray(perturbed[m][0]) - np.asarray(plain[m][0])).max() > 1e-3, m
        np.testing.assert_allclose(perturbed[m][1], plain[m][1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside the model's blocks"):
        call(perturbed=jnp.array([True, False]), stg_blocks=(T["depth"],))
    with pytest.raises(ValueError, match="needs stg_blocks"):
        call(perturbed=jnp.array([True, False]))
