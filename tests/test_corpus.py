"""The raw bounce corpus (data_pipelines.corpus) and scoring a run against its truth
(data_pipelines.truth): one file per fault kind, run through the reference stage loop."""

import json

import numpy as np
import pytest

from data_pipelines import corpus, media, truth
from data_pipelines.stages.local import list_inputs, run_local, write_jsonl

KINDS = ["clean", "clean", "duplicate", "zero_byte", "truncated", "no_audio", "no_video", "silent", "frozen", "single_frame", "offset_plus", "offset_minus"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    info = corpus.write_corpus(root, seed=3, kinds=KINDS)
    run = tmp_path_factory.mktemp("run")
    kept, drops = run_local(list_inputs(root))
    write_jsonl(run / "manifest.jsonl", [c.manifest_entry() for c in kept])
    write_jsonl(run / "drops.jsonl", [d.manifest_entry() for d in drops])
    return root, info, run


def test_files_truth_and_sidecars(built):
    root, info, _ = built
    files = info["files"]
    assert [f["fault"] for f in files.values()] == KINDS
    assert json.loads((root / "truth.json").read_text())["files"].keys() == files.keys()
    for name, f in files.items():
        size = (root / name).stat().st_size
        assert (size == 0) == (f["fault"] == "zero_byte")
        # cut times are frame-exact and lie between the shots
        for cut, shot in zip(f["cuts"], f["shots"][1:]):
            assert cut == shot["start"] and abs(cut * f["fps"] - round(cut * f["fps"])) < 1e-9
        lines = (root / name).with_suffix(".txt").read_text().splitlines()
        assert [line.split("\t")[1] for line in lines] == [s["caption"] for s in f["shots"]]
    original = files["clip_0002.mkv"]["duplicate_of"]
    assert files[original]["fault"] == "clean" and files[original]["shots"] == files["clip_0002.mkv"]["shots"]


def test_flac_in_matroska_has_no_audio_delay(built):
    """The writer adds no offset: decoded audio equals the rendered audio from sample 0."""
    root, info, _ = built
    name, f = next((n, f) for n, f in info["files"].items() if f["fault"] == "clean")
    _, wave, _ = corpus.render(f["spec"])
    decoded, rate = media.read_audio(root / name)
    assert rate == f["sample_rate"] and decoded.shape == wave.shape
    np.testing.assert_allclose(decoded, wave, atol=1.5 / 32768)
    lag = np.argmax(np.correlate(decoded[:2000, 0], wave[:2000, 0], "full")) - 1999
    assert lag == 0


def test_offset_fault_shifts_audio_by_300ms(built):
    root, info, _ = built
    name, f = next((n, f) for n, f in info["files"].items() if f["fault"] == "offset_plus")
    _, wave, _ = corpus.render(f["spec"])
    decoded, rate = media.read_audio(root / name)
    shift = round(corpus.OFFSET * rate)
    np.testing.assert_allclose(decoded[shift:], wave[:-shift], atol=1.5 / 32768)


def test_run_meets_every_target_on_the_tiny_corpus(built):
    root, _, run = built
    scores = truth.evaluate(run, root)
    assert scores["files_missing_from_run"] == []
    assert scores["cuts"]["recall"] == 1.0 and scores["cuts"]["precision"] == 1.0
    assert {k: v["caught"] for k, v in scores["faults"].items()} == {k: v["files"] for k, v in scores["faults"].items()}
    assert scores["faults_meet_targets"] and scores["cuts_meet_target"]
    assert scores["clean"]["files_with_false_drops"] == 0 and scores["clean"]["files_with_a_kept_clip"] == 2
    assert scores["captions"]["rate"] == 1.0


def test_evaluation_fails_a_run_that_keeps_everything(built, tmp_path):
    """A run that drops nothing and finds no cuts scores zero: the evaluation can fail."""
    root, info, _ = built
    write_jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"source": str(root / n), "start": 0.0, "end": f["duration"], "scores": {"source_cuts": []}, "caption": None, "audio_offset": 0.0}
            for n, f in info["files"].items()
        ],
    )
    write_jsonl(tmp_path / "drops.jsonl", [])
    scores = truth.evaluate(tmp_path, root)
    assert scores["cuts"]["recall"] == 0.0 and not scores["cuts_meet_target"]
    assert all(v["caught"] == 0 for v in scores["faults"].values()) and not scores["faults_meet_targets"]
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        truth.evaluate(tmp_path / "nowhere", root)


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus kinds"):
        corpus.write_corpus(tmp_path, kinds=["clean", "wobbly"])


def test_corpus_bytes_are_reproducible(tmp_path):
    """Same seed, same bytes (Matroska written bit-exact), whatever the number of workers."""
    one = corpus.write_corpus(tmp_path / "a", seed=1, kinds=["clean", "truncated"])
    two = corpus.write_corpus(tmp_path / "b", seed=1, kinds=["clean", "truncated"], workers=2)
    assert one == two
    for name in one["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_demo_format_lossless_corpus_decodes_to_the_rendered_clip(tmp_path):
    """The control corpus: every file in the demo's format, its video lossless; the
    duplicate stays a lossy copy."""
    info = corpus.write_corpus(tmp_path, seed=2, kinds=["clean", "duplicate"], formats="demo", lossless=True)
    assert info["formats"] == "demo" and info["lossless"]
    for name, f in info["files"].items():
        assert (f["fps"], f["canvas"], f["sample_rate"], f["channels"]) == (8, 32, 16000, 1)
        frames, _ = corpus.render(f["spec"])[:2]
        decoded = media.read_video(tmp_path / name)
        error = np.abs(decoded.astype(int) - frames.astype(int)).max()
        assert (error == 0) == (f["fault"] == "clean"), (name, error)
    with pytest.raises(ValueError, match="formats='wide'"):
        corpus.write_corpus(tmp_path / "x", kinds=["clean"], formats="wide")


def test_command_lines(built, tmp_path, capsys):
    """`python -m data_pipelines.stages.local` and `python -m data_pipelines.truth`, in process."""
    from data_pipelines.stages import local

    root, _, _ = built
    local.main(["--input", str(root), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"{len(KINDS)} files ->" in printed and "sync" in printed and "clips/s" in printed
    truth.main(["--run", str(tmp_path), "--corpus", str(root)])
    scores = json.loads(capsys.readouterr().out)
    assert scores["faults_meet_targets"] and scores["cuts_meet_target"]
