"""Pictures of clips and of numbers (matplotlib, drawn off-screen): a clip's contact
sheet (frames over time above its log-mel spectrogram) and metric lines. The report
(jav/report.py) and the trainer's evaluation during training use them.
"""

from __future__ import annotations

import pathlib

import numpy as np


def contact_sheet(frames: np.ndarray, fps: float, wave: np.ndarray | None, rate: int | None, path: pathlib.Path, num_frames: int = 8) -> np.ndarray:
    """PNG: `num_frames` frames evenly over the clip above the log-mel spectrogram of its sound,
    the shown frames' times marked on the spectrogram -> the picture as uint8 RGB [H, W, 3]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jav.data import mel

    picks = np.unique(np.linspace(0, len(frames) - 1, min(num_frames, len(frames))).round().astype(int))
    duration = len(frames) / fps
    fig, axes = plt.subplots(2, 1, figsize=(len(picks) * 0.9, 2.2), dpi=110, gridspec_kw=dict(height_ratios=[1, 1]))
    axes[0].imshow(np.concatenate([frames[i] for i in picks], axis=1), interpolation="nearest")
    axes[0].set_xticks([(k + 0.5) * frames.shape[2] for k in range(len(picks))], [f"{i / fps:.2f}s" for i in picks], fontsize=6)
    axes[0].set_yticks([])
    if wave is not None and len(wave):
        logmel = mel.waveform_to_logmel(np.asarray(wave, np.float32), mel.MelParams(sample_rate=rate))
        axes[1].imshow(logmel.T, origin="lower", aspect="auto", extent=(0, len(wave) / rate, 0, logmel.shape[1]), cmap="magma")
        for i in picks:
            axes[1].axvline(i / fps, color="white", lw=0.5, alpha=0.6)
        axes[1].set_xlim(0, duration)
    else:
        axes[1].text(0.5, 0.5, "no sound", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set_yticks([])
    axes[1].tick_params(labelsize=6)
    fig.tight_layout(pad=0.2)
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    fig.savefig(path)
    plt.close(fig)
    return picture


def plot_metric_lines(series: dict, xlabel: str, ylabel: str, path: pathlib.Path) -> None:
    """series: label -> [(x, y)] -> a PNG line plot, one line (with its points) per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for label, points in sorted(series.items()):
        points = sorted(p for p in points if p[1] is not None and np.isfinite(p[1]))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
