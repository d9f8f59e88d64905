"""The model context keeps the theta its model holds, and reloads when it does not."""

from __future__ import annotations

import pytest
import torch

from gauntlet.config import with_overrides
from gauntlet.window.context import build_context, checkpoint_path, context_for


def test_held_theta_is_reused_and_anything_else_is_read_from_the_checkpoint(tiny_config, tmp_path):
    ctx = build_context(tiny_config)
    name, param = next(iter(ctx.load_theta(tmp_path, 0).items()))
    on_disk = param.clone()
    with torch.no_grad():
        param.add_(1.0)  # changed in memory only
    assert torch.equal(ctx.load_theta(tmp_path, 0)[name], on_disk + 1.0)  # held: not reloaded
    ctx.holds = None  # what the step stage does before stepping in place
    assert torch.equal(ctx.load_theta(tmp_path, 0)[name], on_disk)  # read back from the checkpoint
    ctx.save_theta(tmp_path, 1)
    assert checkpoint_path(tmp_path, 1).exists()
    assert torch.equal(ctx.load_theta(tmp_path, 1)[name], on_disk)  # held after the save


def test_another_workdir_is_read_from_its_own_checkpoint(tiny_config, tmp_path):
    ctx = build_context(tiny_config)
    name, param = next(iter(ctx.load_theta(tmp_path / "a", 0).items()))
    with torch.no_grad():
        param.add_(1.0)
    ctx.save_theta(tmp_path / "a", 1)
    other = ctx.load_theta(tmp_path / "b", 0)[name].clone()  # a replay's scratch folder: the initial state
    assert not torch.equal(other, ctx.load_theta(tmp_path / "a", 1)[name])


def test_a_missing_checkpoint_after_the_first_is_an_error(tiny_config, tmp_path):
    ctx = build_context(tiny_config)
    ctx.load_theta(tmp_path, 0)  # the first window starts from the deterministic initial weights
    with pytest.raises(FileNotFoundError, match="no checkpoint for window 7"):
        ctx.load_theta(tmp_path, 7)


def test_one_model_per_process_whatever_the_overrides(tiny_config):
    first = context_for(tiny_config)
    assert context_for(with_overrides(tiny_config, ["rating.beta=20", "validator.workdir=/elsewhere"])) is first
    bigger = with_overrides(tiny_config, ["model.init_seed=1"])
    assert context_for(bigger) is not first and context_for(tiny_config) is not first  # one slot, rebuilt
