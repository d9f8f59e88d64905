"""The closed-form LR schedule against torch's own stepped schedulers (the reference's oracle)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LinearLR, SequentialLR

from gauntlet.config import ScheduleConfig
from gauntlet.schedule import lr_at


def _torch_lrs(cfg: ScheduleConfig, steps: int) -> list[float]:
    """The lr of windows 0..steps-1 as the reference gets it: one scheduler step per window."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.peak_lr)
    warmup = LinearLR(opt, start_factor=cfg.warmup_start_factor, total_iters=cfg.warmup_windows)
    cosine = CosineAnnealingWarmRestarts(opt, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=cfg.min_lr)
    sched = SequentialLR(opt, [warmup, cosine], milestones=[cfg.warmup_windows])
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        ScheduleConfig(peak_lr=1e-2, warmup_windows=5, warmup_start_factor=0.1, t0=7, t_mult=2, min_lr=1e-4),
        ScheduleConfig(peak_lr=1.0, warmup_windows=3, warmup_start_factor=0.5, t0=4, t_mult=1, min_lr=0.0),
        ScheduleConfig(peak_lr=3e-4, warmup_windows=1, warmup_start_factor=0.25, t0=2, t_mult=3, min_lr=1e-5),
    ],
)
def test_closed_form_equals_torch_sequential_lr(cfg: ScheduleConfig) -> None:
    want = _torch_lrs(cfg, 60)
    got = [lr_at(step, cfg) for step in range(60)]
    assert got == pytest.approx(want, rel=1e-12, abs=0)


def test_hand_over_at_the_milestone_is_the_peak() -> None:
    cfg = ScheduleConfig(peak_lr=1e-2, warmup_windows=5, warmup_start_factor=0.1, t0=7, t_mult=2, min_lr=1e-4)
    assert lr_at(5, cfg) == pytest.approx(1e-2, rel=1e-15)
    assert lr_at(4, cfg) < lr_at(5, cfg) > lr_at(6, cfg)
    # restarts at 5 + 7 and 5 + 7 + 14: back to the peak
    assert lr_at(12, cfg) == lr_at(26, cfg) == pytest.approx(1e-2, rel=1e-15)


def test_paper_preset_checkpoints() -> None:
    cfg = ScheduleConfig()  # peak 4e-4, warm-up 250 from 0.1x, T0 20000, T_mult 2, min 4e-5
    assert lr_at(0, cfg) == pytest.approx(4e-5, rel=1e-12)
    assert lr_at(125, cfg) == pytest.approx(2.2e-4, rel=1e-12)
    assert lr_at(250, cfg) == pytest.approx(4e-4, rel=1e-12)
    assert lr_at(250 + 10_000, cfg) == pytest.approx(2.2e-4, rel=1e-12)  # half a cycle: the mean
    assert lr_at(250 + 19_999, cfg) == pytest.approx(4e-5, rel=1e-6)
    assert lr_at(250 + 20_000, cfg) == pytest.approx(4e-4, rel=1e-12)  # first restart
    assert lr_at(250 + 20_000 + 20_000, cfg) == pytest.approx(2.2e-4, rel=1e-12)  # cycle 2 is 40000
    assert lr_at(250 + 60_000, cfg) == pytest.approx(4e-4, rel=1e-12)  # second restart


def test_paper_preset_equals_torch_through_the_first_restart() -> None:
    cfg = ScheduleConfig()
    steps = 250 + 20_000 + 50
    want = _torch_lrs(cfg, steps)
    for step in [0, 1, 124, 249, 250, 251, 5_000, 20_249, 20_250, 20_251, steps - 1]:
        assert lr_at(step, cfg) == pytest.approx(want[step], rel=1e-12, abs=0), step


def test_no_warmup_starts_at_the_peak_and_negative_steps_are_refused() -> None:
    cfg = ScheduleConfig(warmup_windows=0, t0=10, t_mult=1, peak_lr=1.0, min_lr=0.0)
    assert lr_at(0, cfg) == 1.0
    assert lr_at(5, cfg) == pytest.approx(0.5, rel=1e-12)
    assert lr_at(10, cfg) == 1.0
    with pytest.raises(ValueError, match="global_step"):
        lr_at(-1, cfg)
