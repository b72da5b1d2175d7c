"""The step-time benchmark runs against the trainer's current internals (it builds
batches and steps the way jav.train does, so a change there must keep it working)."""

from benchmarks import step_time
from benchmarks.model_stats import load_config


def test_step_time_runs_a_config_and_reports_mfu():
    result = step_time.run("configs/test.py", batch=2, steps=1, peak=1e12, log=lambda _: None)
    assert result["batch"] == 2 and result["step_s_median"] > 0 and result["params"] > 0
    assert 0 < result["mfu"] < 1 and result["train_flops_per_step"] > 0
    assert result["tokens_per_sample"]["video"] > 0 and result["tokens_per_sample"]["audio"] > 0
    # the training phase's own state and step: the EMA update is timed as jav.train runs it
    assert result["ema_decay"] == load_config("configs/test.py").train.ema_decay > 0
