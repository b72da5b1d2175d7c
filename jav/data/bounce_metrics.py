"""The bounce world's metrics, computed only from what a viewer sees and hears.

Every function here reads frames, a waveform and a caption (never the
generator's metadata), so the same code scores generator clips and
model-generated ones; docs/bounce_world.md defines the four metrics.
"""

import math

import numpy as np
import scipy.ndimage
import scipy.optimize
import scipy.signal

from jav.data.bounce import BounceParams, caption_colours

# A pixel is a palette colour when that colour is its nearest named colour (palette
# or background) and is within this RGB distance. With the default colours a blend
# of a disc with a background or with another disc first comes nearest to a third
# palette colour at distance 113, so anti-aliased edges never invent a colour.
COLOUR_TOLERANCE = 100.0
# A visible disc's frame is used for tracking only when at least this fraction of
# its usual area (90th percentile over frames, or the spec's area if larger) shows.
MIN_TRACK_AREA = 0.5
# While touching another disc, a disc is tracked only if it keeps this fraction
# of its usual area, that is when it is the one on top.
TOP_DISC_AREA = 0.95
# Centroid velocities slower than this fraction of the slowest spec speed are
# treated as "not moving" on that axis, so jitter is not read as a turn.
VELOCITY_DEADBAND = 0.05

# Onsets: log-magnitude spectral flux of a Hann STFT (seconds below), comparing
# each frame with the one ONSET_LAG earlier.
ONSET_WINDOW = 0.016
ONSET_HOP = 0.001
ONSET_LAG = 0.004
# Magnitudes are compressed as log(1 + |X| / delta) with delta at least this, and at
# least ONSET_NOISE_RATIO times the median magnitude (the noise floor), so neither
# the spec's -50 dBFS noise nor a noisier model output makes flux of its own.
ONSET_DELTA = 0.3
ONSET_NOISE_RATIO = 6.0
# Only the part of a bin's rise above this many nats counts: noise that starts from
# silence rises a little in every bin, a burst a lot in a few.
ONSET_BIN_RISE = 0.3
# Flux (nats summed over bins) that makes an onset: a generator burst gives 4 to 30
# (median 15), Griffin-Lim output of one 1 to 15, steady noise under 0.5.
ONSET_THRESHOLD = 3.0
ONSET_MIN_GAP = 0.010  # seconds between two onsets
# The flux of this STFT peaks about 2 ms before a sharp onset (measured on
# generator bursts), so that lead is added back.
ONSET_LEAD = 0.002

PITCH_WINDOW = 0.064  # seconds after the onset, per the spec
PITCH_MIN_HZ = 50.0
# A burst's pitch is a disc's when within this many semitones of the disc's
# frequency; palette frequencies are 7 or 8 semitones apart, and generator and
# Griffin-Lim bursts measure within 0.25 of theirs.
PITCH_TOLERANCE_SEMITONES = 2.0


