"""The validator context keeps the theta its model holds, and reloads when it does not."""

from __future__ import annotations

import torch

from gauntlet.window.context import build_context


def test_held_theta_is_reused_and_anything_else_is_read_from_the_checkpoint(tiny_config, tmp_path):
    ctx = build_context(tiny_config, tmp_path)
    name, param = next(iter(ctx.load_theta(0).items()))
    on_disk = param.clone()
    with torch.no_grad():
        param.add_(1.0)  # changed in memory only
    assert torch.equal(ctx.load_theta(0)[name], on_disk + 1.0)  # held: not reloaded
    ctx.holds = None  # what aggregate_stage does before stepping in place
    assert torch.equal(ctx.load_theta(0)[name], on_disk)  # read back from the checkpoint
    ctx.save_theta(1)
    assert ctx.holds == 1 and ctx.checkpoint_path(1).exists()


def test_a_missing_checkpoint_after_the_first_is_an_error(tiny_config, tmp_path):
    import pytest

    ctx = build_context(tiny_config, tmp_path)
    ctx.load_theta(0)  # the first window starts from the deterministic initial weights
    with pytest.raises(FileNotFoundError, match="no checkpoint for window 7"):
        ctx.load_theta(7)
