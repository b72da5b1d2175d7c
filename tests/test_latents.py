"""Latent space end to end: tiny VAE runs -> latent shards normalised per channel ->
token layout -> the sampler's decoding through the same VAEs."""

import json

import numpy as np
import pytest

from configs import audio_vae as audio_vae_config
from configs import test as test_config
from configs import video_vae as video_vae_config
from jav.clip_tokens import TokenLayout
from jav.data import synthetic
from jav.data.shards import open_shards
from jav.models import patch

DURATION = 9 / 8  # 9 frames at 8 fps (1 + 4 * 2), 112 log-mel frames


@pytest.fixture(scope="module")
def latent_shards(tmp_path_factory):
    from jav.train.autoencoder import train

    runs = {}
    for name, config in (("video", video_vae_config), ("audio", audio_vae_config)):
        cfg = config.get_config("tiny")
        cfg.train.steps = 1
        runs[name] = tmp_path_factory.mktemp(f"{name}_vae")
        train(cfg, str(runs[name]), log=lambda _: None)
    out = tmp_path_factory.mktemp("latents")
    synthetic.main(
        [
            "--out",
            str(out),
            "--num",
            "6",
            "--duration",
            str(DURATION),
            "--latent",
            "--video-vae",
            str(runs["video"]),
            "--audio-vae",
            str(runs["audio"]),
            "--stats-clips",
            "6",
            "--batch",
            "4",
        ]
    )
    return out


def latent_config(data_dir):
    info = json.loads((data_dir / "latent.json").read_text())
    cfg = test_config.get_config()
    vshape, ashape = tuple(info["video_latent_shape"]), tuple(info["audio_latent_shape"])
    cfg.model.video.patch, cfg.model.video.channels = (1, 1, 1), vshape[-1]
    cfg.model.audio.channels = ashape[-1]
    cfg.data = dict(
        world="latent",
        video_latent_shape=vshape,
        audio_latent_shape=ashape,
        video_time_compression=4,
        pixel_fps=8,
        fps=2.0,
        audio_rate=25.0,
        canvas=32,
        duration=DURATION,
        sample_rate=16000,
        mel_hop=160,
        mel_bins=64,
        dir=str(data_dir),
    )
    return cfg


def test_latent_shards_are_normalised_per_channel(latent_shards):
    info = json.loads((latent_shards / "latent.json").read_text())
    manifest, source = open_shards(str(latent_shards))
    assert manifest["num_records"] == 6
    assert manifest["video_shape"] == info["video_latent_shape"] == [3, 4, 4, 16]  # 9 frames -> 3, 32 px -> 4, 16 channels
    assert manifest["audio_shape"][0] == 112 // 4 and manifest["video_dtype"] == "float32"
    from jav.data.record import decode_record

    recs = [decode_record(source[i]) for i in range(len(source))]
    for name in ("video", "audio"):
        z = np.stack([r[name] for r in recs])
        z = z.reshape(-1, z.shape[-1])
        # statistics were measured on these same six clips: zero mean and unit deviation per channel
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
    assert recs[0]["metadata"]["video_repr"]["kind"] == "video_vae_latent"


def test_latent_token_times_follow_the_causal_vae(latent_shards):
    layout = TokenLayout.from_config(latent_config(latent_shards))
    times = np.unique(layout.pos["video"][0, :, 0])
    # latent 0 is frame 0 alone; latent i holds frames 4i-3 .. 4i at 8 fps
    np.testing.assert_allclose(times, [0.0, 2.5 / 8, 6.5 / 8])
    np.testing.assert_allclose(patch.causal_latent_frame_times(2, 8, 24.0), [0.0, 4.5 / 24])


