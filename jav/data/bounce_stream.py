"""An endless, deterministic stream of bounce-world batches made on the fly, for
training autoencoders without writing shards.

Global batch g holds the clips of seeds `seed + g * B + i` (i < B); each process
makes only its own rows. The stream's state is the next batch's index, so a
resumed run sees exactly the batches an uninterrupted one would. Held-out
clips (`heldout_batch`) use seeds from HELDOUT_SEED up, a range no training
stream reaches before 10^9 clips, so evaluation never sees a training clip.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jav.data import bounce, mel

HELDOUT_SEED = 1_000_000_000
FIELDS = ("video", "logmel", "wave", "events", "colours", "background", "sounds")  # what data.fields may name
DEFAULT_FIELDS = ("video", "logmel", "wave")


def bounce_params(data_cfg) -> bounce.BounceParams:
    """BounceParams with the config's overrides (canvas, fps, duration, sample_rate)."""
    keys = ("canvas", "fps", "duration", "sample_rate")
    return dataclasses.replace(bounce.BounceParams(), **{k: data_cfg[k] for k in keys if k in data_cfg})


def contact_frames(clip: bounce.Clip, params: bounce.BounceParams) -> np.ndarray:
    """[T] float32: 1 for each video frame f whose interval [f, f + 1) / fps holds a contact of any disc."""
    events = np.zeros(params.num_frames, np.float32)
    for disc in clip.metadata["discs"]:
        for time, _, _ in disc["contacts"]:
            events[min(int(time * params.fps), params.num_frames - 1)] = 1.0
    return events


def clip_arrays(seed: int, params: bounce.BounceParams, fields=DEFAULT_FIELDS, mel_params: mel.MelParams | None = None) -> dict:
    """One clip's arrays: video [T, H, W, 3] float32 in [-1, 1], logmel [Ta, n_mels]
    (jav.data.mel's normalisation), wave [S] float32, events [T] (`contact_frames`),
    and what its caption says: colours [P] float32 (1 for each palette colour, in
    `params.palette`'s order, that has a disc), background int32 (its index in
    `params.backgrounds`), sounds [P] float32 (1 for each colour whose disc makes a
    contact, so its pitch sounds, inside the clip); only the `fields` asked for."""
    clip = bounce.generate_clip(seed, params)
    out = {}
    if "video" in fields:
        out["video"] = clip.frames.astype(np.float32) / 127.5 - 1.0
    if "logmel" in fields:
        out["logmel"] = mel.waveform_to_logmel(clip.audio, mel_params or mel.MelParams(sample_rate=params.sample_rate))
    if "wave" in fields:
        out["wave"] = clip.audio
    if "events" in fields:
        out["events"] = contact_frames(clip, params)
    palette = list(params.palette)
    discs = clip.metadata["discs"]
    if "colours" in fields:
        out["colours"] = np.isin(palette, [d["colour"] for d in discs]).astype(np.float32)
    if "background" in fields:
        out["background"] = np.int32(list(params.backgrounds).index(clip.metadata["background"]))
    if "sounds" in fields:
        out["sounds"] = np.isin(palette, [d["colour"] for d in discs if len(d["contacts"])]).astype(np.float32)
    return out


def stack(seeds, params: bounce.BounceParams, fields=DEFAULT_FIELDS) -> dict:
    clips = [clip_arrays(int(s), params, fields) for s in seeds]
    return {k: np.stack([c[k] for c in clips]) for k in fields}


def heldout_batch(data_cfg, num: int, start: int = 0) -> dict:
    """`num` held-out clips (seeds HELDOUT_SEED + start ...), fields as the config asks."""
    fields = tuple(data_cfg.get("fields", DEFAULT_FIELDS))
    return stack(range(HELDOUT_SEED + start, HELDOUT_SEED + start + num), bounce_params(data_cfg), fields)


class SeedStream:
    """The seeds of this process's rows of each global batch: global batch g holds seeds
    `seed + g * batch_size + i` (i < batch_size), this process rows [index * n, (index + 1) * n)
    with n = batch_size / count. The state is the next batch's index (get_state / set_state),
    so a resumed run sees exactly the batches an uninterrupted one would. Subclasses make a
    batch from `next_seeds()` in `__next__`."""

    def __init__(self, seed: int, batch_size: int, *, index: int = 0, count: int = 1):
        if batch_size % count:
            raise ValueError(f"batch size {batch_size} is not divisible by the {count} data shards")
        if not 0 <= seed < HELDOUT_SEED // 2:
            raise ValueError(f"data.seed={seed} must be in [0, {HELDOUT_SEED // 2}) so training never meets the held-out clips")
        self.seed, self.batch_size = int(seed), batch_size
        self.rows = range(index * (batch_size // count), (index + 1) * (batch_size // count))
        self.next_batch = 0

    def __iter__(self):
        return self

    def next_seeds(self) -> list[int]:
        base = self.seed + self.next_batch * self.batch_size
        self.next_batch += 1
        return [base + r for r in self.rows]

    def get_state(self) -> dict:
        return {"next_batch": self.next_batch}

    def set_state(self, state: dict) -> None:
        self.next_batch = int(state["next_batch"])


class BounceStream(SeedStream):
    """Iterator of this process's rows of each global batch (`SeedStream`), as numpy dicts
    of the fields `data.fields` names."""

    def __init__(self, data_cfg, batch_size: int, *, index: int = 0, count: int = 1):
        fields = tuple(data_cfg.get("fields", DEFAULT_FIELDS))
        unknown = [f for f in fields if f not in FIELDS]
        if unknown or not fields:
            raise ValueError(f"data.fields={fields}: each must be one of {FIELDS}")
        super().__init__(data_cfg.seed, batch_size, index=index, count=count)
        self.params = bounce_params(data_cfg)
        self.fields = fields

    def __next__(self) -> dict:
        return stack(self.next_seeds(), self.params, self.fields)
