"""Context-parallel attention against full attention on 8 simulated CPU devices.

For each mesh (fsdp=2 x context=4, and context=8) and each mode (ring,
ulysses): video self-attention, a2v, v2a and joint attention, with padded
video and audio tokens, a sample whose audio is all padding and one with
cross_modal off, and a video length that the context size does not divide;
outputs and the gradients of a random projection of them, against the
single-device path (and joint attention against the dense [N, N] mask the
model used before). Then whole AVDiT forwards on fsdp=2 x context=4 against
one device. Prints the largest differences and the collectives seen as JSON.
Run by tests/test_context_parallel.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (fixed when JAX starts).

    python tests/context_parallel_check.py
"""

import json
import pathlib
import sys
import time

import jax

jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jav import sharding  # noqa: E402
from jav.models import context_parallel as cp  # noqa: E402
from jav.models.attention_kernels import Mask, dot_product_attention  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

B, NV, NA, H, DH = 2, 30, 7, 8, 8
VIDEO, AUDIO = "activation_length", "activation_audio_length"
MESHES = {"fsdp=2 context=4": dict(fsdp=2, context=4), "context=8": dict(fsdp=1, context=8)}
RULES = sharding.DEFAULT_RULES


def inputs():
    rng = np.random.default_rng(0)
    arrays = {n: jnp.asarray(rng.normal(size=(B, NV if n[1] == "v" else NA, H, DH)), jnp.float32) for n in ("qv", "kv", "vv", "qa", "ka", "va")}
    valid_v = jnp.asarray([[True] * NV, [True] * (NV - 5) + [False] * 5])
    valid_a = jnp.asarray([[True] * (NA - 2) + [False] * 2, [False] * NA])  # sample 1: no audio at all
    cross = jnp.asarray([True, False])
    return arrays, valid_v, valid_a, cross


def attentions(x, valid_v, valid_a, cross, context):
    kw = dict(kernel="xla", context=context)
    joint_v, joint_a = cp.joint_attention(
        (x["qv"], x["kv"], x["vv"]), (x["qa"], x["ka"], x["va"]), valid_v, valid_a, cross, video_length=VIDEO, audio_length=AUDIO, **kw
    )
    return {
        "video_self": cp.attention(x["qv"], x["kv"], x["vv"], Mask(None, valid_v), q_length=VIDEO, k_length=VIDEO, **kw),
        "a2v": cp.attention(x["qv"], x["ka"], x["va"], Mask(valid_v, valid_a), q_length=VIDEO, k_length=AUDIO, **kw),
        "v2a": cp.attention(x["qa"], x["kv"], x["vv"], Mask(valid_a, valid_v), q_length=AUDIO, k_length=VIDEO, **kw),
        "joint_video": joint_v,
        "joint_audio": joint_a,
    }


def loss_and_grads(context):
    weights = {
        k: jnp.asarray(np.random.default_rng(1).normal(size=s), jnp.float32)
        for k, s in [
            ("video_self", (B, NV, H, DH)),
            ("a2v", (B, NV, H, DH)),
            ("v2a", (B, NA, H, DH)),
            ("joint_video", (B, NV, H, DH)),
            ("joint_audio", (B, NA, H, DH)),
        ]
    }

    def loss(x, valid_v, valid_a, cross):
        out = attentions(x, valid_v, valid_a, cross, context)
        return sum(jnp.sum(out[k] * weights[k]) for k in out), out

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def dense_joint(x, valid_v, valid_a, cross):
    """Joint attention as the model computed it before: one [B, 1, N, N] mask."""
    modality = jnp.concatenate([jnp.zeros(NV, jnp.int32), jnp.ones(NA, jnp.int32)])
    mask = (modality[:, None] == modality[None, :])[None, None] | cross[:, None, None, None]
    mask = mask & jnp.concatenate([valid_v, valid_a], axis=1)[:, None, None, :]
    cat = lambda a, b: jnp.concatenate([a, b], axis=1)  # noqa: E731
    o = dot_product_attention(cat(x["qv"], x["qa"]), cat(x["kv"], x["ka"]), cat(x["vv"], x["va"]), mask)
    return o[:, :NV], o[:, NV:]


