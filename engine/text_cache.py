"""The text encoders' outputs for a batch's captions, encoder by encoder.

A text encoder that trains runs at every step. A frozen one gives the same rows for a caption
every time, so they are computed once per caption and kept (:class:`CaptionCache`), whichever
other encoder trains (SDXL: text encoder 1 may train while text encoder 2 is frozen).
``dataset.cache_text_encoder_outputs`` says when and where:

- ``off``: a frozen encoder's rows are kept in memory the first time a caption comes up; the
  encoders stay on the device (how every run did before the setting existed).
- ``memory``: every caption the run will train on is encoded before the first step (``status``
  events with phase ``caching_text``, as for latents) and the rows kept on the CPU; the trainer
  then moves the frozen encoders off the device, whose memory the UNet can use (SDXL's text
  encoders hold 1.6 GB in fp16).
- ``disk``: the same, and the rows are also written under ``output_dir/.text-cache``, one file
  per encoder and caption, named by a hash of the caption and of what the rows depend on
  besides it (:func:`encoder_identity`: the model, the encoder's weight files, the settings that
  change the output), so the next run reads them instead of encoding, a changed caption is
  encoded anew and a changed model never reuses a stale row.

Captions that change at every step (dataset.shuffle_caption, caption_tag_dropout_rate:
loratui/captions.py) cannot be cached: the check refuses ``memory`` and ``disk`` with them, and
with ``off`` a frozen encoder then encodes each step's captions (without gradients) instead of
keeping rows that would never be read again. A caption dropout only adds the empty caption,
which is cached like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from engine.families.base import TextRows
from loratui.atomic import write_bytes_atomic

log = logging.getLogger("engine.text_cache")

# One text encoder's rows for a list of captions.
Encode = Callable[[list[str]], TextRows]
# Told (captions done, captions in all) while filling.
OnProgress = Callable[[int, int], None]


def encoder_identity(source: Path, model_name: str, subfolder: str, settings: str) -> str:
    """What a text encoder's rows depend on besides the caption: the model (its name, where it is,
    the size and modification time of the encoder's weight files, so that a model replaced in
    place is encoded anew) and ``settings`` (those that change the output: precision, clip skip).
    ``subfolder``: the encoder's folder in a diffusers model ("text_encoder_2")."""
    if source.is_dir():
        files = sorted(path for path in (source / subfolder).rglob("*") if path.is_file())
    else:
        files = [source]  # a single-file checkpoint holds every part
    stamps = ",".join(f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)
    return f"{model_name}|{source.resolve()}|{subfolder}|{stamps}|{settings}"


