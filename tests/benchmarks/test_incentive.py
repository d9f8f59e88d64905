"""The incentive benchmark's pieces that decide its figures: the aggregation rules and the figures."""

from __future__ import annotations

import pytest
import torch

from benchmarks.aggregators import (
    bulyan,
    centered_clipping,
    flatten,
    krum,
    median,
    multi_krum,
    tolerable,
    trimmed_mean,
    unflatten,
)
from benchmarks.incentive_figures import figures, own_test, spearman, windows_to_exclude


def _cluster(n_good: int = 9, n_bad: int = 2, dim: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    good = 1.0 + 0.01 * torch.randn(n_good, dim, generator=gen)
    bad = torch.full((n_bad, dim), -50.0)
    return torch.cat([good, bad])


def test_robust_rules_stay_with_the_honest_cluster_and_the_mean_does_not() -> None:
    x = _cluster()
    assert float(x.mean(0).mean()) < 0  # two outliers drag the mean far away
    for rule in (median, lambda v, f: trimmed_mean(v, f), krum, multi_krum, bulyan):
        out = rule(x, 2)
        assert torch.allclose(out, torch.ones(6), atol=0.05), rule
    assert krum(x, 2).tolist() in x[:9].tolist()  # Krum returns one of the inputs
    assert float((centered_clipping(x, start=torch.ones(6)) - 1).abs().max()) < 0.5


def test_rules_follow_their_definitions_on_small_cases() -> None:
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]])
    assert median(x).tolist() == [3.0, 20.0]
    assert trimmed_mean(x, 1).tolist() == [3.0, 20.0]  # drops 1 and 100; 10 and -100 per coordinate
    assert median(x[:4]).tolist() == [2.5, 25.0]
    with pytest.raises(ValueError, match="cannot tolerate f=3"):
        krum(x, 3)  # byzfl's bound: 2f < n
    with pytest.raises(ValueError, match="cannot tolerate"):
        bulyan(x, 1)  # needs 4f + 3 = 7 rows
    assert tolerable("bulyan", 13, 5) == 2 and tolerable("krum", 13, 5) == 5 and tolerable("mean", 3, 5) == 5


def test_flatten_round_trips() -> None:
    shapes = {"a": (2, 3), "b": (4,)}
    dense = {"a": torch.arange(6.0).view(2, 3), "b": torch.arange(4.0)}
    back = unflatten(flatten(dense, list(shapes)), shapes)
    assert all(torch.equal(back[n], dense[n]) for n in shapes)
    with pytest.raises(ValueError, match="11 elements"):
        unflatten(torch.zeros(11), shapes)


def _run(preset: str = "default") -> dict:
    behaviour = {1: "honest", 2: "honest", 3: "lazy", 4: "diligent", 5: "data_ignorer", 6: "alie"}
    weights = {0: {1: 0.2, 2: 0.2, 3: 0.1, 4: 0.2, 5: 0.2, 6: 0.1},
               1: {1: 0.3, 2: 0.3, 3: 0.1, 4: 0.3, 5: 0.0, 6: 0.005},
               2: {1: 0.25, 2: 0.35, 3: 0.05, 4: 0.35, 5: 0.0, 6: 0.0}}
    scores = [{"window": w, "uid": u, "s": 1.0, "r_own": r, "b": 1 if r > 1.2 else -1}
              for w in range(3) for u, r in ((1, 2.0), (2, 1.1 if w == 0 else 1.5), (5, 1.3 if w == 2 else 0.9))]
    loss = {"mean": 9.0, "median": 8.4, "trimmed_mean": 8.5, "krum": 8.8, "multi_krum": 8.3,
            "centered_clipping": 8.6, "bulyan": 8.5, "gauntlet": 8.2, "honest_only": 8.0, "initial": 9.5}
    return {"preset": preset, "seed": 0, "behaviour": behaviour, "honest_work": [1, 2, 3, 4], "weights": weights,
            "scores": scores, "loss": loss, "own_margin": 0.2, "seconds_validate": [1.0], "seconds_miners": [2.0]}


