"""How fast is the dataset scan? Run: ``python bench/scan_dataset.py [--images N]``.

Builds N small PNGs (8 concept folders, varied sizes, most with a caption) in a temporary folder,
then times ``scan_dataset`` twice over:

- the first scan of the dataset, which decodes every image in full (a file cut short must be
  found by ``check``, not by the engine minutes later), against a bare loop that opens and fully
  decodes each file with Pillow, one after another: the least a serial full-decode scan could do;
- a scan again of the unchanged dataset (best of 3), which reuses what the first one found (kept
  in loratui's cache folder, keyed by each file's size and times), against a bare loop that only
  opens each file and reads its size: the least any header-reading scan could do.

The ratios show what captions, EXIF orientation, buckets and problem checks cost on top (and, for
the first scan, what decoding in threads saves).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from loratui.dataset import scan_dataset

CONCEPTS = 8
# Varied shapes so images spread over several buckets; small so building them is quick.
SIZES = [(64, 64), (96, 64), (64, 96), (128, 64), (64, 128), (80, 72)]


def build_dataset(root: Path, count: int) -> list[Path]:
    """``count`` PNGs spread over CONCEPTS folders; every 10th image has no caption."""
    paths = []
    for index in range(count):
        folder = root / "img" / f"{index % CONCEPTS + 1}_concept{index % CONCEPTS}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:05d}.png"
        shade = index * 37 % 256
        Image.new("RGB", SIZES[index % len(SIZES)], (shade, 255 - shade, 128)).save(path)
        if index % 10:
            path.with_suffix(".txt").write_text(f"concept{index % CONCEPTS}, tag{index % 50}, plain background")
        paths.append(path)
    return paths


def best_of(runs: int, action) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def open_sizes(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as img:
            img.size  # noqa: B018 - reading the header is the point


def decode_all(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as img:
            img.load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        start = time.perf_counter()
        paths = build_dataset(root, args.images)
        print(f"built {len(paths)} images in {time.perf_counter() - start:.1f} s")

        os.environ["LORATUI_CACHE_DIR"] = str(root / "cache")  # an empty cache: the first scan decodes all

        def scan():
            return scan_dataset(root / "img", resolution=128, min_bucket_reso=64, max_bucket_reso=256)

        first = best_of(1, lambda: scan())
        report = scan()
        assert report.num_images == len(paths), report.problems
        again = best_of(3, scan)
        decode_baseline = best_of(1, lambda: decode_all(paths))
        header_baseline = best_of(3, lambda: open_sizes(paths))

    n = len(paths)
    print(f"first scan (decodes all):   {first:.3f} s  ({n / first:,.0f} images/s)")
    print(f"baseline (open+decode):     {decode_baseline:.3f} s  ({n / decode_baseline:,.0f} images/s)")
    print(f"first scan / baseline:      {first / decode_baseline:.2f}x")
    print(f"scan again (unchanged):     {again:.3f} s  ({n / again:,.0f} images/s)")
    print(f"baseline (open+size):       {header_baseline:.3f} s  ({n / header_baseline:,.0f} images/s)")
    print(f"scan again / baseline:      {again / header_baseline:.2f}x")
    print(f"CPUs: {os.cpu_count()}")


if __name__ == "__main__":
    main()
