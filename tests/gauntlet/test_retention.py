"""Retention deletes old checkpoints and archives, never what the next window needs."""

from __future__ import annotations

import pytest

from gauntlet.retention import Pruned, prune


def _workdir(root, checkpoints, archives):
    for w in checkpoints:
        path = root / "checkpoints" / f"{w:08d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    for w in archives:
        for uid in (1, 2):
            path = root / "archive" / f"{w:08d}" / f"{uid}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"y" * 10)
    (root / "checkpoints" / ".00000009.safetensors.tmp").write_bytes(b"partial")  # a write in progress
    return root


def _left(root):
    ckpt = sorted(int(p.name[:8]) for p in (root / "checkpoints").glob("*.safetensors"))
    arch = sorted(int(p.name) for p in (root / "archive").iterdir())
    return ckpt, arch


def test_keeps_the_newest_and_what_the_next_window_needs(tmp_path):
    root = _workdir(tmp_path, range(0, 6), range(0, 5))  # windows 0-4 validated; theta_5 is next
    pruned = prune(root, keep_checkpoints=2, keep_archive_windows=1, next_window=5)
    assert pruned == Pruned([0, 1, 2, 3], [0, 1, 2, 3], 4 * 100 + 4 * 20)
    assert _left(root) == ([4, 5], [4])
    assert (root / "checkpoints" / ".00000009.safetensors.tmp").exists()
    assert prune(root, 2, 1, 5) == Pruned()  # idempotent


def test_never_deletes_the_next_window_or_later(tmp_path):
    root = _workdir(tmp_path, range(0, 8), range(0, 8))  # the validator is at window 3; 4+ are in progress
    prune(root, keep_checkpoints=1, keep_archive_windows=1, next_window=4)
    assert _left(root) == ([4, 5, 6, 7], [4, 5, 6, 7])


def test_zero_keeps_everything_and_bad_input_is_refused(tmp_path):
    root = _workdir(tmp_path, range(0, 4), range(0, 3))
    assert prune(root, 0, 0, next_window=3) == Pruned()
    assert _left(root) == ([0, 1, 2, 3], [0, 1, 2])
    with pytest.raises(ValueError, match="keep must be >= 0"):
        prune(root, -1, 0, next_window=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint of window 9"):
        prune(root, 1, 0, next_window=9)
    assert prune(tmp_path / "empty", 3, 3, next_window=0) == Pruned()
