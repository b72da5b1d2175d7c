"""LTX-2's text connectors in jav: small random diffusers `LTX2TextConnectors` (LTX-2.0's
shared masked-mean projection and LTX-2.3's per-stream RMS projections; with registers,
without, both RoPE pair layouts) loaded by `jav.convert.ltx2_text` give diffusers' video
and audio caption embeddings and mask, for left-padded captions of several lengths."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference needs torch: pip install -r requirements-hf.txt")
pytest.importorskip("diffusers", reason="the reference is diffusers': pip install -r requirements-hf.txt")

from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors  # noqa: E402

from jav.convert import ltx2_text  # noqa: E402

C, F, L = 16, 3, 8  # caption channels, stacked hidden states, caption length
CASES = {
    "ltx2.0, registers, interleaved": dict(rope_type="interleaved"),
    "ltx2.0, no registers, split": dict(rope_type="split", video_connector_num_learnable_registers=None, audio_connector_num_learnable_registers=None),
    "ltx2.3, per-stream projections": dict(
        rope_type="split", per_modality_projections=True, video_hidden_dim=24, audio_hidden_dim=16, video_connector_num_attention_heads=3, proj_bias=True
    ),
}


def reference(**options):
    torch.manual_seed(0)
    kw = dict(
        caption_channels=C,
        text_proj_in_factor=F,
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=2,
        video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4,
        connector_rope_base_seq_len=32,
    )
    model = LTX2TextConnectors(**(kw | options)).eval()
    with torch.no_grad():  # the default init leaves biases at 0 and norm scales at 1: make every parameter count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_connectors_match_diffusers(case):
    ref = reference(**CASES[case])
    rng = np.random.default_rng(1)
    states = rng.normal(size=(3, L, C, F)).astype(np.float32) * np.array([1.0, 3.0, 0.5], np.float32)
    mask = np.zeros((3, L), np.int64)
    for row, n in enumerate((8, 5, 2)):  # left padding, as Gemma's tokenizer pads
        mask[row, L - n :] = 1
    with torch.no_grad():
        want = [x.numpy() for x in ref(torch.from_numpy(states), torch.from_numpy(mask))]
    jav = ltx2_text.connectors_from_tensors({k: v.detach().numpy() for k, v in ref.state_dict().items()}, dict(ref.config))
    got = [np.asarray(x) for x in jav(states, mask)]
    for name, g, w in zip(("video", "audio", "mask"), got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        scale = max(float(np.abs(w).max()), 1e-6)
        assert float(np.abs(g - w).max()) / scale <= 1e-5, (case, name, float(np.abs(g - w).max()) / scale)


def test_bfloat16_connectors_match_diffusers_in_bfloat16():
    ref = reference().to(torch.bfloat16)
    rng = np.random.default_rng(2)
    states = rng.normal(size=(2, L, C, F)).astype(np.float32)
    mask = np.ones((2, L), np.int64)
    mask[1, :3] = 0
    with torch.no_grad():
        want = [x.float().numpy() for x in ref(torch.from_numpy(states).to(torch.bfloat16), torch.from_numpy(mask))[:2]]
    tensors = {k: v.detach().float().numpy() for k, v in ref.state_dict().items()}  # bf16 values, exact in float32
    jav = ltx2_text.connectors_from_tensors(tensors, dict(ref.config), dtype="bfloat16")
    got = [np.asarray(x, np.float32) for x in jav(states.astype(jnp.bfloat16), mask)[:2]]
    for g, w in zip(got, want):
        assert float(np.abs(g - w).max()) / float(np.abs(w).max()) <= 2e-2


def test_unsupported_options_are_named():
    with pytest.raises(ValueError, match="video_gated_attn"):
        ltx2_text.config_from_diffusers({"video_gated_attn": True})
    ref = reference()
    tensors = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    del tensors["video_connector.learnable_registers"]
    with pytest.raises(ValueError, match="lacks: \\['video_connector.learnable_registers'\\]"):
        ltx2_text.connectors_from_tensors(tensors, dict(ref.config))
