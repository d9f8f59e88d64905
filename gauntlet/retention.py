"""Retention: delete old checkpoints and archived peer files, keeping what validation still needs.

A validator keeps theta of every window (`checkpoints/<W>.safetensors`) and a copy of every
peer's file (`archive/<W>/<uid>.safetensors`): 303 MB after 11 windows of the 2.1M-parameter
model, gigabytes a window at 1.2B. Only two things are needed to go on: the checkpoint of the
next window to validate (theta at its start) and anything of that window or later (a window
being fetched). The rest serves replays; the audit tables keep every file's hash, so a replay of
a pruned window can tell that its inputs are gone rather than compute something else.

`keep = 0` keeps everything (the default: nothing is deleted unless the operator asks).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_CHECKPOINT = re.compile(r"^(\d+)\.safetensors$")
_ARCHIVE = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class Pruned:
    checkpoints: list[int] = field(default_factory=list)
    """Windows whose checkpoint was deleted, ascending."""
    archives: list[int] = field(default_factory=list)
    """Windows whose archived peer files were deleted, ascending."""
    bytes_freed: int = 0


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """Window -> entry for the names that are a window number (temporary files are left alone)."""
    if not folder.is_dir():
        return {}
    found = {}
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match:
            found[int(match.group(1))] = entry
    return found


def _doomed(entries: dict[int, Path], keep: int, next_window: int) -> list[int]:
    """All but the newest `keep` windows, never `next_window` or later; none when keep is 0."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0 (0 keeps all), got {keep}")
    if keep == 0:
        return []
    older = sorted(w for w in entries if w < next_window)
    newest = set(sorted(entries)[-keep:])
    return [w for w in older if w not in newest]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prune(workdir: str | Path, keep_checkpoints: int, keep_archive_windows: int, next_window: int) -> Pruned:
    """Delete all but the newest `keep_checkpoints` checkpoints and `keep_archive_windows`
    windows of archived files under `workdir`; whatever the settings, the checkpoint of
    `next_window` and everything of later windows stay."""
    if next_window < 0:
        raise ValueError(f"next_window must be >= 0, got {next_window}")
    workdir = Path(workdir)
    checkpoints = _numbered(workdir / "checkpoints", _CHECKPOINT)
    archives = _numbered(workdir / "archive", _ARCHIVE)
    if keep_checkpoints and next_window not in checkpoints and any(w < next_window for w in checkpoints):
        raise FileNotFoundError(
            f"no checkpoint of window {next_window} in {workdir / 'checkpoints'}: refusing to prune the "
            "older ones, which may be the only way to rebuild it")
    freed, gone_ckpt, gone_arch = 0, _doomed(checkpoints, keep_checkpoints, next_window), \
        _doomed(archives, keep_archive_windows, next_window)
    for window in gone_ckpt:
        freed += _size(checkpoints[window])
        checkpoints[window].unlink()
    for window in gone_arch:
        freed += _size(archives[window])
        shutil.rmtree(archives[window])
    return Pruned(gone_ckpt, gone_arch, freed)