def max_diff(a, b) -> float:
    return float(max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def collectives(text: str) -> list[str]:
    return [c for c in ("collective_permute", "all_to_all", "all_reduce", "all_gather") if c in text]


def attention_checks() -> dict:
    x, valid_v, valid_a, cross = inputs()
    (_, ref_out), ref_grads = loss_and_grads("ring")(x, valid_v, valid_a, cross)  # no mesh: the plain path
    dv, da = dense_joint(x, valid_v, valid_a, cross)
    out = {
        "plain_vs_dense_joint": max(max_diff(ref_out["joint_video"], dv), max_diff(ref_out["joint_audio"], da)),
        "zero_rows": float(np.abs(np.asarray(ref_out["a2v"][1])).max() + np.abs(np.asarray(ref_out["joint_audio"][1])).max()),
        "finite": bool(all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves((ref_out, ref_grads)))),
    }
    for mesh_name, shape in MESHES.items():
        mesh = sharding.make_mesh(shape)
        for context in cp.CONTEXT_MODES:
            with jax.set_mesh(mesh), sharding.logical_rules(RULES):
                lowered = loss_and_grads(context).lower(x, valid_v, valid_a, cross)
                (_, got), grads = lowered.compile()(x, valid_v, valid_a, cross)
            key = f"{mesh_name} {context}"
            out[key] = {name: max_diff(got[name], ref_out[name]) for name in got}
            out[key]["grads"] = {name: max_diff(grads[name], ref_grads[name]) for name in grads}
            out[key]["collectives"] = collectives(lowered.as_text())
    return out


def model_checks() -> dict:
    from configs.common import model as model_config
    from jav.models import AVDiT, patch

    t, s, ta = 3, 12, 16  # 3 x 3 x 3 = 27 video tokens: padded to 28 on context=4
    rng = np.random.default_rng(2)
    x = {
        "video": patch.patchify_video(jnp.asarray(rng.normal(size=(B, t, s, s, 3)), jnp.float32), (1, 4, 4)),
        "audio": patch.patchify_audio(jnp.asarray(rng.normal(size=(B, ta, 64)), jnp.float32), 4),
    }
    times = {m: jnp.asarray(rng.uniform(0.1, 0.9, size=x[m].shape[:2]), jnp.float32) for m in x}
    pos = {
        "video": patch.video_positions(patch.uniform_frame_times(t, 8), (s, s), (1, 4, 4)),
        "audio": patch.audio_positions(patch.uniform_frame_times(ta, 100), 4),
    }
    text = jnp.asarray(rng.normal(size=(B, 5, 16)), jnp.float32)
    text_mask = jnp.asarray([[True] * 5, [True] * 2 + [False] * 3])
    cross = jnp.asarray([True, False])
    token_mask = {"video": jnp.asarray([[True] * 27, [True] * 20 + [False] * 7]), "audio": jnp.asarray([[True] * 4, [True] * 3 + [False]])}
    out = {}
    for mode, context in (("cross_attn", "ring"), ("joint_attn", "ulysses")):
        cfg = model_config(video_width=32, video_heads=4, audio_width=16, audio_heads=2, depth=2, joint=mode, text_dim=16)
        cfg.attention.context = context
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg, rngs=nnx.Rngs(0))))
        leaves, treedef = jax.tree.flatten(abstract)
        # every parameter random, drawn on the host (no init to compile): zero-initialised gates would hide paths
        prng = np.random.default_rng(3)
        state = jax.tree.unflatten(treedef, [jnp.asarray(0.3 * prng.standard_normal(v.shape), v.dtype) for v in leaves])

        @jax.jit
        def forward(state, x, times, text, text_mask, cross, token_mask):
            return nnx.merge(graphdef, state)(x, times, text, text_mask, cross, pos=pos, token_mask=token_mask)

        args = (x, times, text, text_mask, cross, token_mask)
        ref = forward(state, *args)
        mesh = sharding.make_mesh(MESHES["fsdp=2 context=4"])
        placed = jax.device_put(state, sharding.param_shardings(abstract, mesh, RULES))
        with jax.set_mesh(mesh), sharding.logical_rules(RULES):
            lowered = forward.lower(placed, *args)
            got = lowered.compile()(placed, *args)
        # relative to the outputs' size: a mesh without context already reorders
        # the fsdp-sharded sums (about 1e-6 relative)
        out[f"{mode} {context}"] = {m: max_diff(got[m], ref[m]) / float(np.abs(np.asarray(ref[m])).max()) for m in ref}
        out[f"{mode} {context}"]["collectives"] = collectives(lowered.as_text())
    return out


if __name__ == "__main__":
    start = time.time()
    result = {"devices": jax.device_count(), "attention": attention_checks()}
    result["attention_s"] = time.time() - start
    result["model"] = model_checks()
    result["model_s"] = time.time() - start - result["attention_s"]
    result["total_s"] = time.time() - start
    print(json.dumps(result))
