"""Turning the scanned dataset into tensors: pixels, latents (cached or not) and caption tokens.

The order of the images is not decided here: ``DatasetReport.epoch_batches`` (torch-free, shared
with the CLI) plans every epoch, so the step counts the user is shown are the ones trained.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loratui.buckets import MAX_ASPECT_RATIO, crop_geometry, too_elongated
from loratui.dataset import ImageEntry
from loratui.errors import UserError
from loratui.images import to_rgb8

log = logging.getLogger("engine.data")


def load_pixels(entry: ImageEntry) -> torch.Tensor:
    """The image resized to cover its bucket and centre-cropped to it: float (3, H, W) in [-1, 1].

    The check decoded every image before the run; a file changed since (or a check skipped) still
    ends in a UserError that names it, never in Pillow's bare "image file is truncated"."""
    try:
        data = _bucket_pixels(entry)
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's codecs raise OSError, ValueError, SyntaxError...
        words = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(
            f"the image cannot be decoded ({words})",
            str(entry.path),
            "copy it again from where it came from, or delete it, then run `loratui check` again",
            "dataset",
        ) from exc
    bucket_w, bucket_h = entry.bucket
    pixels = data.view(bucket_h, bucket_w, 3).permute(2, 0, 1).float()
    return pixels / 127.5 - 1.0


def _bucket_pixels(entry: ImageEntry) -> torch.Tensor:
    from PIL import Image, ImageOps

    with Image.open(entry.path) as image:
        image = to_rgb8(ImageOps.exif_transpose(image))
        if too_elongated(image.width, image.height):  # replaced since the check: the resize could ask for GBs
            raise UserError(
                f"the image is {image.width}x{image.height} pixels, more than {MAX_ASPECT_RATIO} times as long "
                "as it is wide",
                str(entry.path),
                f"crop it to at most {MAX_ASPECT_RATIO}:1, or delete it",
                "dataset",
            )
        bucket_w, bucket_h = entry.bucket
        scaled_w, scaled_h, left, top = crop_geometry(image.width, image.height, entry.bucket)
        if (scaled_w, scaled_h) != image.size:
            image = image.resize((scaled_w, scaled_h), Image.Resampling.LANCZOS)
        image = image.crop((left, top, left + bucket_w, top + bucket_h))
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)


def stack_pixels(batch: list[ImageEntry]) -> torch.Tensor:
    return torch.stack([load_pixels(entry) for entry in batch])


class LatentCache:
    """VAE posterior parameters (mean and log-variance) per image, so the VAE runs once per image.

    A fresh latent is sampled from the cached posterior at every step, exactly as encoding the
    image each step would do. ``memory`` keeps them in RAM; ``disk`` also writes them to
    ``folder`` keyed by the image's path, size, mtime, bucket and the VAE, so a later run with the
    same data skips encoding.
    """

    def __init__(self, mode: str, folder: Path | None, vae_id: str) -> None:
        self.mode = mode
        self.folder = folder
        self.vae_id = vae_id
        self._params: dict[Path, torch.Tensor] = {}

    def _file_for(self, entry: ImageEntry) -> Path:
        stat = entry.path.stat()
        key = f"{entry.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{entry.bucket}|{self.vae_id}"
        assert self.folder is not None
        # surrogateescape: an image's name need not be UTF-8 (its undecodable bytes are kept as they are)
        return self.folder / (hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest() + ".safetensors")

    def fill(
        self,
        entries: list[ImageEntry],
        encode: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        progress: Callable[[int, int], None],
    ) -> None:
        unique = list({entry.path: entry for entry in entries}.values())
        todo: list[ImageEntry] = []
        for entry in unique:
            cached = self._file_for(entry) if self.mode == "disk" else None
            if cached is not None and cached.is_file():
                self._params[entry.path] = load_file(cached)["params"]
            else:
                todo.append(entry)
        done = len(unique) - len(todo)
        progress(done, len(unique))
        # Images of one bucket share a shape, so they can be encoded together.
        by_bucket: dict[tuple[int, int], list[ImageEntry]] = {}
        for entry in todo:
            by_bucket.setdefault(entry.bucket, []).append(entry)
        for group in by_bucket.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                params = encode(stack_pixels(chunk)).float().cpu()
                for entry, row in zip(chunk, params, strict=True):
                    self._params[entry.path] = row.clone()
                    if self.mode == "disk":
                        self._save(entry, row)
                done += len(chunk)
                progress(done, len(unique))

    def _save(self, entry: ImageEntry, row: torch.Tensor) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._file_for(entry)
        temp = target.with_suffix(".tmp")
        save_file({"params": row.contiguous()}, temp)
        temp.replace(target)

    def get(self, batch: list[ImageEntry]) -> torch.Tensor:
        return torch.stack([self._params[entry.path] for entry in batch])


def sample_latents(params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw from a diagonal Gaussian posterior given as concatenated (mean, logvar) channels."""
    mean, logvar = torch.chunk(params, 2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
