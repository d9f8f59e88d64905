"""Stage 1 checks: put-window timing, the sync probe, steps behind and the sync score."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta

import pytest
import torch

from gauntlet.filter import SyncCheck, probe_values, steps_behind, sync_check, sync_score, sync_verdict, timing_verdict
from gauntlet.verdicts import Reason

T_MIN = 1_700_000_000.0
T_MAX = T_MIN + 10.0


def test_missing_file() -> None:
    v = timing_verdict(5, None, T_MIN, T_MAX)
    assert (v.uid, v.reason, v.stage) == (5, Reason.MISSING, "filter")


def test_too_late_names_the_delay_and_the_close() -> None:
    v = timing_verdict(5, T_MAX + 3.2, T_MIN, T_MAX)
    assert v.reason is Reason.TOO_LATE
    assert v.detail == "uploaded 3.2 s after the put window closed at 2023-11-14T22:13:30.000+00:00"


def test_too_early() -> None:
    v = timing_verdict(5, T_MIN - 0.5, T_MIN, T_MAX)
    assert v.reason is Reason.TOO_EARLY
    assert v.detail == "uploaded 0.5 s before the put window opened at 2023-11-14T22:13:20.000+00:00"


@pytest.mark.parametrize("t", [T_MIN, T_MIN + 4.0, T_MAX])
def test_bounds_are_inclusive(t: float) -> None:
    assert timing_verdict(5, t, T_MIN, T_MAX).ok


@pytest.mark.parametrize(("delta", "reason"), [(-1e-3, Reason.TOO_EARLY), (10.001, Reason.TOO_LATE)])
def test_just_outside_the_bounds(delta: float, reason: Reason) -> None:
    assert timing_verdict(5, T_MIN + delta, T_MIN, T_MAX).reason is reason


def test_aware_datetimes_as_object_stores_give_them() -> None:
    inside = datetime.fromtimestamp(T_MIN + 2, tz=UTC).astimezone(tz=None)
    assert timing_verdict(1, inside, T_MIN, T_MAX).ok
    late = datetime.fromtimestamp(T_MAX, tz=UTC) + timedelta(seconds=1)
    assert timing_verdict(1, late, T_MIN, T_MAX).reason is Reason.TOO_LATE
    with pytest.raises(ValueError, match="no timezone"):
        timing_verdict(1, datetime(2025, 1, 1), T_MIN, T_MAX)
    with pytest.raises(ValueError, match="empty"):
        timing_verdict(1, T_MIN, T_MAX, T_MIN)


def test_probe_values_are_flat_elements_10_and_11() -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(8, 4, generator=gen), "b": torch.randn(16, generator=gen)}
    probe = probe_values(params)
    assert list(probe) == ["w", "b"]
    assert probe["w"] == [params["w"][2, 2].item(), params["w"][2, 3].item()]
    assert probe["b"] == [params["b"][10].item(), params["b"][11].item()]


def test_probe_of_a_tiny_tensor_is_clamped_to_its_last_element() -> None:
    probe = probe_values({"g": torch.tensor([1.0, 2.0, 3.0]), "one": torch.tensor([7.0])})
    assert probe == {"g": [3.0, 3.0], "one": [7.0, 7.0]}


def test_probe_of_half_precision_and_other_elements() -> None:
    x = torch.arange(20, dtype=torch.bfloat16)
    assert probe_values({"x": x}, elements=(0, 19, 3)) == {"x": [0.0, 19.0, 3.0]}
    with pytest.raises(ValueError, match="non-negative"):
        probe_values({"x": x}, elements=(-1,))


def test_steps_behind_golden() -> None:
    ours = {"a": [1.0, 2.0], "b": [0.0, 0.0]}
    theirs = {"a": [1.0 + 2e-4, 2.0 - 4e-4], "b": [0.0, 2e-4]}
    assert steps_behind(ours, theirs, lr=1e-4) == pytest.approx((2 + 4 + 0 + 2) / 4)


def test_steps_behind_counts_sign_steps_of_a_real_model_state() -> None:
    """A peer that missed k sign-SGD steps of size lr is k steps behind."""
    gen = torch.Generator().manual_seed(1)
    lr = 1e-3
    theta = {"w": torch.randn(32, 16, generator=gen), "v": torch.randn(64, generator=gen)}
    stale = {n: p.clone() for n, p in theta.items()}
    for _ in range(3):
        for p in theta.values():
            p -= lr * torch.sign(torch.randn(p.shape, generator=gen))
    x = steps_behind(probe_values(theta), probe_values(stale), lr)
    # random signs partly cancel: |sum of 3 steps| is 1 or 3 steps, never 0 or 2
    per_element = [abs(a - b) / lr for n in theta for a, b in zip(probe_values(theta)[n], probe_values(stale)[n])]
    assert all(min(abs(e - 1), abs(e - 3)) < 1e-3 for e in per_element)
    assert x == pytest.approx(sum(per_element) / len(per_element), rel=1e-9)
    assert steps_behind(probe_values(theta), probe_values(theta), lr) == 0.0


def test_steps_behind_refuses_mismatched_probes() -> None:
    with pytest.raises(ValueError, match="different tensors"):
        steps_behind({"a": [1.0, 2.0]}, {"b": [1.0, 2.0]}, 1e-3)
    with pytest.raises(ValueError, match="lr must be > 0"):
        steps_behind({"a": [1.0, 2.0]}, {"a": [1.0, 2.0]}, 0.0)
    with pytest.raises(ValueError, match="1 validator values vs 2"):
        steps_behind({"a": [1.0]}, {"a": [1.0, 2.0]}, 1e-3)


@pytest.mark.parametrize(("x", "expected"), [
    (0.0, 1.0), (1.0, 0.8**2.5), (2.5, 0.5**2.5), (3.0, 0.4**2.5), (5.0, 0.0), (12.0, 0.0),
])
def test_sync_score_golden(x: float, expected: float) -> None:
    assert sync_score(x) == pytest.approx(expected, abs=1e-15)


def test_sync_score_literal_values() -> None:
    assert sync_score(1.0) == pytest.approx(0.5724334022399462)
    assert sync_score(2.0, cap=4.0, exponent=1.0) == 0.5
    with pytest.raises(ValueError):
        sync_score(-0.1)
    with pytest.raises(ValueError):
        sync_score(math.nan)


def test_sync_verdict() -> None:
    v = sync_verdict(9, 4.2, 3.0)
    assert (v.uid, v.reason, v.stage) == (9, Reason.DESYNCED, "sync")
    assert v.detail == "4.2 steps behind the validator (limit 3)"
    assert sync_verdict(9, 3.0, 3.0).ok
    assert sync_verdict(9, 3.0001, 3.0).reason is Reason.DESYNCED
    assert sync_verdict(9, 0.0, 3.0).detail == "0.0 steps behind the validator"


BIG = 1.7e308  # finite; twice it is not


@pytest.mark.parametrize(("ours", "theirs"), [([BIG, -BIG], [-BIG, BIG]), ([0.0, 0.0], [BIG, BIG]),
                                              ([5e-324, 0.0], [-5e-324, 0.0])])
def test_steps_behind_is_finite_for_any_finite_probe(ours: list[float], theirs: list[float]) -> None:
    """|a - b| of two finite floats can overflow, and their sum can overflow fsum: x saturates."""
    many = {f"t{i}": ours for i in range(50)}
    for lr in (1e-300, 1e-3, 1e300):
        x = steps_behind(many, {f"t{i}": theirs for i in range(50)}, lr)
        assert math.isfinite(x) and x >= 0
    assert steps_behind({"a": [BIG, -BIG]}, {"a": [-BIG, BIG]}, 1.0) == sys.float_info.max  # 3.4e308 saturates
    assert steps_behind({"a": [BIG, 0.0]}, {"a": [0.0, 0.0]}, 1.0) == BIG / 2  # exact where it fits


def test_steps_behind_refuses_non_finite_values_and_lr() -> None:
    with pytest.raises(ValueError, match="finite"):
        steps_behind({"a": [math.nan, 0.0]}, {"a": [0.0, 0.0]}, 1e-3)
    with pytest.raises(ValueError, match="lr must be > 0 and finite"):
        steps_behind({"a": [0.0]}, {"a": [0.0]}, math.inf)


def _check(ours: dict, theirs: dict, lr: float = 1e-3) -> SyncCheck:
    return sync_check(4, ours, theirs, lr, cap=5.0, exponent=2.5, max_steps=3.0)


def test_sync_check_gives_a_verdict_for_probes_that_cannot_be_compared() -> None:
    cases = [({"a": [1.0, 2.0]}, {"b": [1.0, 2.0]}, Reason.MALFORMED, "different tensors"),
             ({"a": [1.0, 2.0]}, {"a": [1.0]}, Reason.MALFORMED, "2 validator values vs 1"),
             ({"a": []}, {"a": []}, Reason.MALFORMED, "no values"),
             ({"a": [1.0, 2.0]}, {"a": [1.0, math.inf]}, Reason.NON_FINITE, "NaN or Inf"),
             ({"a": [math.nan, 2.0]}, {"a": [1.0, 2.0]}, Reason.VALIDATOR_FAULT, "validator's own probe")]
    for ours, theirs, reason, words in cases:
        out = _check(ours, theirs)
        assert (out.verdict.uid, out.verdict.reason, out.verdict.stage) == (4, reason, "sync")
        assert words in out.verdict.detail and out.steps is None and out.score is None


def test_sync_check_scores_extreme_probes_finitely() -> None:
    out = _check({"a": [BIG, -BIG]}, {"a": [-BIG, BIG]}, lr=1e-300)
    assert out.verdict.reason is Reason.DESYNCED and out.score == 0.0 and math.isfinite(out.steps)
    assert "1.8e+308 steps behind" in out.verdict.detail
    ok = _check({"a": [1.0, 2.0]}, {"a": [1.0 + 2e-3, 2.0]})
    assert ok.verdict.ok and ok.steps == pytest.approx(1.0) and ok.score == pytest.approx(0.8**2.5)
