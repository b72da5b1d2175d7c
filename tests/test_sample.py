"""`python -m jav.sample` and `python -m jav.evaluate` on a run trained for two steps."""

import json
import pathlib

import jax
import numpy as np
import pytest

from configs import test as test_config
from jav import media
from jav.clip_tokens import TokenLayout, mel_params
from jav.data import mel, synthetic
from jav.train.diffusion import train

PROMPTS = ["a red ball bouncing on a navy background", "a blue ball and a green ball bouncing on a dark background"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    shards = tmp_path_factory.mktemp("shards")
    synthetic.main(["--out", str(shards), "--num", "4", "--records-per-shard", "4"])
    cfg = test_config.get_config()
    cfg.data.dir = str(shards)
    cfg.train.steps = 2
    cfg.train.log_every = 1
    cfg.train.eval_every = 2  # the trainer's held-out samples at step 2 (test_the_trainer_samples_held_out_clips)
    cfg.eval.update(num=2, tasks="t2va", media=1)
    cfg.sample.steps = 2
    workdir = tmp_path_factory.mktemp("run")
    train(cfg, str(workdir), log=lambda _: None)
    return workdir


def event_values(workdir) -> dict:
    """TensorBoard tag -> which of simple_value / image / audio it holds, read from the run's event files."""
    import struct

    from tensorboardX.proto import event_pb2

    found = {}
    for path in (workdir / "tensorboard").glob("events.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):  # TFRecord: length (u64), its crc (u32), the record, its crc (u32)
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 16 + length
            for value in event.summary.value:
                found.setdefault(value.tag, set()).add(value.WhichOneof("value"))
    return found


def test_the_trainer_samples_held_out_clips(run_dir):
    """train.eval_every: the trainer samples cfg.eval.num held-out captions, writes them as
    jav.evaluate does (WORKDIR/evals/step_NNNNNNN/TASK/), logs their metrics and the first clip's
    contact sheet and sound to TensorBoard; jav.report reads the directory."""
    from jav import report

    out = run_dir / "evals" / "step_0000002" / "t2va"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num"] == 2 and summary["checkpoint_step"] == 2 and summary["nfe"] == 2  # 2 steps, one pass each (no guidance in configs/test.py)
    assert sorted(p.name for p in out.glob("*.mp4")) == ["000.mp4", "001.mp4"]
    frames, _, _, _ = media.read_mp4(out / "000.mp4")
    assert frames.shape == TokenLayout.from_config(test_config.get_config()).video_shape[:3] + (3,)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 2 and logged[-1]["eval_t2va_sync_error_ms"] == pytest.approx(summary["metrics"]["sync_error_ms"], nan_ok=True)
    assert "eval_t2va_event_f1" in logged[-1] and "eval_t2va_event_f1" not in logged[0]
    tags = event_values(run_dir)
    assert tags["samples/t2va/0"] == {"image", "audio"} and "samples/t2va/1" not in tags
    assert tags["eval_t2va_colour_accuracy"] == {"simple_value"}
    assert [e.label for e in report.find_evaluations(run_dir, "run")] == ["run/evals/step_0000002/t2va"]


def test_sample_writes_muxed_mp4_wav_and_settings(run_dir, tmp_path, capsys):
    from jav import sample

    cfg = test_config.get_config()
    layout = TokenLayout.from_config(cfg)
    image = np.zeros(layout.video_shape[1:3] + (3,), np.uint8)
    image[8:16, 4:12] = (230, 50, 50)
    media.write_png(tmp_path / "first.png", image)
    out = tmp_path / "out"
    paths = sample.main(
        [
            "--workdir",
            str(run_dir),
            "--out",
            str(out),
            "--steps",
            "2",
            "--seed",
            "3",
            "--profile",
            str(tmp_path / "trace"),
            "--image",
            str(tmp_path / "first.png"),
        ]
        + sum((["--prompt", p] for p in PROMPTS), [])
    )
    assert [p.name for p in paths] == ["000.mp4", "001.mp4"]
    jax.effects_barrier()
    captured = capsys.readouterr()
    assert "step 2/2" in captured.err  # the progress line (one per quarter in a log)
    # --profile: a trace of the one batch (with its compile), which TensorBoard's profile plugin reads
    assert "profiled batch 1 (with its compile)" in captured.out and list((tmp_path / "trace").rglob("*.xplane.pb"))
    for i, prompt in enumerate(PROMPTS):
        frames, fps, wave, rate = media.read_mp4(out / f"{i:03d}.mp4")
        assert frames.shape == layout.video_shape[:3] + (3,) and fps == cfg.data.fps
        assert rate == cfg.data.sample_rate and abs(len(wave) - cfg.data.duration * rate) < 0.1 * rate
        # I2VA: the first temporal patch is the given image (held clean), up to H.264
        assert np.abs(frames[0].astype(float) - image).mean() < 4.0
        info = json.loads((out / f"{i:03d}.json").read_text())
        assert info["prompt"] == prompt and info["steps"] == 2 and info["seed"] == 3 + i and info["checkpoint_step"] == 2
        assert info["image"].endswith("first.png") and info["weights"] == "ema"
        assert media.read_wav(out / f"{i:03d}.wav")[1] == cfg.data.sample_rate


def test_prompt_file_seeds_each_clip_and_a_rerun_skips_finished_ones(run_dir, tmp_path, capsys):
    """--prompts FILE (JSON lines): each clip's seed is the file's or --seed + i, and
    is recorded; rerunning the command writes nothing new. (That a clip's noise
    depends on its seed alone is tests/test_generate.py's.)"""
    from jav import sample

    rows = [{"prompt": PROMPTS[0], "seed": 11}, {"prompt": PROMPTS[1], "seed": 5, "negative_prompt": "a green ball"}, {"prompt": PROMPTS[0]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    common = ["--workdir", str(run_dir), "--steps", "2", "--seed", "100", "--cfg-video", "2"]
    sample.main(common + ["--out", str(out), "--prompts", str(tmp_path / "p.jsonl"), "--batch", "3"])
    infos = [json.loads((out / f"{i:03d}.json").read_text()) for i in range(3)]
    assert [i["seed"] for i in infos] == [11, 5, 102]
    assert [i["negative_prompt"] for i in infos] == [None, "a green ball", None]
    printed = capsys.readouterr().out
    assert "3/3 done" in printed and "clips/s, ETA" in printed
    before = (out / "000.mp4").stat().st_mtime_ns
    paths = sample.main(common + ["--out", str(out), "--prompts", str(tmp_path / "p.jsonl"), "--batch", "3"])
    assert [p.name for p in paths] == ["000.mp4", "001.mp4", "002.mp4"] and (out / "000.mp4").stat().st_mtime_ns == before
    assert "all 3 clips are already in" in capsys.readouterr().out
    rows[1]["negative_prompt"] = "a red ball"  # a changed negative prompt makes that clip again, and only it
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sample.main(common + ["--out", str(out), "--prompts", str(tmp_path / "p.jsonl"), "--batch", "3"])
    assert "sampling 1 clip(s) (2 already in" in capsys.readouterr().out
    assert json.loads((out / "001.json").read_text())["negative_prompt"] == "a red ball"
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not JSON"):
        sample.main(common + ["--out", str(out), "--prompts", str(tmp_path / "bad.jsonl")])


def test_audio_condition_is_the_files_log_mel(tmp_path):
    from jav.sample import conditions_from_files

    cfg = test_config.get_config()
    layout = TokenLayout.from_config(cfg)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(44100 * 3)).astype(np.float32)  # 3 s at 44.1 kHz: resampled and cut to 2 s
    media.write_wav(tmp_path / "a.wav", wave, 44100)
    cond = conditions_from_files(cfg, layout, 2, None, str(tmp_path / "a.wav"))
    assert cond["audio"].shape == (2,) + layout.audio_shape
    resampled, _ = media.read_wav(tmp_path / "a.wav", cfg.data.sample_rate)
    want = mel.waveform_to_logmel(resampled[:32000], mel_params(cfg))
    np.testing.assert_allclose(cond["audio"][1], want, atol=1e-5)


def test_bad_inputs_name_the_problem(run_dir, tmp_path):
    from jav import sample

    with pytest.raises(FileNotFoundError, match="config.json not found"):
        sample.load_run(tmp_path)
    media.write_png(tmp_path / "big.png", np.zeros((64, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="is 48x64; this model makes 32x32"):
        sample.main(["--workdir", str(run_dir), "--out", str(tmp_path), "--prompt", "x", "--image", str(tmp_path / "big.png")])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        media.read_image(tmp_path / "bad.png")


def test_a_runs_builtin_text_encoder_loads_as_a_frozen_encoder(run_dir):
    from jav.frozen_text_encoder import load_text_encoder
    from jav.runs import load_run

    cfg, model, step = load_run(run_dir, step=2)
    assert step == 2 and cfg.model.text.encoder == "builtin"
    emb, mask = load_text_encoder(f"builtin:{run_dir}").encode(PROMPTS)
    want, want_mask = model.text_encoder.encode(PROMPTS)
    np.testing.assert_allclose(emb, np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mask, np.asarray(want_mask))
    assert emb.shape == (len(PROMPTS), cfg.model.text.max_len, cfg.model.text.width)


def test_evaluate_scores_held_out_captions(run_dir, tmp_path):
    from jav import evaluate

    s = evaluate.main(["--workdir", str(run_dir), "--num", "2", "--steps", "2", "--out", str(tmp_path), "--batch", "2"])["t2va"]
    assert s["num"] == 2 and s["checkpoint_step"] == 2 and s["task"] == "t2va"
    assert set(s["metrics"]) >= {"colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1"}
    # the ceiling is the real clips of the same seeds, which the metrics must pass
    assert s["reference_metrics"]["colour_accuracy"] == 1.0 and s["reference_metrics"]["pitch_agreement"] == 1.0
    infos = [json.loads((tmp_path / "t2va" / f"{i:03d}.json").read_text()) for i in range(2)]
    assert [i["caption_seed"] for i in infos] == [evaluate.HELD_OUT_SEED, evaluate.HELD_OUT_SEED + 1]
    assert all("colour_accuracy" in i["metrics"] for i in infos)
    written = json.loads((tmp_path / "t2va" / "summary.json").read_text())["metrics"]
    np.testing.assert_equal(written, s["metrics"])  # NaN-aware: a 2-step sample may hear no burst


def test_evaluate_conditional_tasks_keep_the_given_modality(run_dir, tmp_path):
    """V2A is scored on the real frames, A2V on the real soundtrack, I2VA starts from the real first
    frame; the unrelated-sound floor pairs each real video with another clip's real audio."""
    from jav import evaluate
    from jav.data.bounce import generate_clip

    cfg = test_config.get_config()
    world = evaluate.world_params(cfg)
    out = tmp_path / "eval"
    s = evaluate.main(["--workdir", str(run_dir), "--num", "3", "--steps", "2", "--out", str(out), "--batch", "2", "--tasks", "i2va,v2a,a2v"])
    assert list(s) == ["i2va", "v2a", "a2v"]
    clips = [generate_clip(evaluate.HELD_OUT_SEED + i, world) for i in range(3)]
    for i, clip in enumerate(clips):
        frames, _, wave, _ = media.read_mp4(out / "v2a" / f"{i:03d}.mp4")
        assert np.abs(frames.astype(float) - clip.frames).mean() < 4.0  # the given video, up to H.264
        a2v_wave, _ = media.read_wav(out / "a2v" / f"{i:03d}.wav")
        np.testing.assert_allclose(a2v_wave, clip.audio, atol=1e-4)  # the given soundtrack, as 16-bit PCM
        first, *_ = media.read_mp4(out / "i2va" / f"{i:03d}.mp4")
        pt = cfg.model.video.patch[0]
        assert np.abs(first[:pt].astype(float) - clip.frames[:pt]).mean() < 6.0
    for task in s:
        assert s[task]["task"] == task and json.loads((out / task / "001.json").read_text())["task"] == task
    # real clips sync to their own video far better than to another clip's
    assert s["v2a"]["reference_metrics"]["event_f1"] > 0.9 > s["v2a"]["unrelated_metrics"]["event_f1"]
    with pytest.raises(ValueError, match="not one of"):
        evaluate.main(["--workdir", str(run_dir), "--num", "1", "--tasks", "x2y"])


def test_sampling_settings_are_the_runs_config_keys(run_dir, tmp_path):
    """`--config.KEY=VALUE` changes the run's config for one evaluation: the sampler, its steps and
    guidance come from `sample.*`; a misspelt key or a bad value is one line naming the flag."""
    from jav import cli, evaluate

    out = tmp_path / "eval"
    s = evaluate.main(
        [
            "--workdir",
            str(run_dir),
            "--num",
            "1",
            "--out",
            str(out),
            "--batch",
            "1",
            "--config.sample.steps=3",
            "--config.sample.modality",
            "1.5",
            "--config.sample.sampler=sde",
            "--config.sample.noise_level=0.5",
        ]
    )["t2va"]
    info = json.loads((out / "t2va" / "000.json").read_text())
    assert (s["steps"], info["steps"], s["sampler"], info["sampler"], s["noise_level"]) == (3, 3, "sde", "sde", 0.5)
    assert s["guidance"]["modality"] == 1.5
    for flag, message in (
        ("--config.sample.stpes=2", "has no key 'sample.stpes'; did you mean sample.steps"),
        ("--config.sample.steps=two", "--config.sample.steps='two': write a number"),
        ("--config.sample=2", "is a group"),
    ):
        with pytest.raises(SystemExit, match=message):
            cli.run_main("jav.evaluate", evaluate.main, ["--workdir", str(run_dir), "--num", "1", "--out", str(out), flag])


def test_a_run_written_before_a_key_existed_loads_with_its_default(run_dir, tmp_path):
    """A config.json that lacks keys added later (jav.schema) loads with each at its default."""
    from jav.runs import load_config, load_run

    old = json.loads((run_dir / "config.json").read_text())
    for section, key in (("sample", "sampler"), ("sample", "noise_level"), ("train", "trainable")):
        del old[section][key]
    del old["model"]["joint"]["adaln"], old["model"]["lora"], old["model"]["attention"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    (tmp_path / "old" / "checkpoints").symlink_to(run_dir / "checkpoints")
    cfg, model, step = load_run(tmp_path / "old")
    assert step == 2 and cfg.sample.sampler == "ode" and cfg.model.joint.adaln == "shared" and cfg.model.lora.rank == 0
    assert cfg.model.attention.kernel == "xla" and cfg.train.trainable == "auto"
    assert load_config(tmp_path / "old").to_dict() == cfg.to_dict()


def test_v2a_from_an_mp4_keeps_its_frames_and_generates_their_soundtrack(run_dir, tmp_path):
    from jav import sample
    from jav.clip_tokens import frames_to_model
    from jav.data.bounce import generate_clip

    cfg = test_config.get_config()
    clip = generate_clip(1_000_000)
    media.write_mp4(tmp_path / "in.mp4", np.concatenate([clip.frames, clip.frames[:4]]), 8.0)  # longer than the model's 2 s
    frames, _, _, _ = media.read_mp4(tmp_path / "in.mp4")
    cond = sample.conditions_from_files(cfg, TokenLayout.from_config(cfg), 2, None, None, str(tmp_path / "in.mp4"))
    assert cond["video"].shape == (2,) + TokenLayout.from_config(cfg).video_shape
    np.testing.assert_allclose(cond["video"][1], frames_to_model(frames[:16]), atol=1e-6)

    (path,) = sample.main(
        ["--workdir", str(run_dir), "--out", str(tmp_path / "out"), "--prompt", clip.caption, "--video", str(tmp_path / "in.mp4"), "--steps", "2"]
    )
    out_frames, _, wave, _ = media.read_mp4(path)
    assert np.abs(out_frames.astype(float) - frames[:16]).mean() < 3.0  # the given video, through H.264 twice
    assert wave is not None and json.loads(path.with_suffix(".json").read_text())["video"] == str(tmp_path / "in.mp4")

    media.write_mp4(tmp_path / "fast.mp4", clip.frames, 16.0)
    with pytest.raises(ValueError, match="runs at 16 fps; this model's video is 8 fps"):
        sample.conditions_from_files(cfg, TokenLayout.from_config(cfg), 1, None, None, str(tmp_path / "fast.mp4"))
    with pytest.raises(SystemExit):
        sample.main(["--workdir", str(run_dir), "--out", str(tmp_path), "--prompt", "x", "--video", "a.mp4", "--audio", "b.wav"])


def test_a_prompt_file_mixes_tasks_row_by_row(run_dir, tmp_path, capsys):
    """JSON lines may give each row its own condition file (and so its task): the rows of
    each task are sampled together, each with its own file, and every clip records its task."""
    from jav import sample
    from jav.data.bounce import generate_clip

    clips = [generate_clip(1_000_000 + i) for i in range(2)]
    for i, clip in enumerate(clips):
        media.write_mp4(tmp_path / f"v{i}.mp4", clip.frames, 8.0)
    media.write_wav(tmp_path / "a.wav", clips[0].audio, 16000)
    rows = [
        {"prompt": clips[0].caption, "video": str(tmp_path / "v0.mp4")},
        {"prompt": PROMPTS[0]},
        {"prompt": clips[1].caption, "video": str(tmp_path / "v1.mp4"), "task": "v2a"},
        {"prompt": clips[0].caption, "audio": str(tmp_path / "a.wav")},
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    # batches of 1 at 2 steps: the sampler the V2A test above compiled
    sample.main(["--workdir", str(run_dir), "--out", str(out), "--prompts", str(tmp_path / "p.jsonl"), "--steps", "2", "--batch", "1"])
    printed = capsys.readouterr().out
    assert "[v2a] 2 clip(s)" in printed and "[t2va] 1 clip(s)" in printed and "[a2v] 1 clip(s)" in printed
    infos = [json.loads((out / f"{i:03d}.json").read_text()) for i in range(4)]
    assert [i["task"] for i in infos] == ["v2a", "t2va", "v2a", "a2v"] and infos[3]["audio"] == str(tmp_path / "a.wav")
    for i in (0, 2):  # each V2A row keeps its own video
        given, _, _, _ = media.read_mp4(tmp_path / f"v{i // 2}.mp4")
        made, _, _, _ = media.read_mp4(out / f"{i:03d}.mp4")
        assert np.abs(made.astype(float) - given).mean() < 3.0
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x", "task": "a2v"}))
    with pytest.raises(ValueError, match="line 1: task 'a2v' needs an 'audio' file"):
        sample.main(["--workdir", str(run_dir), "--out", str(out), "--prompts", str(tmp_path / "bad.jsonl")])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x", "vidoe": "v.mp4"}))
    with pytest.raises(ValueError, match=r"unknown keys \['vidoe'\]"):
        sample.main(["--workdir", str(run_dir), "--out", str(out), "--prompts", str(tmp_path / "bad.jsonl")])


def test_sampling_compiles_once_for_many_batches_and_calls(run_dir):
    """benchmarks/sample_speed.py: after the first batch no batch compiles, though every batch is
    its own `sample_clips` call; clearing the caches per batch (the cost before) compiles each."""
    from benchmarks import sample_speed

    result = sample_speed.measure(str(run_dir), num=6, batch=2, steps=2, log=lambda _: None)
    assert result["compiles_per_batch"][1:] == [0, 0], result
    assert result["clips"] == 6 and result["clips_per_s"] > 0 and result["nfe_per_clip"] >= 2
    before = sample_speed.measure(str(run_dir), num=2, batch=2, steps=2, recompile_each_batch=True, log=lambda _: None)
    assert before["compiles_per_batch"][0] > 0, before  # the counter sees compiles where there are some
    assert jax.config.jax_enable_compilation_cache  # the benchmark put the persistent cache back


def test_duration_and_size_are_chosen_at_sampling(run_dir, tmp_path):
    """--duration / --size: clips of that length and frame size from a model trained on
    2 s at 32 px (positions are seconds and grid places); recorded per clip, and a rerun
    at another duration makes the clip again. A shape the patches cannot tile is refused, naming what fits."""
    from jav import sample

    cfg = test_config.get_config()
    out = tmp_path / "out"
    common = ["--workdir", str(run_dir), "--out", str(out), "--steps", "1", "--prompt", PROMPTS[0]]
    sample.main(common + ["--duration", "3", "--size", "48"])
    frames, fps, wave, rate = media.read_mp4(out / "000.mp4")
    assert frames.shape == (24, 48, 48, 3) and fps == cfg.data.fps and abs(len(wave) - 3 * rate) < 0.1 * rate
    info = json.loads((out / "000.json").read_text())
    assert info["duration"] == 3.0 and info["size"] == 48
    want = dict(prompt=PROMPTS[0], seed=0, negative_prompt=None, task="t2va", image=None, video=None, audio=None)
    assert sample.finished(out, 0, dict(want, duration=3.0, size=48))  # a rerun skips it ...
    assert not sample.finished(out, 0, dict(want, duration=2.5, size=48))  # ... unless its duration (or size) changed
    with pytest.raises(ValueError, match="multiples of 0.25 s always fit"):
        sample.main(common + ["--duration", "2.1"])
    with pytest.raises(ValueError, match="use a multiple of 4 px"):
        sample.main(common + ["--size", "30"])


def test_latent_clip_shapes_follow_the_vaes_compression():
    """In latent space a new duration / size sets the latent shapes from the trained ones:
    the causal VAE's 1 + 4k frames, 8x smaller frames, the audio VAE's 4 hops a latent."""
    from configs import bounce_latent
    from jav.clip_tokens import clip_config

    cfg = bounce_latent.get_config()  # 2.125 s = 17 frames at 8 fps -> 5 latents; 53 audio latents; 32 px -> 4
    c = clip_config(cfg, 4.125, 64)
    layout = TokenLayout.from_config(c)
    assert layout.video_shape == (9, 8, 8, 16) and layout.audio_shape == (103, 128)
    assert clip_config(cfg) is cfg and tuple(cfg.data.video_latent_shape) == (5, 4, 4, 16)  # the run's own config is untouched
    with pytest.raises(ValueError, match=r"needs 1 \+ 4k frames"):
        clip_config(cfg, 4.0)
    with pytest.raises(ValueError, match="multiple of 8 px"):
        clip_config(cfg, size=60)


def test_sampling_on_a_mesh_of_two_processes_gives_the_clips_of_one_device(run_dir, tmp_path):
    """`jav.sample --mesh data=2,fsdp=2,tensor=2` as two processes of 4 simulated CPU devices each
    (launch/local_multiprocess.sh, joined through jav.distributed): the parameters read into
    their shards as the trainer places them, each batch split over data x fsdp (3 prompts
    padded to a batch of 4), every clip gathered to every process and each written once: the
    clips one device makes, each from its own seed."""
    import os
    import subprocess
    import sys

    from jav import sample

    root = pathlib.Path(__file__).resolve().parent.parent
    args = [
        "--workdir",
        str(run_dir),
        "--steps",
        "2",
        "--seed",
        "7",
        "--batch",
        "4",
        "--cfg-video",
        "2",
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        "--prompt",
        "a green ball bouncing on an olive background",
    ]
    sample.main(args + ["--out", str(tmp_path / "one")])
    env = dict(os.environ, PYTHONPATH=str(root), JAV_CPU_DEVICES="4", JAX_ENABLE_COMPILATION_CACHE="true")
    proc = subprocess.run(
        [
            str(root / "launch" / "local_multiprocess.sh"),
            "2",
            sys.executable,
            "-m",
            "jav.sample",
            *args,
            "--out",
            str(tmp_path / "mesh"),
            "--mesh",
            "data=2,fsdp=2,tensor=2",
        ],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on mesh {'data': 2, 'fsdp': 2, 'context': 1, 'tensor': 2}, 2 processes" in proc.stdout
    writers = sorted(line.split("(process ")[1].rstrip(")") for line in proc.stdout.splitlines() if line.startswith("wrote "))
    assert writers == ["0", "0", "1"]  # clips 0 and 2 by process 0, clip 1 by process 1
    for i in range(3):
        one, mesh = (media.read_mp4(tmp_path / d / f"{i:03d}.mp4") for d in ("one", "mesh"))
        assert np.abs(one[0].astype(int) - mesh[0].astype(int)).mean() < 0.5  # frames, up to H.264 and rounding
        np.testing.assert_allclose(media.read_wav(tmp_path / "mesh" / f"{i:03d}.wav")[0], media.read_wav(tmp_path / "one" / f"{i:03d}.wav")[0], atol=2e-3)
        assert json.loads((tmp_path / "mesh" / f"{i:03d}.json").read_text())["seed"] == 7 + i
    with pytest.raises(ValueError, match="write axis sizes as"):
        sample.mesh_of("data:8")