def test_samples_decode_through_the_shards_vaes(latent_shards):
    # what jav.sample / jav.evaluate do with a latent-space model's output: the shards'
    # VAEs (latent.json) and statistics turn latents back into frames and sound
    from jav.clip_tokens import frames_to_model
    from jav.data import bounce
    from jav.data.record import decode_record
    from jav.latents import codec_from_config
    from jav.sample import clip_decoder

    cfg = latent_config(latent_shards)
    _, source = open_shards(str(latent_shards))
    rec = decode_record(source[0])
    [(frames, wave)] = clip_decoder(cfg)(rec["video"][None], rec["audio"][None])
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
    assert abs(len(wave) - DURATION * 16000) < 0.05 * 16000
    # the stored latents are the normalised encoding of their clip: decoding them gives the VAE's reconstruction
    codec = codec_from_config(cfg)
    rec0 = synthetic.clip_record(0, bounce.BounceParams(duration=DURATION))  # the shards' first clip (seed 0)
    pixels, logmel = frames_to_model(rec0["video"])[None], rec0["audio"][None]
    zv, za = codec.encode(pixels, logmel)
    np.testing.assert_allclose(zv[0], rec["video"], atol=1e-4)
    np.testing.assert_allclose(za[0], rec["audio"], atol=1e-4)
    video, _ = codec.decode(zv, za)
    direct = np.asarray(codec.video_vae.decode(codec.video_vae.encode(pixels)[0]))
    np.testing.assert_allclose(video, np.clip(direct, -1, 1), atol=1e-4)


