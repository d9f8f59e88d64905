"""The local network's report: grouped by behaviour, with reasons, the honest share, the
validation loss per window and the chart, from a real (small) network run by the direct validator."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from gauntlet.clock import first_block
from gauntlet.data import Corpus
from gauntlet.localnet.network import init_network
from gauntlet.localnet.simulate import run_network
from gauntlet.ratings import ValidatorState
from gauntlet.report import behaviour_table, honest_work, load_report, render, render_markdown, write_chart
from gauntlet.validation_loss import held_out_pages, network_losses, trained_pages
from gauntlet.window.pipeline import Direct, validate_window

ROSTER = ["honest", "honest", "honest", "copycat", "late", "data_ignorer", "sybil", "sybil"]
FAST = {"data": {"rows_per_page": 4}, "filter": {"put_window_s": 1.0}}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, prepared_data):
    """Three windows mined and validated (the chain run on until the last one is ready)."""
    corpus, tokenizer = prepared_data
    net = init_network(tmp_path_factory.mktemp("report") / "net", behaviours=ROSTER, corpus=corpus,
                       tokenizer=tokenizer, overrides=FAST)
    cfg, state = net.config, [ValidatorState()]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), cfg, window, state=state[0]).rated.state

    reports = run_network(net, 3, validate)
    net.chain.produce_blocks(first_block(reports[-1].window + cfg.chain.validator_offset,
                                         cfg.chain.blocks_per_window) - net.chain.block())
    validate(reports[-1].window)
    return net


def test_honest_work_is_honest_scaled_and_the_first_sybil_only() -> None:
    roster = {0: "honest", 1: "scaled", 2: "sybil", 3: "sybil", 4: "copycat"}
    assert honest_work(roster) == {0, 1, 2}


def test_report_groups_by_behaviour_and_says_why_hostile_peers_earn_nothing(network) -> None:
    report = load_report(Path(network.config.audit.root), network.folder)
    assert report.windows == [0, 1, 2]
    table = behaviour_table(report)
    assert table["behaviour"].to_list()[0] == "honest"
    assert set(table["behaviour"]) == set(ROSTER)
    outcome = dict(zip(table["behaviour"], table["outcome"]))
    copycat, late = network.uids("copycat")[0], network.uids("late")[0]
    assert f"uid {copycat}: copied x" in outcome["copycat"]
    assert f"uid {late}: too_late x3" in outcome["late"]
    twin = network.uids("sybil")[1]
    assert f"uid {twin}: copied" in outcome["sybil"]
    last = report.weights.filter(pl.col("window_id") == 2)
    paid = set(last.filter(pl.col("weight") > 0)["uid"])
    expected = last.filter(pl.col("uid").is_in(sorted(honest_work(report.roster))))["weight"].sum() / last["weight"].sum()
    assert report.honest_share() == pytest.approx(expected)
    assert copycat not in paid and late not in paid and twin not in paid


def test_held_out_pages_are_trained_by_nobody(network) -> None:
    cfg = network.config
    corpus = Corpus(cfg.data.corpus)
    roster = {p.uid: p.behaviour for p in network.peers}
    used = trained_pages(corpus, cfg, roster, [0, 1, 2])
    pages = held_out_pages(corpus, cfg, roster, [0, 1, 2], n=5)
    assert len(pages) == 5 and not set(pages) & used
    ignorer = network.uids("data_ignorer")[0]
    own_only = trained_pages(corpus, cfg, {ignorer: "honest"}, [0])
    assert trained_pages(corpus, cfg, {ignorer: "data_ignorer"}, [0]) > own_only  # its substitute pages too
    with pytest.raises(ValueError, match="no page is left"):
        held_out_pages(corpus, cfg, {u: "honest" for u in range(400)}, range(50))


def test_loss_per_window_text_markdown_and_chart(network, tmp_path: Path) -> None:
    report = load_report(Path(network.config.audit.root), network.folder)
    report.losses, report.held_out = network_losses(network.config, report.roster, report.windows)
    assert sorted(report.losses) == [0, 1, 2, 3]  # before window 0, then after each window
    assert all(2.0 < loss < 20.0 for loss in report.losses.values())
    assert report.losses[3] < report.losses[0]  # three honest steps: the model learned something
    chart = write_chart(report, tmp_path / "report.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    text = render(report, chart)
    assert "Share of weight to honest work" in text and str(chart) in text
    assert "after window 2:" in text and "copied" in text
    md = render_markdown(report, chart)
    assert md.count("\n| ") >= len(set(ROSTER)) and "**" in md
