"""Turning the scanned dataset into tensors: pixels, latents (cached or not) and caption tokens.

The order of the images is not decided here: ``DatasetReport.epoch_batches`` (torch-free, shared
with the CLI) plans every epoch, so the step counts the user is shown are the ones trained.

Augmentation (``flip_aug``, ``random_crop``, per image from its subset's options) draws from a
:func:`draw` made of the run's seed and the item's place in the plan (epoch, batch, position): no
state to save, so a resumed run draws what the uninterrupted one would have. Without a draw (the
eval and validation losses, the latent cache's fill) nothing is augmented.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loratui.buckets import MAX_ASPECT_RATIO, crop_geometry, too_elongated
from loratui.dataset import ImageEntry
from loratui.errors import UserError
from loratui.images import to_rgb8

log = logging.getLogger("engine.data")


def draw(seed: int, epoch: int, batch_index: int, position: int) -> random.Random:
    """The random numbers of one item of the plan: the same item of the same run, the same draws.
    A str seed is hashed with SHA-512 by ``random`` (never salted per process, as hash() is)."""
    return random.Random(f"loratui-augment:{seed}:{epoch}:{batch_index}:{position}")


def batch_draws(seed: int, epoch: int, batch_index: int, size: int) -> list[random.Random]:
    return [draw(seed, epoch, batch_index, position) for position in range(size)]


def flipped(entry: ImageEntry, rng: random.Random | None) -> bool:
    """Whether this draw mirrors the image: half the time with flip_aug (sd-scripts' 50%). Drawn
    first (before a random crop's position), so the latent cache and the pixels agree."""
    return bool(entry.options.flip_aug and rng is not None and rng.random() < 0.5)


def load_pixels(entry: ImageEntry, rng: random.Random | None = None) -> torch.Tensor:
    """The image resized to cover its bucket and cropped to it: float (3, H, W) in [-1, 1]. The
    crop is centred, or with random_crop and a draw ``rng`` at a random place; with flip_aug and a
    draw the result is mirrored left to right half the time.

    The check decoded every image before the run; a file changed since (or a check skipped) still
    ends in a UserError that names it, never in Pillow's bare "image file is truncated"."""
    mirror = flipped(entry, rng)
    crop_rng = rng if entry.options.random_crop else None
    try:
        data = _bucket_pixels(entry, crop_rng)
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
    if mirror:
        pixels = torch.flip(pixels, dims=[2])
    return pixels / 127.5 - 1.0


def _geometry(width: int, height: int, entry: ImageEntry, rng: random.Random | None) -> tuple[int, int, int, int]:
    """(scaled_w, scaled_h, left, top): the size to resize to and where the bucket's box sits in it."""
    bucket_w, bucket_h = entry.bucket
    resized = entry.resized
    if resized is not None and resized[0] >= bucket_w and resized[1] >= bucket_h:
        # bucket_no_upscale: sd-scripts' own size (the image's, when small), trimmed to the bucket
        scaled_w, scaled_h = resized
        left, top = (scaled_w - bucket_w) // 2, (scaled_h - bucket_h) // 2
    else:
        scaled_w, scaled_h, left, top = crop_geometry(width, height, entry.bucket)
    if rng is not None:  # random_crop: anywhere in the overflow, both ends included (sd-scripts' randint)
        left, top = rng.randint(0, scaled_w - bucket_w), rng.randint(0, scaled_h - bucket_h)
    return scaled_w, scaled_h, left, top


def _bucket_pixels(entry: ImageEntry, rng: random.Random | None) -> torch.Tensor:
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
        scaled_w, scaled_h, left, top = _geometry(image.width, image.height, entry, rng)
        if (scaled_w, scaled_h) != image.size:
            image = image.resize((scaled_w, scaled_h), Image.Resampling.LANCZOS)
        image = image.crop((left, top, left + bucket_w, top + bucket_h))
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)


def stack_pixels(batch: list[ImageEntry], draws: list[random.Random] | None = None) -> torch.Tensor:
    """The batch's pixels; with ``draws`` (one per image, :func:`batch_draws`) augmented."""
    rngs = draws if draws is not None else [None] * len(batch)
    return torch.stack([load_pixels(entry, rng) for entry, rng in zip(batch, rngs, strict=True)])


class LatentCache:
    """VAE posterior parameters (mean and log-variance) per image, so the VAE runs once per image.

    A fresh latent is sampled from the cached posterior at every step, exactly as encoding the
    image each step would do. ``memory`` keeps them in RAM; ``disk`` also writes them to
    ``folder`` keyed by the image's path, size, mtime, bucket and the VAE, so a later run with the
    same data skips encoding. An image with flip_aug has its mirrored latents cached too (as
    sd-scripts does), and a step's draw picks one of the two. random_crop cannot be cached (the
    check refuses the pair): its pixels differ every step.
    """

    def __init__(self, mode: str, folder: Path | None, vae_id: str) -> None:
        self.mode = mode
        self.folder = folder
        self.vae_id = vae_id
        self._params: dict[tuple[Path, bool], torch.Tensor] = {}  # (image, mirrored) -> posterior

    def _file_for(self, entry: ImageEntry, mirrored: bool = False) -> Path:
        stat = entry.path.stat()
        key = f"{entry.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{entry.bucket}|{self.vae_id}"
        if entry.resized is not None:  # bucket_no_upscale crops another part of the image
            key += f"|resized={entry.resized}"
        if mirrored:
            key += "|flipped"
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
        # (image, mirrored): the mirrored latents too for the images that may be flipped
        wanted = [(entry, False) for entry in unique] + [(entry, True) for entry in unique if entry.options.flip_aug]
        todo: list[tuple[ImageEntry, bool]] = []
        for entry, mirrored in wanted:
            cached = self._file_for(entry, mirrored) if self.mode == "disk" else None
            if cached is not None and cached.is_file():
                self._params[(entry.path, mirrored)] = load_file(cached)["params"]
            else:
                todo.append((entry, mirrored))
        done = len(wanted) - len(todo)
        progress(done, len(wanted))
        # Images of one bucket share a shape, so they can be encoded together.
        by_bucket: dict[tuple[tuple[int, int], bool], list[ImageEntry]] = {}
        for entry, mirrored in todo:
            by_bucket.setdefault((entry.bucket, mirrored), []).append(entry)
        for (_bucket, mirrored), group in by_bucket.items():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                pixels = stack_pixels(chunk)
                params = encode(torch.flip(pixels, dims=[3]) if mirrored else pixels).float().cpu()
                for entry, row in zip(chunk, params, strict=True):
                    self._params[(entry.path, mirrored)] = row.clone()
                    if self.mode == "disk":
                        self._save(entry, mirrored, row)
                done += len(chunk)
                progress(done, len(wanted))

    def _save(self, entry: ImageEntry, mirrored: bool, row: torch.Tensor) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._file_for(entry, mirrored)
        temp = target.with_suffix(".tmp")
        save_file({"params": row.contiguous()}, temp)
        temp.replace(target)

    def get(self, batch: list[ImageEntry], draws: list[random.Random] | None = None) -> torch.Tensor:
        """The cached posteriors of ``batch``; with ``draws`` (one per image) the mirrored ones where
        a draw flips the image."""
        rngs = draws if draws is not None else [None] * len(batch)
        return torch.stack(
            [self._params[(entry.path, flipped(entry, rng))] for entry, rng in zip(batch, rngs, strict=True)]
        )


def sample_latents(params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw from a diagonal Gaussian posterior given as concatenated (mean, logvar) channels."""
    mean, logvar = torch.chunk(params, 2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


def tokenize(tokenizer, captions: list[str], max_tokens: int = 75) -> torch.Tensor:
    """The token ids of ``captions``, padded or cut to the tokenizer's window (CLIP: 77, the start
    and end tokens and 75 between): (B, 77). With ``max_tokens`` 150 or 225 (dataset.max_token_length),
    as sd-scripts does: each caption is cut to that many tokens and split into 75-token chunks, each
    with its own start and end tokens: (B * chunks, 77), a caption's chunks in a row, for
    :func:`join_chunks` to put together after the encoder."""
    window = tokenizer.model_max_length
    if max_tokens + 2 <= window:
        return _token_ids(tokenizer, captions, window)
    ids = _token_ids(tokenizer, captions, max_tokens + 2)
    inner = window - 2  # the tokens of a chunk between its start and end
    return torch.stack([_chunk(tokenizer, row, start, inner) for row in ids for start in range(1, max_tokens, inner)])


def _token_ids(tokenizer, captions: list[str], length: int) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


def _chunk(tokenizer, row: torch.Tensor, start: int, inner: int) -> torch.Tensor:
    """Tokens ``start`` .. ``start + inner`` of one caption's ids between its first token (start)
    and its last one (end, or padding). A tokenizer that pads with something else than the end
    token (SD 2.x, SDXL's second) gets an end token where the caption stops within the chunk, and
    a chunk past the caption's end starts with one (sd-scripts' rules)."""
    chunk = torch.cat([row[:1], row[start : start + inner], row[-1:]])
    end, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad != end:
        if int(chunk[-2]) not in (end, pad):
            chunk[-1] = end
        if int(chunk[1]) == pad:
            chunk[1] = end
    return chunk


def join_chunks(states: torch.Tensor, batch: int) -> torch.Tensor:
    """An encoder's outputs for the chunks of :func:`tokenize`, (B * chunks, 77, C), as the
    sequences the denoiser reads, as sd-scripts joins them: the first chunk's start state, each
    chunk's 75 inner states, the last chunk's final state: (B, 75 * chunks + 2, C). One chunk is
    left as it is."""
    chunked = states.reshape(batch, -1, *states.shape[1:])  # (B, chunks, 77, C)
    if chunked.shape[1] == 1:
        return chunked[:, 0]
    inner = chunked[:, :, 1:-1].reshape(batch, -1, states.shape[-1])
    return torch.cat([chunked[:, 0, :1], inner, chunked[:, -1, -1:]], dim=1)
