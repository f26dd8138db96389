"""The dataset scan's look at each image file: its size as shown, and proof that all of it decodes.

The engine decodes every image in full (to cache its latents, or at the step that trains it). A
file cut short by an interrupted copy, or damaged in the middle, has a perfect header, and reading
the header alone let it through to fail there, after minutes of loading. So the scan decodes every
image in full as well. That costs far more than the header (2,000 images of 512 px: about 2.5 s
on two busy cores, against 0.2 s for the headers), and three things keep it fast:

- a JPEG decodes with DCT scaling (Pillow's draft mode): every byte of its compressed data is
  still read and decoded, so a cut or damaged file fails exactly as in the engine, but the pixels
  come out at 1/8 of the size, without the full-size inverse transform;
- several images decode at once, in threads (Pillow's decoders release the GIL), one per CPU;
- what was found is kept, per concept folder, in loratui's cache folder, keyed by each file's
  inode, size and modification and change times: ``loratui check``, then ``loratui train`` and
  the engine, and the wizard's rescans decode an unchanged dataset once, not each time. A file
  that changes in any way (rewritten, replaced, chmod'ed) is decoded again.

Pillow is imported only when an image is decoded: the CLI imports this module at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from loratui.atomic import write_bytes_atomic
from loratui.core.run_files import make_private_dirs, read_run_file
from loratui.paths import cache_dir

if TYPE_CHECKING:
    from PIL import Image

# (width, height) as displayed (after the EXIF orientation), or why the file cannot be used.
ImageVerdict = tuple[int, int] | str

TRUNCATED = "the file is cut short: its image data ends early, as after an interrupted copy or download"

_EXIF_ORIENTATION = 0x0112
# Orientations 5-8 rotate the picture by 90 degrees (some also mirror it): shown upright, its
# width and height are swapped relative to the stored pixels.
_ORIENTATIONS_SWAPPING_SIDES = frozenset({5, 6, 7, 8})
_MAX_THREADS = 8  # more would only add memory: a decoded image can take hundreds of MB
_SERIAL_BELOW = 8  # images: fewer are decoded in the calling thread
_CHUNK = 64  # images handed to a thread at once, at most
_RECORD_FORMAT = 1
_RECORD_LIMIT = 64 << 20  # bytes; a folder of 100,000 images takes a few MB

FileKey = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def read_images(folder: Path, names: list[str]) -> list[ImageVerdict]:
    """The verdict on each image ``folder / name``, in the order of ``names``."""
    keys: dict[str, FileKey] = {}
    verdicts: dict[str, ImageVerdict] = {}
    for name in names:
        try:
            info = os.stat(folder / name)
        except OSError as error:
            verdicts[name] = f"cannot be read ({error.strerror})"
            continue
        keys[name] = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    known = _known_verdicts(folder)
    todo = []
    for name, key in keys.items():
        if name in known and known[name][0] == key:
            verdicts[name] = known[name][1]
        else:
            todo.append(name)
    for name, verdict in zip(todo, _decode_all_of([str(folder / name) for name in todo]), strict=True):
        verdicts[name] = verdict
    if todo or len(known) != len(keys):
        _remember(folder, {name: (keys[name], verdicts[name]) for name in keys})
    return [verdicts[name] for name in names]


def _decode_all_of(paths: list[str]) -> list[ImageVerdict]:
    if len(paths) < _SERIAL_BELOW:
        return [decoded_verdict(path) for path in paths]
    workers = min(_MAX_THREADS, _cpus())
    # Chunks, not one task per image: a small image decodes in well under a millisecond, less
    # than handing it to a thread costs.
    size = max(1, min(_CHUNK, len(paths) // (workers * 4)))
    chunks = [paths[start : start + size] for start in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-scan") as pool:
        return [verdict for chunk in pool.map(_decode_chunk, chunks) for verdict in chunk]


def _decode_chunk(paths: list[str]) -> list[ImageVerdict]:
    return [decoded_verdict(path) for path in paths]


def decoded_verdict(path: str) -> ImageVerdict:
    """Open and decode one image, now."""
    from PIL import Image  # lazy: importing this module must stay cheap

    try:
        with Image.open(path) as img:
            width, height = img.size  # before draft(), which shrinks it
            try:
                _decode_all(img)
            except Image.DecompressionBombError:
                raise
            except MemoryError:
                return "too large to decode in the memory this machine has free"
            except Exception as error:  # noqa: BLE001 - the codecs raise OSError, ValueError, SyntaxError...
                return _undecodable(error)
            orientation = _exif_orientation(img)
    except (PermissionError, FileNotFoundError) as error:
        return f"cannot be read ({error.strerror})"
    except Image.DecompressionBombError:
        return "too many pixels for Pillow to open safely"
    except Exception:  # noqa: BLE001 - Pillow's format plugins raise many types on corrupt headers
        # (OSError, SyntaxError, ValueError, struct.error, EOFError...); all mean the same here.
        return _why_not_an_image(path)
    if orientation in _ORIENTATIONS_SWAPPING_SIDES:
        return height, width
    return width, height


def _why_not_an_image(path: str) -> str:
    # Only asked after Pillow gave up, so good images cost no extra stat call.
    try:
        return "zero bytes" if os.stat(path).st_size == 0 else "not a readable image"
    except OSError as error:
        return f"cannot be read ({error.strerror})"


def _decode_all(img: Image.Image) -> None:
    """Decode every byte of the image data (at 1/8 scale for a JPEG: the same bytes, less work)."""
    if img.format in ("JPEG", "MPO"):
        img.draft(img.mode, (1, 1))  # the smallest DCT scale Pillow offers that is at least 1x1
    img.load()


def _undecodable(error: Exception) -> str:
    words = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if "truncated" in words:  # Pillow's "image file is truncated (N bytes not processed)"
        return TRUNCATED
    return f"its image data is damaged and cannot be decoded ({words})"


def _exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag, as ``ImageOps.exif_transpose`` (the engine) reads it. The image is
    decoded already, so a PNG's eXIf chunk after its pixel data is found without another read."""
    orientation = img.getexif().get(_EXIF_ORIENTATION)
    return orientation if isinstance(orientation, int) else None


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the CPUs this process may run on (a container's share)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# What was found, kept per folder. Only a cache: anything wrong with it (missing, damaged, not
# writable) means the images are decoded again, never an error.


def records_folder() -> Path:
    return cache_dir() / "image-checks"


def _record_path(folder: Path) -> Path:
    real = os.path.realpath(folder)
    return records_folder() / (hashlib.sha256(os.fsencode(real)).hexdigest()[:32] + ".json")


def _known_verdicts(folder: Path) -> dict[str, tuple[FileKey, ImageVerdict]]:
    try:
        record = json.loads(read_run_file(_record_path(folder), _RECORD_LIMIT))
        if record.get("format") != _RECORD_FORMAT:
            return {}
        return {
            name: (tuple(key), tuple(verdict) if isinstance(verdict, list) else verdict)
            for name, (key, verdict) in record["files"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none yet, or not one of ours
        return {}


def _remember(folder: Path, found: dict[str, tuple[FileKey, ImageVerdict]]) -> None:
    path = _record_path(folder)
    record = {"format": _RECORD_FORMAT, "folder": os.fsdecode(os.path.realpath(folder)), "files": found}
    try:
        make_private_dirs(path.parent)
        # surrogates (names that are not UTF-8) as \u escapes: the file stays valid UTF-8 JSON
        write_bytes_atomic(path, json.dumps(record).encode("utf-8"), mode=0o600, durable=False)
    except OSError:  # a read-only or full cache folder: the next scan decodes again
        pass
