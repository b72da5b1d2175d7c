"""jav.cli (`--config.KEY=VALUE` overrides, one-line errors) and jav.schema (defaults in one pass)."""

import ml_collections
import pytest

from configs import test as test_config
from jav import cli, schema
from jav.models import av_dit


def test_overrides_are_split_from_the_other_arguments():
    overrides, rest = cli.split_overrides(["--workdir", "r", "--config.sample.steps=64", "--config.model.dtype", "bfloat16", "--num", "4"])
    assert overrides == {"sample.steps": "64", "model.dtype": "bfloat16"}
    assert rest == ["--workdir", "r", "--num", "4"]
    with pytest.raises(ValueError, match="has no value"):
        cli.split_overrides(["--config.sample.steps"])


def test_values_take_the_type_the_key_holds():
    cfg = test_config.get_config()
    new = cli.apply_overrides(
        cfg, {"sample.steps": "64", "sample.modality": "3", "model.joint.aligned": "true", "model.video.patch": "(1, 2, 2)", "model.dtype": "bfloat16"}
    )
    assert new.sample.steps == 64 and isinstance(new.sample.modality, float) and new.sample.modality == 3.0
    assert new.model.joint.aligned is True and tuple(new.model.video.patch) == (1, 2, 2) and new.model.dtype == "bfloat16"
    assert cfg.sample.steps != 64  # a copy: the caller's config is unchanged
    for overrides, message in (
        ({"sample.steps": "6.5"}, "write a number"),
        ({"model.joint.aligned": "maybe"}, "true or false"),
        ({"model.video.patch": "7"}, "write a tuple"),
        ({"model.jont.mode": "none"}, "did you mean model.joint.mode"),
        ({"model.joint": "x"}, "is a group"),
    ):
        with pytest.raises(ValueError, match=message):
            cli.apply_overrides(cfg, overrides)


def test_run_main_turns_jav_errors_into_one_line(monkeypatch):
    def main(argv):
        raise FileNotFoundError("runs/x/config.json not found")

    monkeypatch.delenv("JAV_TRACEBACK", raising=False)
    with pytest.raises(SystemExit, match="^tool: FileNotFoundError: runs/x/config.json not found$"):
        cli.run_main("tool", main, [])
    monkeypatch.setenv("JAV_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        cli.run_main("tool", main, [])


def test_complete_fills_what_an_older_config_lacks_and_keeps_the_rest():
    cfg = test_config.get_config()
    assert schema.missing_keys(cfg.model, schema.model()) == []  # configs are built from the schema
    old = ml_collections.ConfigDict(cfg.to_dict())
    old.model.joint.mode = "joint_attn"
    del old.model.joint["time_bias"], old.model["norm"], old.sample["sampler"], old.train["grad_accum"]
    assert set(schema.missing_keys(old.model, schema.model())) == {"joint.time_bias", "norm"}
    new = schema.complete(old)
    assert (new.phase, new.model.joint.time_bias, new.model.norm, new.sample.sampler, new.train.grad_accum) == ("diffusion", 0.0, "layer", "ode", 1)
    assert new.model.joint.mode == "joint_attn" and new.sample.steps == cfg.sample.steps  # what it had stays
    with pytest.raises(ValueError, match="lacks model.joint.time_bias, model.norm; build it with jav.schema.model"):
        av_dit.validate_config(old.model)
    av_dit.validate_config(new.model)


def test_other_phases_keep_their_own_model_sections():
    from configs import video_vae

    cfg = video_vae.get_config("demo")
    new = schema.complete(cfg)
    assert new.phase == cfg.phase and new.model.to_dict() == cfg.model.to_dict() and "sample" not in new
