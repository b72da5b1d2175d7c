"""One HTML page to look at runs and their samples.

    python -m jav.report RUN_OR_SAMPLES_DIR [MORE ...] --out REPORT_DIR [--num 8] [--title TEXT] [--screenshot PNG]

Each argument is a run directory (its training curve from metrics.jsonl, the
evaluations the trainer wrote under evals/ and those of `jav.evaluate` under
samples/), a `jav.evaluate --out` directory (TASK/summary.json), one task's
directory, or a `jav.sample --out` directory (NNN.mp4 + NNN.json, no metrics).
REPORT_DIR/index.html then holds:

- a table of the world's metrics per run, checkpoint, task and sampling setting,
  with the real clips (the ceiling) and unrelated sound (the floor) under them;
- per-metric plots (PNG): each metric against the training step (one line per
  run, task and sampling setting) and against the network passes per clip (NFE);
  the training loss against the step;
- a grid of sample videos that play with their sound, each with its contact sheet
  (frames over time above the log-mel spectrogram, with the frame times marked)
  and its metrics, beside the real clip of the same caption where the world
  and seed that made it are known.

Every file the page names is copied or written under REPORT_DIR, so the directory
can be moved or served as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import pathlib
import re
import shutil

import numpy as np

from jav import samplers
from jav.plots import contact_sheet, plot_metric_lines

METRICS = (  # key, heading, better
    ("colour_accuracy", "colour", "higher"),
    ("pitch_agreement", "pitch", "higher"),
    ("sync_error_ms", "sync ms", "lower"),
    ("event_f1", "event F1", "higher"),
    ("num_audio_onsets", "onsets", None),
    ("num_video_contacts", "contacts", None),
    ("learned_sync", "learned sync", "higher"),  # jav.evaluate --sync-model: the sync reward model's reading
)
SAMPLE = re.compile(r"^(\d{3,})\.json$")


@dataclasses.dataclass
class Evaluation:
    """One directory of samples: a task's clips, scored (summary.json) or not."""

    label: str
    path: pathlib.Path
    summary: dict  # empty for a `jav.sample` directory
    clips: list[tuple[pathlib.Path, dict]]  # (mp4, its JSON), in index order

    @property
    def settings(self) -> dict:
        """How the samples were made: the summary's record over the first clip's (older summaries lack some keys)."""
        first = {k: v for k, v in (self.clips[0][1] if self.clips else {}).items() if k != "metrics"}
        return dict(first, **{k: v for k, v in self.summary.items() if k != "metrics"})

    @property
    def task(self) -> str:
        return self.settings.get("task", "samples")

    @property
    def step(self):
        return self.settings.get("checkpoint_step")

    @property
    def nfe(self) -> int | None:
        return nfe_of(self.settings)

    @property
    def setting(self) -> str:
        """The sampling setting, as a short label: steps, guidance, sampler, stages."""
        s = self.settings
        g = s.get("guidance") or {}
        parts = [f"{s.get('steps', '?')} steps"]
        parts += [f"{k.replace('text_', 'cfg ')} {v:g}" for k, v in g.items() if isinstance(v, (int, float)) and v != 1]
        if s.get("sampler", "ode") != "ode":
            parts.append(f"{s['sampler']} {s.get('noise_level') or ''}".strip())
        if s.get("two_stage"):
            parts.append("two-stage")
        return ", ".join(parts)


def nfe_of(info: dict) -> int | None:
    """Network passes per clip from a sample's settings: steps x guidance passes (x2 for two stages).
    A distilled student's summary says its own (`nfe`), as it guides in one pass."""
    if "nfe" in info:
        return info["nfe"]
    if "steps" not in info:
        return None
    scales = {k: tuple(v) if k == "stg_blocks" else float(v) for k, v in (info.get("guidance") or {}).items()}
    passes = samplers.passes_per_step(samplers.Guidance(**scales))
    return int(info["steps"]) * passes * (2 if info.get("two_stage") else 1)


# ---- Finding what to show


