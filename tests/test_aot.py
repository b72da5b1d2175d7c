"""jav.aot: TPU topology names, the advice for a step that does not fit, the
sampling step's plan on this host's CPU, and the CLI compiling the train step
of a toy LTX-2-shaped config (tests/aot_tiny.py) ahead of time for a v5e-4
slice with libtpu (skipped where libtpu is not installed)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from jav import aot, schema

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, generation, shape",
    [
        ("v5p-128", "v5p", (4, 4, 4)),  # TensorCores: 64 chips
        ("v5p-8", "v5p", (2, 2, 1)),
        ("v4-256", "v4", (4, 4, 8)),
        ("v5e-256", "v5e", (16, 16)),  # chips
        ("v6e-256", "v6e", (16, 16)),
        ("v6e-8", "v6e", (2, 4)),
        ("v5e-1", "v5e", (1, 1)),
        ("v5p:4x4x8", "v5p", (4, 4, 8)),  # libtpu's own spelling
    ],
)
def test_topology_names(name, generation, shape):
    t = aot.parse_topology(name)
    assert (t.chip.generation, t.shape) == (generation, shape)
    assert t.libtpu_name == f"{generation}:{'x'.join(map(str, shape))}"


def test_bad_topology_names_say_what_is_accepted():
    with pytest.raises(ValueError, match=r"--topology='v7-8'.*v4, v5p, v5e, v6e"):
        aot.parse_topology("v7-8")
    with pytest.raises(ValueError, match=r"--topology='v5p-12'.*counts TensorCores \(2 per chip\)"):
        aot.parse_topology("v5p-12")
    with pytest.raises(ValueError, match=r"v5e slices are 2-D"):
        aot.parse_topology("v5e:4x4x4")


def _tiny_config():
    spec = importlib.util.spec_from_file_location("aot_tiny", ROOT / "tests" / "aot_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_advice_names_the_knobs_biggest_saving_first():
    cfg = _tiny_config()
    cfg.model.remat = "dots"
    gib = aot.GiB
    state_bound = aot.StepReport(
        "train step", {"params": 4 * gib, "opt_state": 8 * gib, "ema": 4 * gib, "batch": 0}, argument_bytes=16 * gib, temp_bytes=2 * gib
    )
    tips = aot.advice(state_bound, 16 * gib, cfg, "train")
    assert tips[0].startswith("(short by 2.0 GiB) parameters, optimizer state and EMA take 16.0 GiB")
    assert "doubling mesh.shape.fsdp (now -1)" in tips[0] and "train.ema_decay=0 drops the EMA copy (4.0 GiB)" in tips[1]
    activation_bound = aot.StepReport("train step", {"params": gib, "opt_state": 2 * gib, "ema": 0, "batch": 0}, argument_bytes=3 * gib, temp_bytes=20 * gib)
    tips = aot.advice(activation_bound, 16 * gib, cfg, "train")
    assert tips[0].startswith("(short by 7.0 GiB) activations and temporaries take about 20.0 GiB")
    assert "model.remat='full' keeps the least (now 'dots')" in tips[0] and "train.grad_accum (now 1)" in tips[0]
    assert "mesh.shape.context (now 1)" in tips[0]
    # the TPU compiler's two out-of-memory verdicts: the whole program, or its temporaries
    oom = aot.StepReport(
        "train step",
        {"params": gib, "opt_state": 2 * gib, "ema": 0, "batch": 0},
        error="RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 40.5G of 15.75G hbm.",
    )
    assert aot.needed_bytes(oom) == int(40.5 * gib) and aot.advice(oom, 16 * gib, cfg, "train")[0].startswith("(short by 24.5 GiB) activations")
    oom.error = "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (218.65G) exceeds available HBM (95.74G)."
    assert aot.needed_bytes(oom) == int(218.65 * gib) + 3 * gib
    # remat 'offload' can run out of the host's memory instead: no HBM verdict, the host's shortfall
    oom.error = "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space host. Used 145.92G of 128.00G host."
    assert aot.host_shortfall(oom) == (int(145.92 * gib), 128 * gib) and aot.needed_bytes(oom) is None
    (tip,) = aot.advice(oom, 16 * gib, cfg, "train")
    assert tip.startswith("(short by 17.9 GiB of host memory)") and "train.grad_accum (now 1)" in tip
    fits = aot.StepReport("train step", {"params": gib}, argument_bytes=gib, temp_bytes=gib)
    assert aot.advice(fits, 16 * gib, cfg, "train") == []


def test_sampling_step_plan_on_cpu():
    # the same lowering the CLI compiles for a TPU slice, here on this host's CPU
    import jax

    cfg = _tiny_config()
    (report,) = aot.plan(cfg, jax.devices()[:1], hbm_bytes=aot.GiB, steps=["sample"], sample_batch=2, say=lambda _: None).values()
    assert report.label == "sampling step (batch 2 x 3 passes)"
    params = aot.bytes_per_device(aot.abstract_params(cfg, aot.device_mesh(cfg, jax.devices()[:1]), tuple(map(tuple, cfg.mesh.rules)))[1])
    assert report.inputs["params"] == params and report.argument_bytes >= params + report.inputs["batch"]
    # one forward of the 2 clips x 3 guidance passes
    assert report.model_flops == report.executed_flops > 0 and report.compiler_flops > 0
    lines = "\n".join(aot.describe(report, aot.GiB, 1, 1e12, cfg, "sample"))
    # XLA:CPU gives no time estimate: the executed FLOPs at the peak bound the step
    assert "of 1 GiB HBM: fits" in lines and "no estimate from the compiler" in lines and "MFU at most 100.0%" in lines


def test_cli_compiles_the_train_step_for_a_tpu_slice(tmp_path):
    pytest.importorskip("libtpu", reason="jav.aot compiles with libtpu: pip install -e .[tpu]")
    out = tmp_path / "aot.jsonl"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "jav.aot", "--config", str(ROOT / "tests" / "aot_tiny.py"), "--topology", "v5e-4", "--compile", "train", "--json", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "v5e-4 = v5e:2x2 (4 chips, 16 GiB HBM each)" in text and "mesh {'data': 1, 'fsdp': 4, 'context': 1, 'tensor': 1}" in text
    assert "compiling the train step for 4 TPU v5 lite device(s)" in text and "of 16 GiB HBM: fits" in text
    (train,) = json.loads(out.read_text().splitlines()[-1])["reports"].values()
    state = train["inputs"]["params"] + train["inputs"]["opt_state"] + train["inputs"]["ema"]
    # the TPU pads small arrays to its tiles, so the compiler's arguments are at
    # least the inputs as placed (fsdp=4 splits weights, moments and EMA)
    assert train["argument_bytes"] >= state + train["inputs"]["batch"]
    # parameters, optimizer state and EMA are donated: the step updates them in place
    assert state <= train["alias_bytes"] <= train["argument_bytes"]
    # remat 'offload' puts the saved matmul outputs in host memory on a TPU
    assert train["host_bytes"] > 0
    assert train["total_bytes"] < 16 * aot.GiB and train["compiler_flops"] > 0 and train["compiler_seconds"] > 0


def test_two_slices_put_the_dcn_axis_outermost():
    """mesh.dcn: with two slices the data axis's outer half is slice 0 and its
    inner half slice 1 (only the gradient reduction crosses the data-centre
    network); fsdp stays inside each slice; a dcn that does not match the
    slices, or does not divide its axis, names the key."""
    pytest.importorskip("libtpu", reason="compile-only TPU devices need libtpu: pip install -e .[tpu]")
    from jav import sharding

    devices = aot.topology_devices(aot.parse_topology("v5e-4"), slices=2)
    assert sorted({d.slice_index for d in devices}) == [0, 1] and len(devices) == 8
    mesh = sharding.make_mesh({"data": 4, "fsdp": -1}, devices, dcn={"data": 2})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "context": 1, "tensor": 1}
    slice_of = np.vectorize(lambda d: d.slice_index)(mesh.devices)  # [data, fsdp, context, tensor]
    np.testing.assert_array_equal(slice_of[:, :, 0, 0], [[0, 0], [0, 0], [1, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"mesh.dcn \{'data': 4, 'fsdp': 1, 'context': 1, 'tensor': 1\} asks for 4 slices"):
        sharding.make_mesh({"data": 4, "fsdp": -1}, devices, dcn={"data": 4})
    with pytest.raises(ValueError, match="mesh.dcn.fsdp=2 must divide mesh.shape.fsdp=1"):
        sharding.make_mesh({"data": 8, "fsdp": -1}, devices, dcn={"fsdp": 2})


def test_the_distillation_step_is_planned_with_a_bfloat16_teacher_and_no_teacher_optimiser():
    # lowered only (compiling it is what the CLI's --steps distill does on a TPU slice)
    import jax
    import jax.numpy as jnp

    cfg = _tiny_config()
    mesh = aot.device_mesh(cfg, jax.devices()[:1])
    lowered, inputs, phase = aot.lower_distill_step(cfg, mesh)
    state = phase.abstract_state(mesh, tuple(map(tuple, cfg.mesh.rules)))
    assert {x.dtype for x in jax.tree.leaves(state["teacher"])} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state["model"].params)} == {jnp.dtype(jnp.float32)}
    # the student: the teacher's weights plus its two input embedders, in float32, with Adam's two moments and an EMA
    embedders = sum(x.size for name in ("guide", "interval") for x in jax.tree.leaves(state["model"].params[name]))
    assert inputs["params"] == 2 * inputs["teacher"] + 4 * embedders
    assert inputs["opt_state"] >= 2 * inputs["params"] and inputs["ema"] == inputs["params"]
    assert lowered.compiler_ir() is not None
    batch = {
        m: jax.ShapeDtypeStruct((cfg.train.batch_size,) + tuple(s), jnp.float32)
        for m, s in (("video", phase.layout.video_shape), ("audio", phase.layout.audio_shape))
    }
    assert phase.cost(batch)[0] > phase._layout_of(batch)[1]  # more than a train step: teacher passes and the JVP
    # the recipe of the best student: teacher-path targets, half the spanning clips on the sampling grid
    lowered, _, phase = aot.lower_distill_step(cfg, mesh, teacher_steps=2, grid_fraction=0.5)
    assert (phase.cfg.distill.teacher_steps, phase.cfg.distill.grid_fraction) == (2, 0.5)
    assert lowered.compiler_ir() is not None
    # distribution matching: a critic of the teacher's size with its own Adam moments, no EMA
    lowered, with_critic, phase = aot.lower_distill_step(cfg, mesh, teacher_steps=2, grid_fraction=0.5, dmd_weight=1.0)
    assert with_critic["critic_params"] == 2 * inputs["teacher"] and with_critic["critic_opt_state"] >= 2 * with_critic["critic_params"]
    assert "critic_ema" not in with_critic and lowered.compiler_ir() is not None
    assert phase.cost(batch)[0] > aot.lower_distill_step(cfg, mesh, teacher_steps=2, grid_fraction=0.5)[2].cost(batch)[0]


def test_the_layer_breakdown_estimates_each_part_on_one_tpu_chip():
    # benchmarks/aot_breakdown.py: each part of a video layer compiled alone for one chip,
    # with the compiler's time estimate; splash at two tiles and at the module's choice
    pytest.importorskip("libtpu", reason="compile-only TPU devices need libtpu: pip install -e .[tpu]")
    from benchmarks import aot_breakdown

    cfg = schema.complete(_tiny_config())
    cfg.model.video.update(width=256, heads=2)  # splash's TPU kernel takes heads of 128
    with jax.default_matmul_precision("default"):  # the suite's 'highest' is fp32 passes, which splash's bf16 kernel refuses
        rows = {r["part"]: r for r in aot_breakdown.breakdown(cfg, "v5p-8", 1, [128])}
    mlp = rows["MLP (GELU-tanh)"]
    assert mlp["flops"] > 0 and mlp["seconds"] > 0 and 0 < mlp["share_of_peak"] <= 1
    assert {"attention core, splash tiles 128", "self-attention q, k, v, o projections"} <= set(rows)
    assert all(r["seconds"] > 0 for r in rows.values())


def test_collectives_are_summed_by_kind_and_type_from_the_program_text():
    hlo = "\n".join(
        [
            "  %ag = (f32[64,128]{1,0}, f32[4096,128]{1,0}) all-gather-start(f32[64,128]{1,0} %p), dimensions={0}",
            "  %agd = f32[4096,128]{1,0} all-gather-done((f32[64,128]{1,0}, f32[4096,128]{1,0}) %ag)",
            "  %g2 = bf16[4096,128]{1,0} all-gather(bf16[64,128]{1,0} %q), dimensions={0}",
            "  %rs = f32[64,128]{1,0} reduce-scatter(f32[4096,128]{1,0} %g), dimensions={0}",
            "  %ar = bf16[8,16]{1,0} all-reduce(bf16[8,16]{1,0} %x), to_apply=%add",
            "  %a2a = bf16[2,7040,16,128]{3,2,1,0} all-to-all(bf16[2,7040,16,128]{3,2,1,0} %y), dimensions={1}",
            "  %add.1 = f32[4096,128]{1,0} add(f32[4096,128]{1,0} %a, f32[4096,128]{1,0} %b)",
        ]
    )
    moved = aot.collective_bytes(hlo)
    assert moved == {
        "all-gather": {"f32": 4096 * 128 * 4, "bf16": 4096 * 128 * 2},  # the -done line is not counted again
        "reduce-scatter": {"f32": 4096 * 128 * 4},
        "all-reduce": {"bf16": 8 * 16 * 2},
        "all-to-all": {"bf16": 2 * 7040 * 16 * 128 * 2},
    }