def classify_pixels(frames: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Palette index [T, S, S] of each pixel (order of params.palette), or -1 for none."""
    named = np.asarray(list(params.palette.values()) + list(params.backgrounds.values()), np.float32)
    distance = np.linalg.norm(frames.astype(np.float32)[..., None, :] - named, axis=-1)  # [T, S, S, K]
    nearest = distance.argmin(-1)
    is_palette = (nearest < len(params.palette)) & (distance.min(-1) < COLOUR_TOLERANCE)
    return np.where(is_palette, nearest, -1)


def _visible(labels: np.ndarray, params: BounceParams) -> list[str]:
    third = math.pi * params.radius**2 / 3
    covered = [(labels == index).sum(axis=(1, 2)) >= third for index in range(len(params.palette))]
    return [name for name, c in zip(params.palette, covered) if c.mean() >= 0.5]


def visible_colours(frames: np.ndarray, params: BounceParams = BounceParams()) -> set[str]:
    """Colours whose pixels cover a third of a disc's area in at least half the frames."""
    return set(_visible(classify_pixels(frames, params), params))


def _track(frames: np.ndarray, labels: np.ndarray, colour: str, params: BounceParams) -> np.ndarray:
    index = list(params.palette).index(colour)
    mask = labels == index  # [T, S, S]
    size, radius = params.canvas, params.radius
    grid = np.arange(size) + 0.5
    xs, ys = np.meshgrid(grid, grid)  # [S, S], pixel centres
    count = mask.sum(axis=(1, 2))
    coarse_x = (mask * xs).sum(axis=(1, 2)) / np.maximum(count, 1)
    coarse_y = (mask * ys).sum(axis=(1, 2)) / np.maximum(count, 1)
    near = (xs - coarse_x[:, None, None]) ** 2 + (ys - coarse_y[:, None, None]) ** 2 < (radius + 1.5) ** 2

    # A pixel is a blend of the disc colour over what lies beneath it: the
    # background (its median colour: discs cover a few percent of the canvas) or
    # another disc. Its coverage is its position on the line between the two.
    pixels = frames.astype(np.float32)  # [T, S, S, 3]
    colour_rgb = np.asarray(params.palette[colour], np.float32)
    beneath = [np.median(pixels.reshape(-1, 3), axis=0)] + [np.asarray(rgb, np.float32) for name, rgb in params.palette.items() if name != colour]
    best_alpha, best_residual = np.zeros(mask.shape, np.float32), np.full(mask.shape, np.inf, np.float32)
    for under in beneath:
        direction = colour_rgb - under
        offset = pixels - under
        alpha = offset @ direction / (direction @ direction)
        residual = np.linalg.norm(offset - alpha[..., None] * direction, axis=-1)
        better = residual < best_residual
        best_alpha, best_residual = np.where(better, alpha, best_alpha), np.where(better, residual, best_residual)
    weight = np.where(near & (best_residual < COLOUR_TOLERANCE), np.clip(best_alpha, 0, 1), 0)
    area = weight.sum(axis=(1, 2))
    centre = np.stack([(weight * xs).sum(axis=(1, 2)), (weight * ys).sum(axis=(1, 2))], -1)
    centre /= np.maximum(area, 1e-9)[:, None]

    present = count >= math.pi * radius**2 / 3
    if not present.any():
        return np.full((len(frames), 2), np.nan)
    # An occluded disc loses area on one side and its centroid moves away from it;
    # a disc drawn on top of another keeps its whole area.
    others = scipy.ndimage.binary_dilation((labels >= 0) & ~mask, np.ones((1, 5, 5), bool))
    touching = (others & (weight > 0)).any(axis=(1, 2))
    usual = max(np.percentile(area[present], 90), math.pi * radius**2)
    reliable = present & (area >= MIN_TRACK_AREA * usual) & (~touching | (area >= TOP_DISC_AREA * usual))
    return np.where(reliable[:, None], centre, np.nan)


def disc_track(frames: np.ndarray, colour: str, params: BounceParams = BounceParams()) -> np.ndarray:
    """Sub-pixel centre (x, y) [T, 2] of the disc of `colour`, NaN where it is hidden or occluded.

    The hard palette mask gives a coarse centre; the centre is then the centroid of
    each nearby pixel's coverage, which undoes anti-aliasing.
    """
    return _track(frames, classify_pixels(frames, params), colour, params)


def _line(times: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points."""
    slope, intercept = np.polyfit(times, positions, 1)
    return intercept, slope


def _line_through(time: float, position: float, slope: float) -> tuple[float, float]:
    return position - slope * time, slope


def track_contacts(track: np.ndarray, params: BounceParams = BounceParams()) -> list[tuple[float, int]]:
    """(time, axis) of each wall turn of a centre track [T, 2], sub-frame.

    A turn is a sign change of the velocity on one axis. The frames up to the last
    one moving the old way and from the first one moving the new way are
    unaffected by the bounce; straight lines through up to three of them on each
    side meet at the contact. With a single frame on one side, its line takes the
    other side's slope mirrored, as an elastic bounce does.
    """
    times = np.arange(len(track)) / params.fps
    known = ~np.isnan(track).any(axis=1)
    times, track = times[known], track[known]
    deadband = VELOCITY_DEADBAND * params.speed_range[0] * params.canvas
    found = []
    for axis in range(2):
        position = track[:, axis]
        velocity = np.diff(position) / np.diff(times)  # segment i joins points i and i + 1
        moving = np.flatnonzero(np.abs(velocity) >= deadband)
        turns = [(a, b) for a, b in zip(moving[:-1], moving[1:]) if np.sign(velocity[a]) != np.sign(velocity[b])]
        for index, (a, b) in enumerate(turns):
            left_start = turns[index - 1][1] + 1 if index > 0 else 0
            right_end = turns[index + 1][0] if index + 1 < len(turns) else len(times) - 1
            left = np.arange(max(left_start, a - 2), a + 1)
            right = np.arange(b + 1, min(right_end, b + 3) + 1)
            if min(len(left), len(right)) == 0 or len(left) + len(right) < 3:
                continue
            left_line = _line(times[left], position[left]) if len(left) > 1 else None
            right_line = _line(times[right], position[right]) if len(right) > 1 else None
            if left_line is None:
                left_line = _line_through(times[left[0]], position[left[0]], -right_line[1])
            if right_line is None:
                right_line = _line_through(times[right[0]], position[right[0]], -left_line[1])
            time = (right_line[0] - left_line[0]) / (left_line[1] - right_line[1])
            found.append((float(np.clip(time, times[a], times[b + 1])), axis))
    return sorted(found)


def video_contacts(frames: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Sorted contact times (seconds) of every visible disc, from the frames alone."""
    labels = classify_pixels(frames, params)
    return _video_contacts(frames, labels, _visible(labels, params), params)


def _video_contacts(frames: np.ndarray, labels: np.ndarray, visible: list[str], params: BounceParams) -> np.ndarray:
    times = [time for colour in visible for time, _ in track_contacts(_track(frames, labels, colour, params), params)]
    return np.sort(np.asarray(times, np.float64))


def onset_strength(audio: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Log-magnitude spectral flux [len(audio) // hop + 1], value i at time i * ONSET_HOP.

    Flux counts only rises per frequency bin, so a burst starting over the tail of
    another disc's burst still shows, and steady noise shows not at all.
    """
    sr = params.sample_rate
    n_fft, hop, lag = round(ONSET_WINDOW * sr), round(ONSET_HOP * sr), round(ONSET_LAG / ONSET_HOP)
    audio = np.asarray(audio, np.float64)
    padded = np.pad(audio, (n_fft // 2, n_fft // 2 + hop))  # the clip starts from silence
    num = len(audio) // hop + 1
    starts = hop * np.arange(num)
    windowed = padded[starts[:, None] + np.arange(n_fft)] * np.hanning(n_fft + 1)[:-1]  # [num, n_fft]
    magnitude = np.abs(np.fft.rfft(windowed, axis=1))  # frame i centred at i * hop
    delta = max(ONSET_DELTA, ONSET_NOISE_RATIO * float(np.median(magnitude)))
    log_mag = np.log1p(magnitude / delta)
    flux = np.zeros(num)
    flux[lag:] = np.maximum(log_mag[lag:] - log_mag[:-lag] - ONSET_BIN_RISE, 0).sum(axis=1)
    return flux


def audio_onsets(audio: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Burst onset times (seconds): peaks of `onset_strength`, to a fraction of a hop."""
    flux = onset_strength(audio, params)
    peaks, _ = scipy.signal.find_peaks(flux, height=ONSET_THRESHOLD, distance=max(1, round(ONSET_MIN_GAP / ONSET_HOP)))
    # The clip's abrupt end makes flux in frames whose window passes it.
    peaks = peaks[(peaks * ONSET_HOP + ONSET_WINDOW / 2) * params.sample_rate <= len(audio)]
    # Sub-hop peak position from a parabola through the peak and its neighbours.
    inner = (peaks > 0) & (peaks < len(flux) - 1)
    below, at, above = flux[peaks[inner] - 1], flux[peaks[inner]], flux[peaks[inner] + 1]
    shift = np.zeros(len(peaks))
    shift[inner] = 0.5 * (below - above) / (below - 2 * at + above)
    return (peaks + shift) * ONSET_HOP + ONSET_LEAD


def burst_pitches(audio: np.ndarray, onsets: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Dominant frequency (Hz) in the PITCH_WINDOW after each onset."""
    sr = params.sample_rate
    length = int(round(PITCH_WINDOW * sr))
    n_fft = 16 * length  # zero padding: about 1 Hz bins before interpolation
    pitches = []
    for onset in onsets:
        start = max(0, int(round(onset * sr)))
        segment = np.asarray(audio[start : start + length], np.float64)
        if len(segment) < 16:
            pitches.append(np.nan)
            continue
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n_fft))
        spectrum[: int(PITCH_MIN_HZ * n_fft / sr)] = 0
        peak = int(spectrum.argmax())
        if 0 < peak < len(spectrum) - 1:
            below, at, above = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
            peak += 0.5 * (below - above) / (below - 2 * at + above)
        pitches.append(peak * sr / n_fft)
    return np.asarray(pitches, np.float64)


def match_events(onsets: np.ndarray, contacts: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
    """Most one-to-one (onset, contact) index pairs closer than tolerance, least total distance among those."""
    if len(onsets) == 0 or len(contacts) == 0:
        return []
    distance = np.abs(np.asarray(onsets)[:, None] - np.asarray(contacts)[None, :])
    # A forbidden pair costs more than every allowed pair together, so the
    # assignment first maximises the number of allowed pairs.
    cost = np.where(distance < tolerance, distance, distance.size * tolerance + 1)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if distance[r, c] < tolerance]


def merge_close(times: np.ndarray, gap: float) -> np.ndarray:
    """Sorted times with each run of times closer than gap to the previous one replaced by its mean."""
    if len(times) == 0:
        return times
    run = np.concatenate([[0], np.cumsum(np.diff(times) >= gap)])
    return np.bincount(run, weights=times) / np.bincount(run)


def _judged_distances(onsets: np.ndarray, contacts: np.ndarray, params: BounceParams) -> tuple[np.ndarray, int, int, int]:
    """(seconds from each judged onset to the nearest video event, judged onsets, matched
    pairs, events): the parts of the sync error and event F1 (clip_metrics says which
    onsets are judged). The distances are empty when there is no judged onset or no event."""
    events = merge_close(contacts, ONSET_MIN_GAP)
    frame = 1 / params.fps
    pairs = match_events(onsets, events, frame)
    matched = np.zeros(len(onsets), bool)
    matched[[i for i, _ in pairs]] = True
    seen = (onsets >= frame) & (onsets <= (params.num_frames - 2) * frame)
    judged = onsets[matched | seen]
    distances = np.abs(judged[:, None] - events[None, :]).min(axis=1) if len(judged) and len(events) else np.zeros(0)
    return distances, len(judged), len(pairs), len(events)


def onset_distances(frames: np.ndarray, audio: np.ndarray, params: BounceParams = BounceParams()) -> np.ndarray:
    """Seconds from each judged audio onset of a clip to the nearest video contact: the
    values whose median is the clip's sync error (empty where that is NaN). Pooled over
    clips they give the median over onsets (benchmarks/sync_pool.py)."""
    labels = classify_pixels(frames, params)
    contacts = _video_contacts(frames, labels, _visible(labels, params), params)
    return _judged_distances(audio_onsets(audio, params), contacts, params)[0]


def clip_metrics(frames: np.ndarray, audio: np.ndarray, caption: str, params: BounceParams = BounceParams()) -> dict:
    """The spec's four metrics for one clip, with the counts behind them.

    pitch_agreement is NaN when no burst is heard (num_audio_onsets says how
    many were), and 0 when bursts are heard but no disc is visible; sync_error_ms
    is NaN when there is no onset or no video contact to compare; event_f1 is 1
    when neither sound nor contact occurs.

    A turn needs a whole frame interval either side of the one holding it, so
    video contacts are only sure to be seen from 1 / fps to (T - 2) / fps; an
    onset outside that window that matches no contact is left out of the sync
    error and of event F1 rather than counted against the clip. Contacts closer
    together than ONSET_MIN_GAP count as one event, as no onset detector hears
    them apart.
    """
    caption_set, _ = caption_colours(caption)
    labels = classify_pixels(frames, params)
    visible = _visible(labels, params)
    onsets = audio_onsets(audio, params)
    contacts = _video_contacts(frames, labels, visible, params)

    pitches = burst_pitches(audio, onsets, params)
    visible_hz = np.asarray([params.frequencies[c] for c in visible])
    if len(onsets) and len(visible_hz):
        semitones = 12 * np.abs(np.log2(pitches[:, None] / visible_hz[None, :]))
        pitch_agreement = float(np.mean(semitones.min(axis=1) <= PITCH_TOLERANCE_SEMITONES))
    else:
        pitch_agreement = float("nan") if len(onsets) == 0 else 0.0

    distances, num_judged, num_pairs, num_events = _judged_distances(onsets, contacts, params)
    sync_error_ms = 1000 * float(np.median(distances)) if len(distances) else float("nan")
    event_f1 = 2 * num_pairs / (num_judged + num_events) if num_judged + num_events else 1.0

    return {
        "colour_accuracy": float(set(visible) == caption_set),
        "pitch_agreement": pitch_agreement,
        "sync_error_ms": sync_error_ms,
        "event_f1": event_f1,
        "num_audio_onsets": len(onsets),
        "num_video_contacts": len(contacts),
    }


def aggregate(metrics: list[dict]) -> dict:
    """Mean of each key over clips, ignoring NaNs (NaN when a key is NaN in every clip)."""
    keys = metrics[0].keys() if metrics else []
    means = {}
    for key in keys:
        values = np.asarray([m[key] for m in metrics], np.float64)
        means[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return means
