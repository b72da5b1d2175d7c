"""Logical axis names: every parameter has them, and the rules map them to a PartitionSpec."""

import jax
import pytest
from flax import nnx

from configs import ltx2_19b
from configs.common import model as model_config
from jav.models import AVDiT
from jav.sharding import LOGICAL_AXES, logical_rules, logical_to_spec


@pytest.mark.parametrize("mode,scan", [("cross_attn", True), ("joint_attn", False), ("none", True)])
def test_every_parameter_has_logical_axes(mode, scan):
    cfg = model_config(video_width=32, video_heads=2, audio_width=16, audio_heads=2, depth=2, joint=mode, text_dim=16)
    cfg.scan_layers = scan
    cfg.video.decoupled = mode != "joint_attn"
    params = nnx.state(nnx.eval_shape(lambda: AVDiT(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    flat = nnx.to_flat_state(params)
    assert len(flat) > 50
    for path, var in flat:
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), (path, axes)
        assert all(a in LOGICAL_AXES for a in axes), (path, axes)
        if scan and "groups" in [str(p) for p in path]:
            assert axes[0] == "layers", path


def test_rules_map_logical_names_once_per_mesh_axis():
    rules = [("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("layers", None), ("activation_batch", ("data", "fsdp"))]
    assert logical_to_spec(("embed", "mlp"), rules) == jax.P("fsdp", "tensor")
    assert logical_to_spec(("layers", "embed", "heads", "kv"), rules) == jax.P(None, "fsdp", "tensor", None)
    # a mesh axis is used once: the second 'tensor' stays unsharded
    assert logical_to_spec(("heads", "mlp"), rules) == jax.P("tensor", None)
    assert logical_to_spec(("activation_batch", "embed"), rules) == jax.P(("data", "fsdp"), None)
    with logical_rules(rules):
        assert logical_to_spec(("mlp",)) == jax.P("tensor")
    assert logical_to_spec(("mlp",)) == jax.P(None)


def test_ltx2_sized_config_builds_abstractly():
    cfg = ltx2_19b.get_config()
    params = nnx.state(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)
    total = sum(x.size for x in jax.tree.leaves(params))
    assert 19e9 < total < 21e9