def test_figures_of_a_known_run() -> None:
    run = _run()
    assert windows_to_exclude(run) == {5: 1, 6: 1}  # 6 at 0.005 in window 1 is under 1 %
    assert own_test(run) == (1 / 6, 1 / 3)  # uid 2 marked -1 once of 6; the ignorer +1 once of 3
    assert own_test(run, margin=0.0) == (0.0, 1 / 3)
    got = figures([run, _run("paper")], warmup=1)
    assert got["honest_weight_share"] == pytest.approx((1.0 / 1.005 + 1.0) / 2, abs=1e-4)
    assert got["honest_weight_share_worst"] == pytest.approx(1.0 / 1.005)
    assert got["windows_to_exclude_max"] == 1 and got["honest_zeroed_after_warmup"] == 0
    assert got["honest_pay_cv"] == pytest.approx(0.05 / 0.8, abs=1e-4)  # pay 0.75 and 0.85
    assert got["pay_monotone_spearman"] == pytest.approx(spearman([0.5, 1, 1, 2], [0.25, 0.75, 0.85, 0.85]), abs=1e-4)
    assert got["loss_ratio_gauntlet"] == pytest.approx(8.2 / 8.0) and got["loss_ratio_mean"] == pytest.approx(9 / 8)
    assert got["honest_weight_share_paper"] == got["honest_weight_share"]
    assert spearman([0.5, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_a_replayers_first_evaluation_is_its_honest_work_not_a_false_positive() -> None:
    run = _run()
    run["behaviour"] = {**run["behaviour"], 7: "replayer"}
    run["scores"] = run["scores"] + [{"window": w, "uid": 7, "s": 1.0, "r_own": r, "b": 1 if r > 1.2 else -1}
                                     for w, r in ((1, 2.0), (2, 1.3), (0, 0.5))]  # first evaluated: window 0
    assert own_test(run)[1] == pytest.approx(3 / 5)  # its windows 1 and 2 count (both +1), window 0 does not
    run["scores"] = [r for r in run["scores"] if not (r["uid"] == 7 and r["window"] == 0)]
    assert own_test(run)[1] == pytest.approx(2 / 4)  # now window 1 is its first: only window 2 counts


def test_smoothed_pay_what_if_keeps_weights_normalised_and_lags() -> None:
    from benchmarks.incentive_figures import normalise, smoothed

    run = smoothed(normalise(_run()), 0.5)
    for w in (0, 1, 2):
        assert sum(run["weights"][w].values()) == pytest.approx(1.0)
    assert run["weights"][1][5] == pytest.approx(0.05 / (0.25 + 0.5 * 1.005))  # the ignorer's past pay lingers


def test_repowered_weights_are_the_weights_under_another_power() -> None:
    from benchmarks.incentive_figures import normalise, repowered

    scores = {1: 3.0, 2: 1.0, 3: 0.0}
    run = normalise({**_run(), "weights": {0: {u: f ** 2 / 10.0 for u, f in scores.items()}}})
    linear = repowered(run, 1.0, 2.0)["weights"][0]
    assert linear == pytest.approx({1: 0.75, 2: 0.25, 3: 0.0})


def test_rerated_weights_follow_the_recorded_scores_under_other_rules() -> None:
    """uid 1 (b = +1 every window) and uid 2 (-1 first, then +1): under the paper's rule uid 2's
    smaller B pays it less than its ordinal; under the gate both are paid from the ordinal; the
    data ignorer (b = -1 but in window 2) is paid nothing before its +1."""
    from benchmarks.incentive_figures import normalise, rerated

    run = normalise(_run())
    scale = rerated(run, ["weights.own_data=scale", "weights.score_ema=0"])["weights"]
    gate = rerated(run, ["weights.own_data=gate", "weights.score_ema=0"])["weights"]
    for weights in (scale, gate):
        assert all(sum(weights[w].values()) == pytest.approx(1.0) for w in (0, 1, 2))
        assert weights[0][5] == weights[1][5] == 0.0
    assert gate[2][2] / gate[2][1] > scale[2][2] / scale[2][1]


def test_runs_carry_the_model_size_and_keep_their_partial_records_apart() -> None:
    from benchmarks.bench_incentive import FULL, _parse, _tasks

    tiny, small = _tasks(FULL, "d", ("default",)), _tasks({**FULL, "size": "small"}, "d", ("default",))
    assert [t[5] for t in tiny + small] == ["tiny", "small"]
    assert tiny[0][4] != small[0][4] and small[0][4].endswith("default-0-small.json")
    args = _parse(["--seeds=0", "--size=small", "--windows=12"])
    assert (args.seeds, args.size, args.windows) == ("0", "small", 12)


def test_accumulated_evidence_gathers_a_small_steady_edge_and_not_noise() -> None:
    """A steady t = 1 (too small for one window's bound of 2) passes once enough windows agree; a
    t alternating +-1.5 never does; one window's statistic is clipped, so a single huge t cannot
    carry a peer for long; runs without the sequential test's statistics give no what-if."""
    from benchmarks.incentive_figures import EVIDENCE_CLIP, accumulated_evidence

    rows = [{"window": w, "uid": u, "s": 1.0, "r_own": 1.0, "b": 0, "d": d, "se": 1.0}
            for w in range(12) for u, d in ((1, 1.0), (2, 1.5 if w % 2 else -1.5), (3, 50.0 if w == 0 else -0.5))]
    own = accumulated_evidence({"scores": rows}, ema=0.95, z=2.0)
    assert [own(1, w) for w in range(12)] == [0.0] * 4 + [1.0] * 8  # sqrt(n) > 2 from the 5th window
    assert not any(own(2, w) for w in range(12))
    assert own(3, 0) == 1.0 and EVIDENCE_CLIP == 3.0 and not any(own(3, w) for w in range(2, 12))
    assert own(1, 30) == 1.0 and own(4, 5) == 0.0  # the last evidence holds; an unknown peer has none
    assert accumulated_evidence({"scores": [{**r, "d": None, "se": None} for r in rows]}, 0.95, 2.0) is None


def test_rerated_with_an_own_factor_pays_the_ordinal_only_where_it_is_1() -> None:
    from benchmarks.incentive_figures import normalise, rerated

    run = normalise(_run())
    weights = rerated(run, [], own=lambda uid, window: 0.0 if uid == 2 else 1.0)["weights"]
    assert all(weights[w][2] == 0.0 and weights[w][1] > 0 for w in (0, 1, 2))
    assert all(sum(weights[w].values()) == pytest.approx(1.0) for w in (0, 1, 2))