def find_evaluations(root: pathlib.Path, label: str) -> list[Evaluation]:
    """Every directory under `root` (itself included) holding a summary.json or NNN.json + NNN.mp4 samples."""
    found = []
    dirs = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and "checkpoints" not in p.parts and "tensorboard" not in p.parts)
    for d in dirs:
        clips = sorted((d / f"{m.group(1)}.mp4", m.group(1)) for f in d.iterdir() if (m := SAMPLE.match(f.name)))
        clips = [(mp4, _read_json(d / f"{i}.json")) for mp4, i in clips if mp4.exists()]
        summary = _read_json(d / "summary.json") if (d / "summary.json").exists() else {}
        if summary or clips:
            name = label if d == root else f"{label}/{d.relative_to(root).as_posix()}"
            found.append(Evaluation(name, d, summary, clips))
    return found


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); remove it or rerun what wrote it") from None


def training_curve(root: pathlib.Path) -> list[tuple[int, float]]:
    """(step, loss) from a run directory's metrics.jsonl ([] if none)."""
    path = root / "metrics.jsonl"
    if not path.exists():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
        if "step" in row and "loss" in row:
            points.append((int(row["step"]), float(row["loss"])))
    return points


# ---- The page


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _world_of(workdir: str | None):
    """The bounce world a run was trained on (None if its directory is not here)."""
    from jav.evaluation import world_params
    from jav.runs import load_config

    if not workdir or not (pathlib.Path(workdir) / "config.json").exists():
        return None
    return world_params(load_config(workdir))


def _real_clip(out: pathlib.Path, world, seed: int, cache: dict) -> tuple[str, str]:
    """The real bounce clip of `seed` -> (mp4, contact sheet) paths relative to `out`, written once."""
    from jav.data.bounce import generate_clip
    from jav.media import write_mp4

    key = (repr(world), seed)
    if key not in cache:
        clip = generate_clip(seed, world)
        stem = out / "media" / "real" / _slug(f"{world.canvas}px_{world.fps:g}fps_{world.duration:g}s_{world.sample_rate}Hz_{seed}")
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(stem.with_suffix(".mp4"), clip.frames, world.fps, clip.audio, world.sample_rate)
        contact_sheet(clip.frames, world.fps, clip.audio, world.sample_rate, stem.with_suffix(".png"))
        cache[key] = (stem.with_suffix(".mp4").relative_to(out).as_posix(), stem.with_suffix(".png").relative_to(out).as_posix())
    return cache[key]


def build(inputs: list[str], out, *, clips: int = 8, title: str = "jav report", log=print) -> pathlib.Path:
    """Writes OUT/index.html (and its media and plots) for `inputs` -> the page's path."""
    from jav.media import read_mp4

    out = pathlib.Path(out)
    (out / "media").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    evaluations, curves = [], {}
    for given in inputs:
        root = pathlib.Path(given)
        if not root.is_dir():
            raise FileNotFoundError(f"{given} is not a directory: pass run directories, jav.evaluate or jav.sample output directories")
        label = root.name if root.name not in ("samples", "") else f"{root.parent.name}/{root.name}"
        found = find_evaluations(root, label)
        if curve := training_curve(root):
            curves[label] = curve
        if not found and label not in curves:
            raise ValueError(
                f"{given} holds no samples (NNN.mp4 + NNN.json), no summary.json and no metrics.jsonl: "
                "pass a run directory or a jav.evaluate / jav.sample output directory"
            )
        evaluations += found
    log(f"{len(evaluations)} sample director{'y' if len(evaluations) == 1 else 'ies'}, {len(curves)} training curve(s)")

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=meta>Written {datetime.datetime.now():%Y-%m-%d %H:%M} from {', '.join(html.escape(str(i)) for i in inputs)}.</p>",
    ]
    parts.append(_table(evaluations))
    parts.append(_plots(evaluations, curves, out))
    real_cache, worlds = {}, {}
    parts.append("<h2>Samples</h2>")
    for ev in evaluations:
        shown = ev.clips[:clips]
        if not shown:
            continue
        workdir = ev.summary.get("workdir") or shown[0][1].get("workdir")
        if workdir not in worlds:
            worlds[workdir] = _world_of(workdir)
        world = worlds[workdir]
        parts.append(
            f"<h3>{html.escape(ev.label)} <span class=meta>({html.escape(ev.task)}, step {_fmt(ev.step)}, "
            f"{html.escape(ev.setting)}; {len(shown)} of {len(ev.clips)} clips)</span></h3><div class=grid>"
        )
        media_dir = out / "media" / _slug(ev.label)
        media_dir.mkdir(parents=True, exist_ok=True)
        for mp4, info in shown:
            video = media_dir / mp4.name
            shutil.copyfile(mp4, video)
            frames, fps, wave, rate = read_mp4(mp4)
            sheet = video.with_suffix(".png")
            contact_sheet(frames, fps, wave, rate, sheet)
            m = info.get("metrics") or {}
            cells = [_media_cell("sample", video.relative_to(out).as_posix(), sheet.relative_to(out).as_posix())]
            seed = info.get("caption_seed")
            if world is not None and seed is not None:
                cells.append(_media_cell("real", *_real_clip(out, world, int(seed), real_cache)))
            numbers = " · ".join(f"{h} {_fmt(m[k])}" for k, h, _ in METRICS if k in m)
            parts.append(
                f"<div class=card><p class=caption>{html.escape(info.get('prompt', ''))}</p>"
                f"<div class=pair>{''.join(cells)}</div><p class=meta>seed {info.get('seed', '–')}"
                f"{' · ' + numbers if numbers else ''}</p></div>"
            )
        parts.append("</div>")
        log(f"  {ev.label}: {len(shown)} clip(s)")
    page = out / "index.html"
    page.write_text(_HEAD.format(title=html.escape(title)) + "\n".join(parts) + "\n</body></html>\n")
    log(f"wrote {page}")
    return page


