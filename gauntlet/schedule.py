"""The learning-rate schedule every node follows, one scheduler step per window.

The reference (templar v0.2.85) steps torch's
`SequentialLR([LinearLR(start_factor, total_iters=warmup), CosineAnnealingWarmRestarts(T0,
T_mult, eta_min)], milestones=[warmup])` once per window. A node that joins late or replays a
window must not replay thousands of scheduler steps, so this is the closed form, tested equal to
torch's stepped schedulers.

Behaviour at the hand-over (checked in torch 2.13's source and pinned by the tests): at step
`warmup`, SequentialLR does not step the cosine scheduler; it calls `_update_lr(0)` on it, and
CosineAnnealingWarmRestarts has no `_get_closed_form_lr`, so the lr comes from `get_lr()` with
`T_cur = 0` left by its construction: exactly `peak`. From there each window adds one to
`T_cur`, restarting (`T_i *= T_mult`) when `T_cur` reaches `T_i`. That is the natural closed
form: linear up to `peak` at step `warmup`, then cosine with warm restarts on
`step - warmup`, with no off-by-one at the boundary. Restarts are found by integer arithmetic
(torch's own `step(epoch)` uses a float logarithm, which can misplace a restart boundary).
"""

from __future__ import annotations

import math

from gauntlet.config import ScheduleConfig


def _warm_restart_position(t: int, t0: int, t_mult: int) -> tuple[int, int]:
    """(T_cur, T_i) after `t` cosine steps: position inside the current cycle and its length."""
    t_cur, t_i = t, t0
    if t_mult == 1:
        return t_cur % t_i, t_i
    while t_cur >= t_i:  # cycles grow geometrically, so this runs O(log t) times
        t_cur -= t_i
        t_i *= t_mult
    return t_cur, t_i


def lr_at(global_step: int, cfg: ScheduleConfig) -> float:
    """The learning rate of window `global_step` (0 is the first window trained)."""
    if global_step < 0:
        raise ValueError(f"global_step must be >= 0, got {global_step}")
    warmup = cfg.warmup_windows
    if global_step < warmup:
        factor = cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * global_step / warmup
        return cfg.peak_lr * factor
    t_cur, t_i = _warm_restart_position(global_step - warmup, cfg.t0, cfg.t_mult)
    return cfg.min_lr + (cfg.peak_lr - cfg.min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
