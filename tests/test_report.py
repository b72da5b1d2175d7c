"""The report page: built from evaluation directories, opened in a real headless Chromium.

No model is needed: bounce-world clips written the way `jav.evaluate` writes its
samples stand in for a run's output.
"""

import html.parser
import json
import os
import pathlib

import pytest

from configs import test as test_config
from jav import report
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.evaluate import world_params
from jav.data.bounce import generate_clip
from jav.sample import write_sample


def fake_evaluation(out: pathlib.Path, workdir: pathlib.Path, cfg, step: int, steps: int, num: int = 2, task: str = "t2va"):
    """`num` real clips written as jav.evaluate writes a task's samples (OUT/TASK/NNN.* and summary.json)."""
    world = world_params(cfg)
    clips = [generate_clip(1_000_000 + i, world) for i in range(num)]
    results = []
    for i, clip in enumerate(clips):
        audio = clips[(i + step) % num].audio  # a later "checkpoint" hears another clip: metrics that differ
        m = clip_metrics(clip.frames, audio, clip.caption, world)
        results.append(m)
        info = dict(
            task=task,
            prompt=clip.caption,
            workdir=str(workdir),
            checkpoint_step=step,
            seed=i,
            steps=steps,
            caption_seed=1_000_000 + i,
            guidance=dict(text_video=3.0, text_audio=1.0, modality=1.0),
            metrics=m,
        )
        write_sample(out / task, i, clip.frames, audio, cfg, info)
    summary = dict(
        task=task,
        workdir=str(workdir),
        checkpoint_step=step,
        num=num,
        caption_seed=1_000_000,
        steps=steps,
        guidance=dict(text_video=3.0, text_audio=1.0, modality=1.0),
        metrics=aggregate(results),
        reference_metrics=aggregate(results),
        unrelated_metrics=aggregate(results),
    )
    (out / task / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = test_config.get_config()
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(cfg.to_json_best_effort())
    (run / "metrics.jsonl").write_text("".join(json.dumps(dict(step=s, loss=1.0 / s)) + "\n" for s in (10, 20, 30)) + '{"step": 4')
    fake_evaluation(run / "evals" / "step_10", run, cfg, step=10, steps=8)
    fake_evaluation(run / "evals" / "step_30", run, cfg, step=31, steps=8)
    fake_evaluation(root / "nfe", run, cfg, step=31, steps=16)
    return report.build([str(run), str(root / "nfe")], root / "out", clips=2, log=lambda _: None)


class Sources(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.videos, self.images, self.cells = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "video":
            self.videos.append(attrs["src"])
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        self.cells.append(data.strip())


def test_the_page_names_every_clip_plot_and_real_clip(page):
    found = Sources()
    found.feed(page.read_text())
    # 3 evaluations x 2 clips, each beside its real clip (the same two captions: written once)
    assert len(found.videos) == 12 and len(set(found.videos)) == 8
    assert sum(v.startswith("media/real/") for v in set(found.videos)) == 2
    plots = {pathlib.Path(i).name for i in found.images if i.startswith("plots/")}
    # the loss curve; each of the four metrics against the step (steps 10, 31) and against NFE (16 and 32 at step 31)
    assert plots == {"loss.png"} | {f"{m}_vs_{x}.png" for m in ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1") for x in ("step", "nfe")}
    for src in found.videos + found.images:
        assert (page.parent / src).is_file(), src
    summary = json.loads((page.parent.parent / "nfe" / "t2va" / "summary.json").read_text())
    assert f"{summary['metrics']['sync_error_ms']:.3f}" in found.cells  # the table holds the summary's numbers
    # NFE: steps x guidance passes (x2 for two stages); a distilled student's summary says its own
    assert report.nfe_of(summary) == 32 and report.nfe_of(dict(summary, two_stage=True)) == 64
    assert report.nfe_of(dict(steps=4, guidance=dict(modality=3.0))) == 8 and report.nfe_of(dict(summary, nfe=4)) == 4
    with pytest.raises(ValueError, match="holds no samples"):
        report.build([str(page.parent / "plots")], page.parent / "again", log=lambda _: None)


def test_chromium_loads_every_video_and_image(page):
    """In a real headless Chromium: every <video> decodes (H.264 + AAC: metadata, a duration, its
    frame size) and every <img> has pixels. Without Chromium it is skipped, except where
    JAV_REQUIRE_BROWSER=1 (make test sets it, and installs Chromium)."""
    try:
        driver = report.browser()
    except FileNotFoundError as e:
        if os.environ.get("JAV_REQUIRE_BROWSER") == "1":
            raise
        pytest.skip(str(e))
    try:
        driver.get(page.resolve().as_uri())
        driver.set_script_timeout(60)
        state = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const videos = [...document.querySelectorAll('video')], images = [...document.querySelectorAll('img')];
            const ready = v => v.readyState >= 1 || v.error;
            const check = () => {
              if (videos.every(ready) && images.every(i => i.complete)) {
                done({videos: videos.map(v => [v.getAttribute('src'), v.readyState, v.duration, v.videoWidth, v.error && v.error.code]),
                      images: images.map(i => [i.getAttribute('src'), i.naturalWidth])});
              } else setTimeout(check, 100);
            };
            check();""")
    finally:
        driver.quit()
    assert len(state["videos"]) == 12 and len(state["images"]) == 12 + 9
    for src, ready, duration, width, error in state["videos"]:
        assert error is None and ready >= 1 and abs(duration - 2.0) < 0.2 and width == 32, (src, ready, duration, width, error)
    for src, width in state["images"]:
        assert width > 0, src