def _media_cell(name: str, video: str, sheet: str) -> str:
    return (
        f"<figure><figcaption>{name}</figcaption><video controls preload=metadata src=\"{html.escape(video)}\"></video>"
        f"<img src=\"{html.escape(sheet)}\" alt=\"contact sheet: {name}\"></figure>"
    )


def _table(evaluations: list[Evaluation]) -> str:
    scored = [ev for ev in evaluations if ev.summary.get("metrics")]
    if not scored:
        return "<p>No scored evaluations (jav.sample directories carry no metrics; jav.evaluate's do).</p>"
    head = "".join(f"<th>{h}{' ↑' if b == 'higher' else ' ↓' if b == 'lower' else ''}</th>" for _, h, b in METRICS)
    rows, floors = [], {}
    for ev in scored:
        s = ev.summary
        rows.append(
            f"<tr><td>{html.escape(ev.label)}</td><td>{html.escape(ev.task)}</td><td>{_fmt(ev.step)}</td>"
            f"<td>{html.escape(ev.setting)}</td><td>{_fmt(ev.nfe)}</td><td>{_fmt(s.get('num'))}</td>"
            + "".join(f"<td>{_fmt(s['metrics'].get(k))}</td>" for k, _, _ in METRICS)
            + "</tr>"
        )
        key = (s.get("caption_seed"), s.get("num"), s.get("workdir"))
        for name in ("reference_metrics", "unrelated_metrics"):
            if s.get(name):
                floors.setdefault(key, {})[name] = s[name]
    for (seed, num, workdir), refs in floors.items():
        for name, label in (("reference_metrics", "real clips"), ("unrelated_metrics", "unrelated sound")):
            if name in refs:
                rows.append(
                    f"<tr class=ref><td>{label}</td><td colspan=3>captions {_fmt(seed)}+ of {html.escape(str(workdir))}</td>"
                    f"<td></td><td>{_fmt(num)}</td>" + "".join(f"<td>{_fmt(refs[name].get(k))}</td>" for k, _, _ in METRICS) + "</tr>"
                )
    return f"<h2>Metrics</h2><table><tr><th>samples</th><th>task</th><th>step</th><th>sampling</th><th>NFE</th><th>clips</th>{head}</tr>{''.join(rows)}</table>"


