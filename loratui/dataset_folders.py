"""What the setup wizard does with the dataset's folders besides scanning them.

- :func:`tree_signature`: a cheap fingerprint of ``img/`` (and ``reg/``): the concept folders and
  the name, size and modification time of each file in them. The wizard's Dataset step polls it
  and scans again when it changes: images are copied in, captions edited from another terminal.
  It reads directory entries and their ``stat`` only, never an image, and skips hidden entries
  as the scan does (an editor's swap file does not count as a change).
- :func:`rename_repeats`: renames ``<repeats>_<name>`` concept folders to other repeats (what the
  step calculator suggests), refusing when a folder of the new name exists.

No UI code and no torch here.
"""

from __future__ import annotations

import os
from pathlib import Path

from loratui.dataset import parse_concept_folder
from loratui.errors import UserError

Signature = tuple


def tree_signature(*roots: Path | None) -> Signature:
    """A value that changes when a concept folder or a file in one is added, removed, renamed,
    grows or is written to, in any of ``roots`` (None entries are skipped)."""
    return tuple((str(root), _folder_entries(root, depth=1)) for root in roots if root is not None)


def _folder_entries(folder: Path, depth: int) -> tuple | str:
    try:
        with os.scandir(folder) as scan:
            entries = sorted((entry for entry in scan if not entry.name.startswith(".")), key=lambda e: e.name)
            listed = []
            for entry in entries:
                if entry.is_dir():
                    inner = _folder_entries(Path(entry.path), depth - 1) if depth > 0 else ()
                    listed.append((entry.name, "dir", inner))
                else:
                    stat = entry.stat()
                    listed.append((entry.name, stat.st_size, stat.st_mtime_ns))
            return tuple(listed)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "not a folder"
    except OSError as exc:  # unreadable now: a change to report when it becomes readable
        return f"error {exc.errno}"


def renamed_for_repeats(folder: Path, repeats: int) -> Path | None:
    """``img/10_ohwx woman`` -> ``img/15_ohwx woman``; None when the folder has those repeats
    already or is no concept folder."""
    parsed = parse_concept_folder(folder.name)
    if parsed is None or parsed[0] == repeats:
        return None
    return folder.with_name(f"{repeats}_{parsed[1]}")


def rename_repeats(folders: list[Path], repeats: int) -> list[tuple[Path, Path]]:
    """Rename each concept folder to ``repeats``; the (old, new) pairs done.

    Checks every new name first and renames nothing when one exists already or two folders would
    get the same name (merging two concepts is for the user to decide). UserError names the folder."""
    if repeats < 1:
        raise UserError(f"{repeats} repeats would leave the images untrained", "repeats", "use 1 repeat or more")
    plan = [(folder, target) for folder in folders if (target := renamed_for_repeats(folder, repeats)) is not None]
    targets = [target for _folder, target in plan]
    for folder, target in plan:
        if target.exists():
            raise UserError(
                f"cannot rename {folder.name!r} to {target.name!r}: that folder exists already",
                str(target),
                "merge the two folders yourself or rename one, then look at the scan again",
            )
        if targets.count(target) > 1:
            raise UserError(
                f"two folders would both be renamed {target.name!r}",
                str(target),
                "give the concepts different names first",
            )
    done: list[tuple[Path, Path]] = []
    for folder, target in plan:
        if target.exists():  # appeared since the check: Linux would replace an empty folder silently
            raise UserError(
                f"cannot rename {folder.name!r} to {target.name!r}: that folder exists already",
                str(target),
                "merge the two folders yourself or rename one",
            )
        try:
            folder.rename(target)
        except OSError as exc:
            done_text = f" ({len(done)} renamed before it)" if done else ""
            raise UserError(
                f"cannot rename {folder.name!r} to {target.name!r}: {exc.strerror or exc}{done_text}",
                str(folder),
                "check the folder's permissions, or rename it yourself",
            ) from exc
        done.append((folder, target))
    return done
