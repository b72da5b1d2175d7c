"""A clip's place in token space: how video [T, H, W, C] and audio [Ta, Ca]
arrays become the model's token dicts and back, where each token sits in time
and space, and which tokens form the first frame.

For the bounce world in pixel space, video is RGB scaled to [-1, 1] and audio
is the normalised log-mel of `jav.data.mel`; `data.video_norm` and
`data.audio_norm` (mean, std) then standardise each to the unit scale of the
flow's noise (the world's clips are mostly dark background and noise floor, so
raw they have a standard deviation of 0.26 and 0.18: under unit noise their
content is invisible at most timesteps). Latents arrive standardised by
`jav.latents.LatentCodec` and are passed through.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.data import mel
from jav.models import patch, rope


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Shapes, patch sizes and clock rates of one clip shape (a shape bucket)."""

    video_shape: tuple[int, int, int, int]  # T, H, W, C
    audio_shape: tuple[int, int]  # Ta, Ca
    video_patch: tuple[int, int, int]
    audio_patch: int
    fps: float
    audio_frame_rate: float  # audio frames (mel hops) per second
    # > 0: video frames are a causal VAE's latents with this time compression, and
    # fps is the pixel frame rate (the first latent is frame 0 alone; jav.models.video_vae)
    video_causal_compression: int = 0
    # tokens = (array - mean) / std, per modality (the arrays' scale is left to to_tokens / from_tokens)
    video_norm: tuple[float, float] = (0.0, 1.0)
    audio_norm: tuple[float, float] = (0.0, 1.0)
    # the units of `pos`, model.rope.layout's: "jav" (t seconds, h and w in patches) or "ltx2" (LTX-2's:
    # the centre of each token's span of pixel frames in seconds, a causal VAE's first latent holding one
    # frame, and of pixels; audio the span of its mel frames, a causal audio VAE's first one shortened)
    positions: str = "jav"
    pixels_per_element: tuple[int, int] = (1, 1)  # h, w: a video VAE's spatial compression (1 in pixel space)
    mel_per_element: int = 1  # audio: mel frames per array row (an audio VAE's compression; 1 for log-mel)
    mel_hop: tuple[int, int] = (1, 100)  # (hop samples, sample rate): a mel frame's duration, hop / rate

    @classmethod
    def from_batch(cls, cfg, video_shape, audio_shape) -> "TokenLayout":
        """The layout of one shape bucket: the config's patches and clock rates, the batch's clip shapes
        (video [T, H, W, C], audio [Ta, Ca], without the batch axis)."""
        layout = dataclasses.replace(cls.from_config(cfg), video_shape=tuple(int(n) for n in video_shape), audio_shape=tuple(int(n) for n in audio_shape))
        layout.grid  # noqa: B018 -- raises early, naming the axis, if a patch does not divide
        if layout.audio_shape[0] % layout.audio_patch:
            raise ValueError(
                f"{layout.audio_shape[0]} audio frames are not divisible by model.audio.patch={layout.audio_patch}; "
                "re-pack the bucket with an audio length the patch divides"
            )
        return layout

    @classmethod
    def from_config(cls, cfg) -> "TokenLayout":
        d, m = cfg.data, cfg.model
        positions = m.rope.layout
        if d.get("world") == "latent":  # precomputed latents: shapes and clock rates straight from the config
            causal = int(d.get("video_time_compression", 0))
            space = int(d.get("video_space_compression", 0) or (d.canvas // d.video_latent_shape[1] if "canvas" in d else 1))
            hop = (int(d.mel_hop), int(d.sample_rate)) if "mel_hop" in d and "sample_rate" in d else (1, 100)
            layout = cls(
                video_shape=tuple(d.video_latent_shape),
                audio_shape=tuple(d.audio_latent_shape),
                video_patch=tuple(m.video.patch),
                audio_patch=int(m.audio.patch),
                fps=float(d.pixel_fps if causal else d.fps),
                audio_frame_rate=float(d.audio_rate),
                video_causal_compression=causal,
                positions=positions,
                pixels_per_element=(space, space),
                mel_per_element=max(1, round(hop[1] / hop[0] / float(d.audio_rate))),
                mel_hop=hop,
            )
            layout.grid  # noqa: B018 -- raises early if a patch does not divide
            return layout
        frames = int(round(d.duration * d.fps))
        audio_frames = int(round(d.duration * d.sample_rate)) // d.mel_hop
        layout = cls(
            video_shape=(frames, d.canvas, d.canvas, m.video.channels),
            audio_shape=(audio_frames, m.audio.channels),
            video_patch=tuple(m.video.patch),
            audio_patch=int(m.audio.patch),
            fps=float(d.fps),
            audio_frame_rate=d.sample_rate / d.mel_hop,
            video_norm=_norm(d, "video_norm"),
            audio_norm=_norm(d, "audio_norm"),
            positions=positions,
            mel_hop=(int(d.mel_hop), int(d.sample_rate)),
        )
        layout.grid  # noqa: B018 -- raises early, naming the axis, if a patch does not divide
        if audio_frames % m.audio.patch:
            raise ValueError(f"{audio_frames} audio frames are not divisible by model.audio.patch={m.audio.patch}; change data.duration or the patch")
        if m.audio.channels != d.mel_bins:
            raise ValueError(f"model.audio.channels={m.audio.channels} must equal data.mel_bins={d.mel_bins} in log-mel space")
        return layout

    @cached_property
    def grid(self) -> tuple[int, int, int]:
        return patch.video_grid(self.video_shape[:3], self.video_patch)

    @cached_property
    def num_tokens(self) -> dict:
        return {"video": int(np.prod(self.grid)), "audio": self.audio_shape[0] // self.audio_patch}

    @cached_property
    def token_dims(self) -> dict:
        """m -> values per token: a video patch's pixels x channels, an audio patch's frames x channels."""
        return {"video": int(np.prod(self.video_patch)) * self.video_shape[-1], "audio": self.audio_patch * self.audio_shape[-1]}

    @cached_property
    def pos(self) -> dict:
        """m -> [1, N_m, 3] positions (t seconds, h, w), in the units `positions` names."""
        if self.positions == "ltx2":
            return self._ltx2_pos()
        if self.positions == "wan":
            return self._wan_pos()
        if self.positions != "jav":
            raise ValueError(f"model.rope.layout={self.positions!r}: positions are 'jav', 'ltx2' or 'wan'")
        t, h, w, _ = self.video_shape
        c = self.video_causal_compression
        times = patch.causal_latent_frame_times(t, c, self.fps) if c else patch.uniform_frame_times(t, self.fps)
        v = patch.video_positions(times, (h, w), self.video_patch)
        a = patch.audio_positions(patch.uniform_frame_times(self.audio_shape[0], self.audio_frame_rate), self.audio_patch)
        return {"video": v[None], "audio": a[None]}

    def _ltx2_pos(self) -> dict:
        """LTX-2's positions (jav.models.rope.ltx2_video_positions / ltx2_audio_positions): a token
        spans pt frames of its array, each `video_causal_compression` pixel frames after the causal
        first, and ph x pw elements of `pixels_per_element` pixels; an audio token `audio_patch` rows
        of `mel_per_element` mel frames (causal, the first shortened, where the rows are latents)."""
        pt, ph, pw = self.video_patch
        c = self.video_causal_compression
        frames = (c or 1) * pt  # pixel frames per token in time
        v = rope.ltx2_video_positions(
            *self.grid, fps=self.fps, causal_offset=1 if c else frames, scale=(frames, ph * self.pixels_per_element[0], pw * self.pixels_per_element[1])
        )
        mel = self.mel_per_element * self.audio_patch
        a = rope.ltx2_audio_positions(
            self.num_tokens["audio"], latents_per_hop=mel, hop=self.mel_hop[0], rate=self.mel_hop[1], causal_offset=1 if self.mel_per_element > 1 else mel
        )
        return {"video": v[None], "audio": a[None]}

    def _wan_pos(self) -> dict:
        """Wan 2.1's positions (jav.models.rope.wan_video_positions): a video token's latent frame,
        patch row and column; an audio token's time in the same unit (seconds times the video
        tokens per second of the clip), so that cross-modal attention, which rotates by time
        alone, gives a sound and a frame of the same instant the same phase."""
        v = rope.wan_video_positions(*self.grid)
        seconds = self.audio_shape[0] / self.audio_frame_rate
        a = patch.audio_positions(patch.uniform_frame_times(self.audio_shape[0], self.audio_frame_rate), self.audio_patch)
        a = np.asarray(a) * np.asarray([self.grid[0] / seconds, 1.0, 1.0], np.float32)
        return {"video": v[None], "audio": a[None]}

    @cached_property
    def first_frame(self) -> np.ndarray:
        """[N_v] bool: tokens of the first temporal patch (clean under I2VA)."""
        return patch.first_frame_tokens(self.grid)

    def to_tokens(self, video: jax.Array, audio: jax.Array) -> dict:
        """video [B, T, H, W, C], audio [B, Ta, Ca] -> {m: [B, N_m, P_m]}, standardised."""
        (vm, vs), (am, as_) = self.video_norm, self.audio_norm
        return {"video": patch.patchify_video((video - vm) / vs, self.video_patch), "audio": patch.patchify_audio((audio - am) / as_, self.audio_patch)}

    def from_tokens(self, tokens: dict) -> tuple[jax.Array, jax.Array]:
        """The inverse of to_tokens."""
        (vm, vs), (am, as_) = self.video_norm, self.audio_norm
        video = patch.unpatchify_video(tokens["video"], self.grid, self.video_patch, self.video_shape[-1])
        audio = patch.unpatchify_audio(tokens["audio"], self.audio_patch, self.audio_shape[-1])
        return video * vs + vm, audio * as_ + am

    def denoiser(self, model, guidance=None):
        """The model as a sampler's `denoise_fn(x, t, text, text_mask, cross_modal, **kw)`
        (kw: the model's `interval`). `guidance`: [B, 3] or [3] scales for a model
        that takes them as input (model.guidance_embed), tiled over the batch of
        the call.

        The module is re-merged at each call so that it belongs to the trace it
        runs in (the sampler calls it inside `lax.scan`).
        """
        pos = {m: jnp.asarray(p) for m, p in self.pos.items()}
        graphdef, state = nnx.split(model)

        def denoise(x, t, text, text_mask, cross_modal, **kw):
            g = guidance
            if g is not None and g.ndim == 2 and g.shape[0] != x["video"].shape[0]:
                g = jnp.tile(g, (x["video"].shape[0] // g.shape[0], 1))
            return nnx.merge(graphdef, state)(x, t, text, text_mask, cross_modal, pos=pos, grid=self.grid, guidance=g, **kw)

        return denoise


def _norm(data_cfg, key: str) -> tuple[float, float]:
    """(mean, std) of data_cfg[key]; runs made before the key existed did not standardise."""
    mean, std = (float(x) for x in data_cfg.get(key, (0.0, 1.0)))
    if not std > 0:
        raise ValueError(f"data.{key}={(mean, std)}: the standard deviation must be > 0")
    return mean, std


def frames_to_model(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1]."""
    return np.asarray(frames, np.float32) / 127.5 - 1.0


def model_to_frames(video: np.ndarray) -> np.ndarray:
    return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pixel_fps(cfg) -> float:
    """Frames per second of the clips a run makes (in latent space data.fps counts latent frames)."""
    return float(cfg.data.get("pixel_fps", cfg.data.fps))


def mel_params(cfg) -> mel.MelParams:
    d = cfg.data
    return mel.MelParams(sample_rate=d.sample_rate, hop=d.mel_hop, n_mels=d.mel_bins)


def clip_to_arrays(frames: np.ndarray, wave: np.ndarray, params: mel.MelParams) -> tuple[np.ndarray, np.ndarray]:
    """A clip's uint8 frames and waveform -> model-space video [T, H, W, 3] and log-mel [Ta, n_mels]."""
    return frames_to_model(frames), mel.waveform_to_logmel(wave, params)


def arrays_to_clip(video: np.ndarray, logmel: np.ndarray, params: mel.MelParams) -> tuple[np.ndarray, np.ndarray]:
    """Model-space arrays -> uint8 frames and a waveform (Griffin-Lim)."""
    return model_to_frames(video), mel.logmel_to_waveform(np.asarray(logmel), params)


def clip_config(cfg, duration: float | None = None, size: int | None = None):
    """A copy of a run's config that makes clips of `duration` seconds and `size` x `size`
    pixels (None: as trained). Tokens carry their time in seconds and their place on the
    patch grid (rotary positions), so the network takes any such shape; past the trained
    one it samples out of its training distribution. In latent space the latent shapes
    follow from the VAEs' compression, read off the trained shapes (a causal VAE's
    first latent is one frame alone). Raises, naming the durations or sizes that fit,
    where a patch or the VAEs' compression does not divide the new shape."""
    if duration is None and size is None:
        return cfg
    cfg = cfg.copy_and_resolve_references()
    d, m = cfg.data, cfg.model
    if d.get("world") == "latent" and not all(k in d for k in ("canvas", "duration", "pixel_fps")):
        raise ValueError(
            "this latent-space config does not name the clips its latents came from (data.canvas, "
            "data.duration, data.pixel_fps): it samples at its trained shape only; drop --duration / --size"
        )
    if duration is not None:
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration:g} s")
        if d.get("world") == "latent":
            _latent_duration(d, m, duration)
        d.duration = float(duration)
    if size is not None:
        if d.get("world") == "latent":
            (t, _, _, c), space = d.video_latent_shape, d.canvas // d.video_latent_shape[1]
            if size % (space * m.video.patch[1]):
                raise ValueError(
                    f"size {size} px does not fit: latents are {space}x smaller and patches "
                    f"{m.video.patch[1]} latents wide, so the size must be a multiple of {space * m.video.patch[1]} px"
                )
            d.video_latent_shape = (t, size // space, size // space, c)
        elif size % m.video.patch[1]:
            raise ValueError(f"size {size} px does not fit model.video.patch={tuple(m.video.patch)}: use a multiple of {m.video.patch[1]} px")
        d.canvas = int(size)
    if d.get("world") != "latent":
        _pixel_duration_fits(d, m)
    TokenLayout.from_config(cfg)  # every other check of the shape
    return cfg


def _pixel_duration_fits(d, m) -> None:
    """Raises, naming the durations that fit, where the patches do not divide a pixel-space clip."""
    frames, hops = d.duration * d.fps, d.duration * d.sample_rate / d.mel_hop
    pt, pa = m.video.patch[0], m.audio.patch
    if abs(frames - round(frames)) > 1e-6 or round(frames) % pt or (int(round(d.duration * d.sample_rate)) // d.mel_hop) % pa:
        video_step = Fraction(pt) / Fraction(d.fps).limit_denominator()
        audio_step = Fraction(pa * d.mel_hop, d.sample_rate)
        step = _lcm(video_step, audio_step)
        raise ValueError(
            f"a {d.duration:g} s clip is {frames:g} video frames and {hops:g} audio frames; patches of "
            f"{pt} frames and {pa} audio frames must divide them (multiples of {float(step):g} s always fit)"
        )


def _latent_duration(d, m, duration: float) -> None:
    """Sets the latent shapes of a `duration`-second clip (raises where the VAEs' compression does not divide it)."""
    t, h, w, c = d.video_latent_shape
    frames = duration * d.pixel_fps
    causal = int(d.get("video_time_compression", 0))
    trained = int(round(d.duration * d.pixel_fps))
    if abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"{duration:g} s is not a whole number of frames at {d.pixel_fps:g} fps")
    frames = int(round(frames))
    if causal:  # latent 0 is frame 0 alone, each later latent `causal` frames
        if (frames - 1) % causal:
            raise ValueError(
                f"a causal VAE with time compression {causal} needs 1 + {causal}k frames: {frames} is not; "
                f"at {d.pixel_fps:g} fps use (1 + {causal}k) / {d.pixel_fps:g} s"
            )
        latents = 1 + (frames - 1) // causal
    else:
        if (frames * t) % trained:
            raise ValueError(f"{frames} frames do not fit the VAE's time compression ({trained} frames -> {t} latents)")
        latents = frames * t // trained
    if latents % m.video.patch[0]:
        raise ValueError(f"{latents} video latents are not divisible by model.video.patch[0]={m.video.patch[0]}")
    # audio latents: the log-mel's hops over the audio VAE's compression (read off the trained shape)
    hops = lambda s: int(round(s * d.sample_rate)) // d.mel_hop  # noqa: E731
    audio = hops(duration) // (hops(d.duration) // d.audio_latent_shape[0])
    if audio % m.audio.patch:
        raise ValueError(f"{duration:g} s is {audio} audio latents: model.audio.patch={m.audio.patch} must divide it")
    d.video_latent_shape = (latents, h, w, c)
    d.audio_latent_shape = (audio, d.audio_latent_shape[1])


def _lcm(a, b):
    """Least common multiple of two positive fractions."""
    return Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))