def _plots(evaluations: list[Evaluation], curves: dict, out: pathlib.Path) -> str:
    scored = [ev for ev in evaluations if ev.summary.get("metrics")]
    images = []
    if curves:
        path = out / "plots" / "loss.png"
        plot_metric_lines({k: v for k, v in curves.items()}, "training step", "loss", path)
        images.append(path)
    for key, heading, better in [m for m in METRICS if m[2]]:
        for axis, xlabel, x_of, group_of in (
            ("step", "training step", lambda ev: ev.step, lambda ev: f"{ev.summary.get('workdir', ev.label)} {ev.task}, {ev.setting}"),
            ("nfe", "network passes per clip (NFE)", lambda ev: ev.nfe, lambda ev: f"{ev.summary.get('workdir', ev.label)} {ev.task}, step {ev.step}"),
        ):
            series = {}
            for ev in scored:
                if x_of(ev) is not None and ev.summary["metrics"].get(key) is not None:
                    series.setdefault(group_of(ev), []).append((x_of(ev), ev.summary["metrics"][key]))
            if any(len({x for x, _ in pts}) > 1 for pts in series.values()):  # a line needs two x values
                path = out / "plots" / f"{key}_vs_{axis}.png"
                plot_metric_lines(series, xlabel, f"{heading} ({better} is better)", path)
                images.append(path)
    if not images:
        return "<h2>Plots</h2><p>Nothing to plot yet: no training curve, and no metric at two steps or two NFEs.</p>"
    return "<h2>Plots</h2><div class=plots>" + "".join(f"<img src=\"{p.relative_to(out).as_posix()}\" alt=\"{p.stem}\">" for p in images) + "</div>"


_HEAD = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
td:first-child, th:first-child, td:nth-child(2), td:nth-child(4) {{ text-align: left; }}
tr.ref td {{ color: #666; font-style: italic; }}
.meta {{ color: #666; font-size: 12px; font-weight: normal; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #ddd; padding: 6px; width: 560px; }}
.caption {{ margin: 0 0 4px; font-weight: 600; }}
.pair {{ display: flex; gap: 8px; }}
figure {{ margin: 0; width: 272px; }}
figcaption {{ font-size: 12px; color: #666; }}
video {{ width: 128px; height: 128px; image-rendering: pixelated; background: #000; }}
figure img {{ width: 272px; display: block; }}
.plots img {{ width: 420px; margin: 4px; }}
</style></head><body>
"""


# ---- A real browser (headless Chromium through Selenium: the suite's page test and --screenshot)

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def browser(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by Selenium, with no network of its own (every flag that would
    reach out is off) -> a webdriver; quit() it. Needs Debian's chromium and chromium-driver
    (/usr/bin/chromium, /usr/bin/chromedriver; `make test` installs them) or JAV_CHROMIUM /
    JAV_CHROMEDRIVER naming others."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = os.environ.get("JAV_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
    driver = os.environ.get("JAV_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
    for path, package in ((binary, "chromium"), (driver, "chromium-driver")):
        if not pathlib.Path(path).exists():
            raise FileNotFoundError(
                f"{path} not found: install Debian's {package} (apt-get install chromium chromium-driver), "
                "or point JAV_CHROMIUM / JAV_CHROMEDRIVER at a Chromium and its driver"
            )
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS + (f"--window-size={width},{height}",):
        options.add_argument(flag)
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver))


def screenshot(page: pathlib.Path, path: pathlib.Path, width: int = 1400) -> pathlib.Path:
    """The whole page, as Chromium draws it, to a PNG `width` pixels wide."""
    driver = browser(width)
    try:
        driver.get(page.resolve().as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(height) + 40, 16000))
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
    return path


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(prog="python -m jav.report", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="run directories, jav.evaluate --out or jav.sample --out directories")
    parser.add_argument("--out", required=True, help="directory for index.html, media/ and plots/")
    parser.add_argument("--num", type=int, default=8, help="sample clips shown per directory (default 8)")
    parser.add_argument("--title", default="jav report")
    parser.add_argument("--screenshot", default=None, help="also save the page as headless Chromium draws it to this PNG")
    args = parser.parse_args(argv)
    page = build(args.inputs, args.out, clips=args.num, title=args.title, log=lambda m: print(m, flush=True))
    if args.screenshot:
        print(f"wrote {screenshot(page, pathlib.Path(args.screenshot))}", flush=True)
    return page


if __name__ == "__main__":
    main()