def test_make_demo_configs_fit_together():
    """`make demo` trains configs/video_vae.py:demo and configs/audio_vae.py:demo, encodes
    2.125 s clips with them and trains configs/bounce_latent.py on the latents: the latent
    shapes that config declares are the ones the two VAEs make (shapes only, no weights)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from configs import bounce_latent
    from jav.data.mel import MelParams
    from jav.models import audio_vae, video_vae

    cfg = bounce_latent.get_config()
    frames = int(cfg.data.duration * cfg.data.pixel_fps)  # 17 = 1 + 4 * 4
    vcfg = video_vae_config.get_config("demo")
    assert vcfg.data.duration == cfg.data.duration and vcfg.data.canvas == cfg.data.canvas
    assert video_vae.latent_shape(vcfg.model, (frames, cfg.data.canvas, cfg.data.canvas)) == cfg.data.video_latent_shape

    acfg = audio_vae_config.get_config("demo")
    mel = MelParams()
    assert (mel.n_mels, mel.hop) == (cfg.data.mel_bins, cfg.data.mel_hop) == (acfg.model.n_mels, 160)
    vae = nnx.eval_shape(lambda: audio_vae.AudioVAE(acfg.model, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(vae)
    logmel = jax.ShapeDtypeStruct((1, int(cfg.data.duration * cfg.data.sample_rate) // mel.hop, mel.n_mels), jnp.float32)
    mean, _ = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encode(x), state, logmel)
    assert mean.shape[1:] == cfg.data.audio_latent_shape


def test_latent_normalisation_per_channel_or_shared():
    from jav.latents import _normalise, fit_stats

    rng = np.random.default_rng(0)
    scales, means = np.array([0.1, 1.0, 2.0, 0.5]), np.array([1.0, 0.0, -1.0, 0.0])
    z = rng.normal(size=(64, 10, 4)) * scales + means
    stats = fit_stats(z, z, {"audio": "shared"})
    per_channel = _normalise(z, stats["video"]).reshape(-1, 4)
    shared = _normalise(z, stats["audio"]).reshape(-1, 4)
    np.testing.assert_allclose(per_channel.std(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.abs(shared.mean(0)), 0.0, atol=1e-6)
    assert abs(shared.std() - 1.0) < 1e-5  # one scale: unit variance over all channels together
    np.testing.assert_allclose(shared.std(0) / shared.std(0)[1], z.reshape(-1, 4).std(0) / z.reshape(-1, 4).std(0)[1], rtol=1e-6)
    assert (stats["video"]["norm"], stats["audio"]["norm"]) == ("channel", "shared")
    with pytest.raises(ValueError, match="use 'channel' or 'shared'"):
        fit_stats(z, z, {"audio": "global"})


def test_curated_latent_shards_carry_the_codec_and_decode(latent_shards, tmp_path):
    """Curation's latents are the model's latent space: statistics fitted over pixel shards
    (python -m jav.data.latent_stats), clips encoded through that codec by the curation encoder,
    and the packed bucket carries the codec, so a run on it decodes its samples."""
    from configs import curate
    from data_pipelines import encode as encode_lib
    from data_pipelines.clip import Clip
    from data_pipelines.pack import pack_bucket
    from data_pipelines.store import EncodeStore
    from jav.clip_tokens import frames_to_model
    from jav.data import bounce
    from jav.data.latent_stats import main as fit_main
    from jav.data.record import decode_record
    from jav.latents import LatentCodec
    from jav.sample import clip_decoder

    runs = json.loads((latent_shards / "latent.json").read_text())
    pixels = tmp_path / "pixels"
    synthetic.main(["--out", str(pixels), "--num", "4", "--duration", str(DURATION)])
    path = fit_main(
        [
            "--video-vae",
            runs["video_vae"],
            "--audio-vae",
            runs["audio_vae"],
            "--shards",
            str(pixels),
            "--out",
            str(tmp_path / "codec" / "stats.json"),
            "--num",
            "4",
            "--batch",
            "3",
        ]
    )
    assert path == tmp_path / "codec" / "stats.json"
    codec = LatentCodec.from_latent_json(path)
    _, source = open_shards(str(pixels))
    recs = [decode_record(source[i]) for i in range(4)]
    video, logmel = np.stack([frames_to_model(r["video"]) for r in recs]), np.stack([r["audio"] for r in recs])
    direct = LatentCodec.load(runs["video_vae"], runs["audio_vae"]).fitted(video, logmel).stats  # all 4 clips at once
    for m in ("video", "audio"):
        np.testing.assert_allclose(codec.stats[m]["mean"], direct[m]["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(codec.stats[m]["std"], direct[m]["std"], rtol=1e-5)

    cfg = curate.get_config("bounce")
    cfg.encode.fps, cfg.encode.buckets, cfg.encode.latent = 8.0, "9x32x32", str(path)
    [bucket] = encode_lib.parse_buckets(cfg)
    world = bounce.generate_clip(0, bounce.BounceParams(duration=DURATION))
    clip = Clip(
        source="bounce_0",
        start=0.0,
        end=DURATION,
        fps=8.0,
        sample_rate=16000,
        caption=world.caption,
        video=world.frames,
        audio=np.asarray(world.audio, np.float32)[:, None],
    )
    arrays, fields = encode_lib.encode_clip(clip, bucket, cfg, encode_lib.Encoders(cfg))
    zv, _ = codec.encode(frames_to_model(world.frames)[None], logmel[:1])
    np.testing.assert_allclose(arrays["video"], zv[0], atol=1e-5)  # the same frames, the same codec
    assert arrays["audio"].shape == codec.latent_shapes(world.frames.shape, logmel.shape[1:])[1]

    store = EncodeStore(str(tmp_path / "store"))
    store.put("bounce_0", arrays, fields, encode_lib.fingerprint(cfg))
    pack_bucket(str(tmp_path / "store"), str(tmp_path / "shards"), bucket.name, ["bounce_0"], 4, latent=encode_lib.read_latent_codec(cfg.encode.latent))
    packed = tmp_path / "shards" / bucket.name
    info = json.loads((packed / "latent.json").read_text())
    assert info["stats"] == codec.stats and info["video_latent_shape"] == list(arrays["video"].shape)
    _, source = open_shards(str(packed))
    rec = decode_record(source[0])
    [(frames, wave)] = clip_decoder(latent_config(packed))(rec["video"][None], rec["audio"][None])
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8 and np.isfinite(wave).all()