def tokenizer_identity(tokenizer) -> str:
    """A tokenizer's vocabulary, length and padding, hashed: under another tokenizer (a changed
    model.tokenizer folder for a single-file checkpoint) the same caption gives other ids."""
    vocabulary = sorted(tokenizer.get_vocab().items())
    text = json.dumps([vocabulary, tokenizer.model_max_length, tokenizer.pad_token_id], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class CaptionCache:
    """One frozen text encoder's rows per caption, kept on the CPU, and with a ``folder`` on disk."""

    def __init__(self, encode: Encode, folder: Path | None = None, identity: str = "") -> None:
        self._encode = encode
        self.folder = folder
        self.identity = identity
        self._rows: dict[str, dict[str, torch.Tensor]] = {}

    def fill(self, captions: list[str], batch_size: int, progress: Callable[[int], None]) -> None:
        """Have the rows of every caption: read from disk when there, else encoded ``batch_size``
        at a time. ``progress(n)``: n more captions are ready."""
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self._rows]
        todo = [caption for caption in missing if not self._read(caption)]
        if len(todo) < len(missing):
            progress(len(missing) - len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            self._encode_and_keep(chunk)
            progress(len(chunk))

    def get(self, captions: list[str], device: torch.device) -> TextRows:
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self._rows]
        if missing:  # not filled beforehand (cache mode off): each caption when it first comes up
            self._encode_and_keep(missing)
        names = self._rows[captions[0]].keys()
        return {name: torch.stack([self._rows[c][name] for c in captions]).to(device) for name in names}

    def _encode_and_keep(self, captions: list[str]) -> None:
        with torch.no_grad():
            encoded = self._encode(captions)
        for index, caption in enumerate(captions):
            rows = {name: values[index].detach().to("cpu").contiguous() for name, values in encoded.items()}
            self._rows[caption] = rows
            if self.folder is not None:
                self._write(caption, rows)

    def _file_for(self, caption: str) -> Path:
        assert self.folder is not None
        key = f"{self.identity}\n{caption}"
        # surrogateescape: a caption read from a file need not be valid UTF-8
        return self.folder / (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest() + ".safetensors")

    def _read(self, caption: str) -> bool:
        if self.folder is None:
            return False
        path = self._file_for(caption)
        if not path.is_file():
            return False
        try:
            rows = load_file(path)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is only a cache miss
            log.warning("re-encoding a caption: its cached text outputs %s are unreadable (%s)", path, exc)
            return False
        self._rows[caption] = rows
        return True

    def _write(self, caption: str, rows: dict[str, torch.Tensor]) -> None:
        """Atomically (a killed run leaves no half file under the final name); a disk that refuses
        costs the next run the encoding, never this run."""
        assert self.folder is not None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self._file_for(caption), save(rows), durable=False)
        except OSError as exc:
            log.warning("cannot write the text encoder outputs cache in %s: %s", self.folder, exc)


class TextEncoding:
    """The rows of every text encoder of the model for a batch's captions, each encoder's from
    where it comes: encoded now (trained) or from its :class:`CaptionCache` (frozen)."""

    def __init__(self, mode: str, folder: Path | None, captions_repeat: bool = True) -> None:
        """``captions_repeat``: each image is trained with one of a few captions (no shuffle, no tag
        dropout), so that a frozen encoder's rows can be kept and read again."""
        if mode != "off" and not captions_repeat:
            raise ValueError("text encoder outputs cannot be cached for captions that change at every step")
        self.mode = mode
        self.folder = folder if mode == "disk" else None
        self.captions_repeat = captions_repeat
        self._live: list[Encode] = []
        self.caches: dict[str, CaptionCache] = {}  # by part name, the frozen encoders'

    def add(self, name: str, encode: Encode, trained: bool, identity: str) -> None:
        """A text encoder, the part ``name``; ``identity``: :func:`encoder_identity` of it."""
        if trained:
            self._live.append(encode)
        elif not self.captions_repeat:
            self._live.append(_without_gradients(encode))
        else:
            self.caches[name] = CaptionCache(encode, self.folder, identity)

    def fill(self, captions: list[str], batch_size: int, progress: OnProgress) -> None:
        """Encode (or read) every caption for every frozen encoder: ``memory`` and ``disk`` do it
        before training, so that the frozen encoders can leave the device."""
        unique = list(dict.fromkeys(captions))
        total, done = len(unique) * len(self.caches), 0
        progress(done, total)

        def advance(count: int) -> None:
            nonlocal done
            done += count
            progress(done, total)

        for cache in self.caches.values():
            cache.fill(unique, batch_size, advance)

    def rows(self, captions: list[str], device: torch.device) -> TextRows:
        """The rows of every encoder for ``captions`` (each the caption trained at this step)."""
        rows: TextRows = {}
        for cache in self.caches.values():
            rows.update(cache.get(captions, device))
        for encode in self._live:
            rows.update(encode(captions))
        return rows


def _without_gradients(encode: Encode) -> Encode:
    """A frozen encoder run at every step: no graph is kept for a backward pass it takes no part in."""

    def encoded(captions: list[str]) -> TextRows:
        with torch.no_grad():
            return encode(captions)

    return encoded
