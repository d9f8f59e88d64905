"""`make bench`'s runner: the summary it writes, the order it runs benchmarks in, its options."""

from __future__ import annotations

import json
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest

from benchmarks import run, schedule

ROOT = Path(__file__).resolve().parents[2]


def test_summary_opens_with_the_goals_table_computed_from_the_figures(tmp_path: Path) -> None:
    results = {"incentive": {"honest_pay_cv": 0.6, "honest_weight_share": 1.0, "peers": 13, "mix": ["honest"]},
               "flow": {"flow_over_direct_thread": 1.05}}
    timing = {"": {"jobs": 2, "load_before": 1.0, "seconds": 600.0, "load_after": 2.0},
              "incentive": {"seconds": 500.0, "cpu_s": 900.0, "load_after": 2.0}, "flow": {"seconds": 90.0, "load_after": 1.5}}
    for name, figures_of in results.items():  # as each benchmark's run leaves them
        (tmp_path / f"{name}.json").write_text(json.dumps(figures_of))
    written = run.write_summary(tmp_path, results, timing)
    figures = json.loads(written.read_text())
    assert figures["honest_pay_cv"] == 0.6 and figures["prefect_overhead"] == 1.05 and "peers" not in figures
    md = (tmp_path / "RESULTS.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Goals (issues 10 and 14)", "## Headline figures (`results.json`)"]
    assert "| 0.6 | **missed** by 0.3 (2x the target) |" in md  # honest_pay_cv <= 0.3 in goals.toml
    assert "| 1.05 | met |" in md  # prefect_overhead <= 1.1
    assert "- `incentive`: 500 s, 900 CPU s, load 2.0" in md and "600 s wall in all, 2 job(s)" in md
    assert "Quick run" not in md
    assert run.collect(tmp_path) == results  # the timing kept beside them is not a benchmark
    assert run.main(["--collect", "--out", str(tmp_path)]) == 0  # a later --collect keeps the run's timing
    assert "- `incentive`: 500 s, 900 CPU s, load 2.0" in (tmp_path / "RESULTS.md").read_text()
    (tmp_path / run.TIMING).unlink()
    run.write_summary(tmp_path, results, quick=True)  # --collect of a quick run: no timing, flagged
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Quick run" in md and "s wall in all" not in md


def test_an_extra_run_beside_a_benchmark_keeps_its_figures_apart(tmp_path: Path) -> None:
    """`incentive_default_seeds1-2.json` (other seeds, run on their own) must not replace the
    incentive benchmark's figures of the same name: its keys get the file's suffix."""
    (tmp_path / "incentive.json").write_text(json.dumps({"honest_pay_cv": 0.2, "peers": 13}))
    (tmp_path / "incentive_default_seeds1-2.json").write_text(json.dumps({"honest_pay_cv": 0.9}))
    (tmp_path / "incentive_runs.json").write_text(json.dumps([{"seed": 0}]))  # records: not figures
    (tmp_path / "notes_extra.json").write_text(json.dumps({"honest_pay_cv": 5.0}))  # no such benchmark
    got = run.collect(tmp_path)
    assert got == {"incentive": {"honest_pay_cv": 0.2, "peers": 13},
                   "incentive_default_seeds1-2": {"honest_pay_cv_default_seeds1-2": 0.9}}
    figures = run.flat(got)
    assert figures["honest_pay_cv"] == 0.2 and figures["honest_pay_cv_default_seeds1-2"] == 0.9


def test_jobs_run_longest_first_and_unknown_benchmarks_in_the_middle(tmp_path: Path) -> None:
    names = ["codec", "screening", "newcomer", "window"]
    benches = {n: schedule.Bench(n, tmp_path / f"{n}.json", split=False) for n in names}
    order = [job.name for job in schedule._jobs(benches, False, tmp_path)]
    assert order == ["screening", "window", "newcomer", "codec"]  # newcomer: DEFAULT_COST_S
    assert all(b.jobs == 1 for b in benches.values())


def test_a_failed_benchmark_is_noted_and_a_finished_one_kept(tmp_path: Path) -> None:
    errors: dict[str, str] = {}
    failed, ok = Future(), Future()
    failed.set_exception(RuntimeError("no corpus"))
    ok.set_result((10.0, 12.5, 2.0, {"figure": 1.0}))
    broken = schedule.Bench("broken", tmp_path / "broken.json", split=False, jobs=1)
    assert not schedule._take(broken, schedule.Job("broken"), failed, errors)
    assert errors == {"broken": "RuntimeError: no corpus"} and not broken.done
    fine = schedule.Bench("fine", tmp_path / "fine.json", split=False, jobs=1)
    assert schedule._take(fine, schedule.Job("fine"), ok, errors)
    assert (fine.spans, fine.cpu_s, schedule._finish(fine, False, errors)) == ([(10.0, 12.5)], 2.0, {"figure": 1.0})


def test_options_refuse_what_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run._parse(["--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run._names(["no_such_bench"])
    with pytest.raises(SystemExit, match="no quick mode in codec"):
        schedule._modules(["codec", "incentive"], quick=True, named=True)
    assert schedule._modules(["codec", "incentive"], quick=True, named=False) == {"incentive": True}
    assert schedule._modules(["codec"], quick=False, named=True) == {"codec": False}
