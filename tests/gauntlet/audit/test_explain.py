from __future__ import annotations

import json
from pathlib import Path

import pytest

from gauntlet.audit import AuditLookupError, AuditStore, explain
from gauntlet.config import GauntletConfig, load_config, with_overrides
from tests.gauntlet.audit import COPYCAT, HONEST, LATE, MISSING, synthetic_window


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit")
    store = AuditStore(path)
    for window in range(8):
        store.write_window(window, synthetic_window(window))
    return path


def _section(text: str, title: str) -> str:
    """The lines of one section (up to the next blank line)."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return "\n".join(lines[start:end])


def test_late_peer_is_told_it_was_late(root: Path) -> None:
    text = explain(root, LATE, 6)
    verdicts = _section(text, "Verdicts")
    assert "filter: too_late (the peer's fault): uploaded 3.2 s after the put window closed" in verdicts
    assert "counts as no submission" in verdicts
    assert "3.2 s after t_max" in _section(text, "Submission")
    assert "no scores" in _section(text, "Scores")
    rating = _section(text, "Rating")
    assert "penalties: missing x0.75" in rating and "not in this window's match" in rating
    assert "weight 0.000000" in _section(text, "Weight")


def test_copycat_is_told_whom_it_copied(root: Path) -> None:
    text = explain(root, COPYCAT, 6)
    assert f"copy: copied (the peer's fault): top-k overlap 0.82 with uid {HONEST}" in _section(text, "Verdicts")
    scores = _section(text, "Scores")
    assert "indicator b = -1" in scores and "not r_own > s_k" in scores
    assert f"largest top-k overlap 0.82 with uid {HONEST} (>= 0.60" in scores
    assert "this peer was judged the copier" in scores
    assert "barred until window 206" in _section(text, "Rating")


def test_honest_peer_sees_losses_rating_and_weight(root: Path) -> None:
    text = explain(root, HONEST, 6)
    assert "filter: ok (accepted): uploaded 2.0 s into the put window" in _section(text, "Verdicts")
    row = synthetic_window(6)["scores"][0]
    scores = _section(text, "Scores")
    assert f"{row['loss_own_before']:.4f} -> {row['loss_own_after']:.4f} (r_own = {row['own_improvement']:+.3%})" in scores
    assert f"{row['loss_rand_before']:.4f} -> {row['loss_rand_after']:.4f}" in scores
    assert f"s_k = {row['gradient_score']:+.3%}" in scores
    assert "indicator b = +1" in scores and "r_own > s_k" in scores
    assert f"moving average B = {row['moving_average']:.4f}" in scores
    assert "this peer was not judged the copier" in scores
    rating = _section(text, "Rating")
    assert "mu 26.800 -> 27.100, sigma 7.733 -> 7.633" in rating and "took part in this window's match" in rating
    assert "penalties: none" in rating
    weight = _section(text, "Weight")
    assert "weight 0.500000 (50.00% of the total)" in weight and "set on chain at block 65: accepted" in weight


def test_missing_peer_and_weights_not_sent(root: Path) -> None:
    text = explain(root, MISSING, 5)
    assert "not found in the peer's bucket" in _section(text, "Submission")
    assert "no file was found" in _section(text, "Verdicts")
    assert "inactive for 6 window(s) in a row" in _section(text, "Rating")
    assert "not sent to the chain this window (weights are set every 50 windows)" in _section(text, "Weight")


def test_history_lists_previous_windows_newest_first(root: Path) -> None:
    text = explain(root, COPYCAT, 6, history=3)
    assert _section(text, "Summary").strip().startswith("window 6: copied; s_k")
    past = _section(text, "Previous windows (last 3)").splitlines()
    assert [line.split(":")[0].strip() for line in past] == ["window 5", "window 4", "window 3"]
    assert all("copied" in line and "b -1" in line for line in past)
    assert "none: this is its first window" in explain(root, HONEST, 0, history=2)
    assert "Previous windows" not in explain(root, HONEST, 6, history=0)
    long = explain(root, LATE, 7, history=50)  # more than the store holds
    assert len(_section(long, "Previous windows (last 50)").splitlines()) == 7


def test_history_skips_windows_the_peer_was_absent_from(tmp_path: Path) -> None:
    store = AuditStore(tmp_path)
    for window in range(20):  # more windows than the first, narrow look-back covers
        tables = synthetic_window(window)
        if 1 <= window <= 18:  # uid 4 is unknown in these windows
            tables = {t: [r for r in rows if r.get("uid") != COPYCAT] if t != "windows" else rows
                      for t, rows in tables.items()}
        store.write_window(window, tables)
    past = _section(explain(tmp_path, COPYCAT, 19, history=2), "Previous windows (last 2)")
    assert past.strip().startswith("window 0: copied")


def test_thresholds_come_from_the_windows_stored_config(tmp_path: Path) -> None:
    tables = synthetic_window(0)
    strict = with_overrides(GauntletConfig(), ["uniqueness.overlap_halve=0.85", "uniqueness.overlap_reset=0.9",
                                               "uniqueness.overlap_ban=0.95"])
    tables["windows"][0]["config_json"] = strict.to_json()
    AuditStore(tmp_path).write_window(0, tables)
    assert "0.82 with uid 1 (below the 0.85 threshold)" in explain(tmp_path, COPYCAT, 0)
    assert json.loads(strict.to_json())["uniqueness"]["overlap_halve"] == 0.85


def test_unknown_window_or_uid_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditLookupError, match=r"window 60 has no complete audit rows .* windows 0\.\.7 \(8 complete\)"):
        explain(root, HONEST, 60)
    with pytest.raises(AuditLookupError, match=r"uid 99 has no rows in window 3: .*1, 2, 3, 4, 5"):
        explain(root, 99, 3)
    with pytest.raises(AuditLookupError, match="no windows at all"):
        explain(tmp_path, HONEST, 0)
    with pytest.raises(ValueError, match="history"):
        explain(root, HONEST, 3, history=-1)


@pytest.mark.parametrize(("final", "b", "penalties", "said"), [
    (-1.25, 0.2, ["desynced x0.75"], "desynced x0.75 (no effect on F (<= 0): penalties multiply positive values only)"),
    (0.0, 0.0, ["too_late x0.75"], "too_late x0.75 (no effect on F or B (both <= 0)"),
    (-1.25, 0.2, ["top-k overlap: final score x0.5"], "x0.5 (no effect on F (<= 0)"),
    (0.9, 0.2, ["desynced x0.75"], "penalties: desynced x0.75\n"),
    (0.0, 0.2, ["malformed: final score reset, B x0.75"], "penalties: malformed: final score reset, B x0.75\n"),
])
def test_penalties_on_a_score_they_cannot_shrink_say_so(tmp_path: Path, final, b, penalties, said) -> None:
    """Penalties multiply positive values only: a multiplier on F <= 0 changed nothing."""
    tables = synthetic_window(3)
    row = next(r for r in tables["ratings"] if r["uid"] == HONEST)
    row.update(final_score=final, moving_average=b, penalties=penalties)
    AuditStore(tmp_path).write_window(3, tables)
    rating = _section(explain(tmp_path, HONEST, 3), "Rating") + "\n"
    assert said in rating
    assert ("no effect" in rating) == ("no effect" in said)


def test_the_2026_rules_that_fired_are_named(tmp_path: Path) -> None:
    tables = synthetic_window(3)
    row = next(r for r in tables["ratings"] if r["uid"] == MISSING)
    row.update(rules_fired=["cut x0.5: second missing file in a row"])
    AuditStore(tmp_path).write_window(3, tables)
    rating = _section(explain(tmp_path, MISSING, 3), "Rating")
    assert "2026 rules: cut x0.5: second missing file in a row" in rating
    assert "2026 rules" not in _section(explain(tmp_path, HONEST, 3), "Rating")


@pytest.mark.parametrize("b, d, said", [
    (1, 0.004, "indicator b = +1: over 5 own batches: own per-batch improvement - random = +0.400% +- 2 x 0.100%"),
    (-1, -0.004, "the upper bound is below 0"),
    (0, 0.001, "still undecided after 5 own batches (cap 8), so b = +0 (B decays toward 0"),
    (-1, -0.001, "still undecided after 5 own batches (cap 8), so b = -1 (the difference leans against own data"),
])
def test_sequential_test_says_what_it_saw(tmp_path: Path, b: int, d: float, said: str) -> None:
    tables = synthetic_window(0)
    sequential = with_overrides(GauntletConfig(), ["uniqueness.own_test=sequential", "uniqueness.own_max_batches=8"])
    tables["windows"][0]["config_json"] = sequential.to_json()
    row = next(r for r in tables["scores"] if r["uid"] == HONEST)
    row.update(indicator=b, own_batches=5, own_difference=d, own_std_error=0.001)
    AuditStore(tmp_path).write_window(0, tables)
    scores = _section(explain(tmp_path, HONEST, 0), "Scores")
    assert said in scores and f"(t = {d / 0.001:+.2f})" in scores
    assert "r_own > s_k" not in scores  # not the margin rule's words


@pytest.mark.parametrize("overrides, said", [
    ([], "(F = ordinal x max(0, B) x sync for peers in the match; penalties multiply it)"),
    (["weights.own_data=gate", "weights.score_ema=0.3"],
     "(F = 0.3 x F before + 0.7 x (ordinal x sync while B > 0, else 0) for peers in the match (weights.score_ema)"),
])
def test_the_final_score_formula_is_the_windows_own(tmp_path: Path, overrides: list[str], said: str) -> None:
    tables = synthetic_window(0)
    tables["windows"][0]["config_json"] = with_overrides(load_config(preset="paper"), overrides).to_json()
    AuditStore(tmp_path).write_window(0, tables)
    assert said in _section(explain(tmp_path, HONEST, 0), "Rating")


def test_an_anchored_window_shows_the_anchor_and_the_score_against_it(tmp_path: Path) -> None:
    tables = synthetic_window(0)
    cfg = with_overrides(GauntletConfig(), ["rating.anchor=0.6"])
    tables["windows"][0].update(config_json=cfg.to_json(), anchor_mu=20.0, anchor_sigma=7.0)
    AuditStore(tmp_path).write_window(0, tables)
    text = explain(tmp_path, HONEST, 0)
    ordinal = next(r["ordinal"] for r in tables["ratings"] if r["uid"] == HONEST)
    assert "anchor ordinal A = -1.000 (rating.anchor: a player scoring 0.6 x the window's median s_k" in text
    assert f"this peer's ordinal - A = {ordinal + 1:.3f}" in text and "F = (ordinal - A) x max(0, B) x sync" in text
    plain = tmp_path / "plain"
    AuditStore(plain).write_window(0, synthetic_window(0))
    assert "anchor" not in explain(plain, HONEST, 0)
