"""The training data loader: a Grain pipeline from a shard directory to model-ready batches.

shards -> decode (named errors) -> global shuffle, reshuffled each epoch -> repeat
-> model arrays + caption tokens or embeddings -> batch -> this host's batches -> iterator.

Every host runs the same shuffle with the same seed, cuts the one global stream
into batches of `batch_size` (per host) and takes every `process_count`-th,
starting at its `process_index`: the hosts' slices are disjoint, together cover
each epoch, and host p's g-th batch is block p of the global batch g that a
single host loading `process_count * batch_size` clips would see. The
iterator's `get_state()` is a small dict (the position in that stream) that
goes into the checkpoint; `set_state()` on a fresh iterator resumes with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import grain
import numpy as np
from absl import flags

from jav.clip_tokens import frames_to_model
from jav.data.record import decode_record
from jav.data.shards import open_shards
from jav.models.text_encoder import uses_token_ids
from jav.tokenizer import HashTokenizer


TEXT_INPUTS = ("ids", "embeddings")


def text_input_for(text_cfg) -> str:
    """The loader's text input for a model's `model.text` config: "ids" for the built-in
    encoder, "embeddings" (the records' precomputed text_emb) otherwise."""
    return "ids" if uses_token_ids(text_cfg) else "embeddings"


class _ToModel:
    """A decoded record -> {video [T, H, W, C] float32 in [-1, 1] (pixels) or as stored (latents),
    audio [Ta, Ca] float32, and either text_ids [L] int32 (text_input "ids": the caption hashed)
    or text_emb [L, D] float32 (text_input "embeddings": the record's own), with text_mask [L] bool}."""

    def __init__(self, tokenizer: HashTokenizer, text_input: str = "ids", text_dim: int | None = None):
        self.tokenizer = tokenizer
        self.text_input = text_input
        self.text_dim = text_dim

    def text(self, rec: dict) -> dict:
        emb = rec.get("text_emb")
        if self.text_input == "ids":
            if emb is not None and not rec["caption"]:
                raise ValueError(
                    "the model reads caption token ids (model.text.encoder='builtin') but these records "
                    "hold only precomputed text embeddings (empty captions); set model.text.encoder="
                    "'precomputed' with model.text.dim the embeddings' width, or rewrite the shards with captions"
                )
            ids, mask = self.tokenizer.encode([rec["caption"]])
            return {"text_ids": ids[0], "text_mask": mask[0]}
        if emb is None:
            raise ValueError(
                "the model reads precomputed text embeddings (model.text.encoder='precomputed') but these "
                "records have no text_emb; write the shards with embeddings (python -m jav.data.synthetic "
                "--text-encoder SPEC, or jav.data.text_embeddings.add_text_embeddings), or set "
                "model.text.encoder='builtin'"
            )
        if self.text_dim is not None and emb.shape[-1] != self.text_dim:
            raise ValueError(
                f"the records' text embeddings are {emb.shape[-1]} wide but model.text.dim={self.text_dim}; "
                f"set model.text.dim={emb.shape[-1]} or re-embed the captions with a matching encoder"
            )
        return {"text_emb": emb.astype(np.float32), "text_mask": rec["text_mask"]}

    def __call__(self, rec: dict) -> dict:
        video = rec["video"]
        video = frames_to_model(video) if video.dtype == np.uint8 else video.astype(np.float32)
        return {"video": video, "audio": rec["audio"].astype(np.float32), **self.text(rec)}


def make_dataset(
    data_dir: str,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer_vocab: int = 1024,
    tokenizer_len: int = 16,
    text_input: str = "ids",
    text_dim: int | None = None,
) -> grain.MapDataset:
    """The infinite MapDataset of this host's batches (batch_size is per host).

    `text_input` "ids" hashes each caption (tokenizer_vocab, tokenizer_len: the built-in
    encoder's model.text.vocab_size and max_len); "embeddings" passes the records'
    precomputed text_emb, checked against `text_dim` (model.text.dim) when given.
    `text_input_for(cfg.model.text)` picks it from a model config.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if text_input not in TEXT_INPUTS:
        raise ValueError(f"text_input={text_input!r} is not one of {TEXT_INPUTS}")
    manifest, source = open_shards(data_dir)  # raises on a missing or corrupt shard before any step
    video_shape, audio_shape = manifest["video_shape"], manifest["audio_shape"]

    def decode(index, data):
        # index may run past one epoch (repeat passes the global index down); locate within the epoch
        return decode_record(data, expect_video_shape=video_shape, expect_audio_shape=audio_shape, source=source.locate(index % len(source)))

    return (
        grain.MapDataset.source(source)
        .map_with_index(decode)
        .shuffle(seed)  # reshuffled each epoch: repeat passes the epoch to shuffle via the index
        .repeat()
        .map(_ToModel(HashTokenizer(tokenizer_vocab, tokenizer_len), text_input, text_dim))
        .batch(batch_size, drop_remainder=True)[
            # Host p takes every process_count-th batch from offset p: together the hosts'
            # g-th batches are, in host order, the g-th batch of one host loading them all.
            process_index::process_count
        ]
    )


def make_loader(
    data_dir: str,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer_vocab: int = 1024,
    tokenizer_len: int = 16,
    text_input: str = "ids",
    text_dim: int | None = None,
    num_workers: int = 0,
    read_threads: int = 4,
    prefetch_batches: int = 8,
) -> grain.DatasetIterator:
    """An endless iterator of this host's batches: {video [B, T, H, W, C] float32, audio [B, Ta, Ca] float32,
    text_ids [B, L] int32 or (text_input "embeddings") text_emb [B, L, D] float32, text_mask [B, L] bool},
    with get_state() / set_state() for checkpoints.

    num_workers > 0 decodes in that many processes (grain mp_prefetch); the batches
    and their order do not depend on it.
    """
    ds = make_dataset(
        data_dir,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        tokenizer_vocab=tokenizer_vocab,
        tokenizer_len=tokenizer_len,
        text_input=text_input,
        text_dim=text_dim,
    )
    # A small thread prefetch: grain's default buffer of 500 batches would hold gigabytes of video.
    stream = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
    if num_workers > 0:
        # grain's worker start reads an absl flag, which raises in programs that never
        # parsed absl flags (google/grain#1355); absl then uses the flags' defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(stream)
