"""The config tree: presets, sources, clear errors, and the consensus-critical values pinned."""

from __future__ import annotations

import pytest

from pathlib import Path

from gauntlet.config import LOCAL_CONFIG, ConfigError, GauntletConfig, load_config, with_overrides
from gauntlet.config_docs import explain_config, traced_config

ROOT = Path(__file__).resolve().parents[2]

# Every validator and miner must agree on these (GAUNTLET.md, templar v0.2.85). Changing one
# changes the network's rules: this test must be edited on purpose, never by accident.
PAPER = {
    ("chain", "blocks_per_window"): 8,
    ("chain", "validator_offset"): 2,
    ("data", "pages_per_window"): 6,
    ("data", "rows_per_page"): 100,
    ("data", "seq_len"): 2048,
    ("data", "batch_size"): 6,
    ("codec", "chunk"): 64,
    ("codec", "topk"): 32,
    ("codec", "momentum"): 0.999,
    ("codec", "error_feedback_after"): 5,
    ("codec", "kind"): "dct",
    ("filter", "put_window_s"): 10.0,
    ("filter", "sync_cap_steps"): 5.0,
    ("filter", "sync_exponent"): 2.5,
    ("filter", "sync_max_steps"): 3.0,
    ("filter", "probe_elements"): (10, 11),
    ("scoring", "eval_lr_factor"): 0.2,
    ("scoring", "sample_rate"): 0.1,
    ("scoring", "policy"): "sample",
    ("scoring", "peers_per_window"): 4,
    ("scoring", "bins"): 5,
    ("scoring", "seed_source"): "fixed",
    ("uniqueness", "ema"): 0.95,
    ("uniqueness", "own_margin"): 0.0,
    ("uniqueness", "own_test"): "margin",
    ("uniqueness", "overlap_halve"): 0.4,
    ("uniqueness", "overlap_reset"): 0.5,
    ("uniqueness", "overlap_ban"): 0.6,
    ("uniqueness", "ban_windows"): 200,
    ("rating", "mu"): 25.0,
    ("rating", "sigma"): 25.0 / 3.0,
    ("rating", "beta"): 7.0,
    ("rating", "tau"): 0.1,
    ("rating", "anchor"): 0.0,
    ("penalty", "missing"): 0.75,
    ("penalty", "desynced"): 0.75,
    ("penalty", "reset_after"): 25,
    ("weights", "power"): 2.0,
    ("weights", "own_data"): "scale",
    ("weights", "score_ema"): 0.0,
    ("weights", "min_sum"): 1e-8,
    ("weights", "set_interval"): 50,
    ("aggregation", "gather_size"): 15,
    ("aggregation", "refresh_every"): 5,
    ("aggregation", "effective_after"): 2,
    ("aggregation", "min_peers"): 5,
    ("aggregation", "merge"): "choosers",
    ("aggregation", "startup"): "all",
    ("schedule", "peak_lr"): 4e-4,
    ("schedule", "warmup_windows"): 250,
    ("schedule", "warmup_start_factor"): 0.1,
    ("schedule", "t0"): 20000,
    ("schedule", "t_mult"): 2,
    ("schedule", "min_lr"): 4e-5,
}
OURS = {("scoring", "policy"): "all", ("scoring", "seed_source"): "chain",
        ("scoring", "shared_random_batches"): True, ("uniqueness", "own_test"): "sequential",
        ("weights", "power"): 1.0, ("weights", "score_ema"): 0.5, ("rating", "anchor"): 0.6,
        ("aggregation", "merge"): "all", ("aggregation", "startup"): "multi_krum"}


@pytest.mark.parametrize(("key", "value"), PAPER.items(), ids=[".".join(k) for k in PAPER])
def test_paper_preset_pins_the_reference_constants(key, value):
    section, name = key
    assert getattr(getattr(load_config(preset="paper"), section), name) == value


def test_default_preset_differs_only_where_marked_ours():
    paper, ours = load_config(preset="paper"), load_config(preset="default")
    for (section, name), value in PAPER.items():
        expected = OURS.get((section, name), value)
        assert getattr(getattr(ours, section), name) == expected, f"{section}.{name}"
    assert paper.preset == "paper" and ours.preset == "default"


def test_sources_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "paper"\n[rating]\nbeta = 9.0\ntau = 0.2\n')
    env = {"GAUNTLET_RATING__TAU": "0.3", "GAUNTLET_RATING__MU": "30"}
    cfg = load_config(path, environ=env, overrides=["rating.mu=31"])
    assert (cfg.preset, cfg.rating.beta, cfg.rating.tau, cfg.rating.mu) == ("paper", 9.0, 0.3, 31.0)


@pytest.mark.parametrize(("override", "message"), [
    ("rating.beta=-1", "rating.beta"),
    ("rating.colour=1", "remove it"),
    ("uniqueness.overlap_halve=0.9", "overlap_halve <= overlap_reset"),
    ("aggregation.min_peers=99", "lower min_peers"),
    ("model.size=huge", "model.size"),
])
def test_invalid_values_name_the_field_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("GAUNTLET_RATING__BETA", "-1", "rating.beta"),
    ("GAUNTLET_RATING__COLOUR", "1", "remove it"),
    ("GAUNTLET_RATINGS__BETA", "1", "GAUNTLET_RATINGS__BETA names no setting"),
    ("GAUNTLET_FILTER__PROBE_ELEMENTS", "[1, ", "filter"),
    ("GAUNTLET_PRESET", "fast", "unknown"),
])
def test_bad_environment_values_name_the_variable_or_field(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={key: value})


def test_environment_values_parse_like_toml():
    env = {"GAUNTLET_FILTER__PROBE_ELEMENTS": "[3, 4, 5]", "GAUNTLET_SCALEOUT__GPU_RESOURCE": "true",
           "GAUNTLET_CHAIN__WALLET_NAME": "123", "gauntlet_rating__tau": "0.5", "OTHER__X": "1"}
    cfg = load_config(environ=env)
    assert cfg.filter.probe_elements == (3, 4, 5) and cfg.scaleout.gpu_resource is True
    assert cfg.chain.wallet_name == "123" and cfg.rating.tau == 0.5


@pytest.mark.parametrize("where", ["argument", "set", "env", "file"])
def test_the_preset_is_chosen_by_the_highest_source_and_applied_below_all(tmp_path, where):
    path = tmp_path / "c.toml"
    path.write_text(('preset = "paper"\n' if where == "file" else "") + "[uniqueness]\nema = 0.9\n")
    cfg = load_config(path, preset="paper" if where == "argument" else None,
                      overrides=["preset=paper"] if where == "set" else [],
                      environ={"GAUNTLET_PRESET": "paper"} if where == "env" else {})
    assert (cfg.preset, cfg.scoring.policy, cfg.uniqueness.own_margin, cfg.uniqueness.ema) == ("paper", "sample", 0.0, 0.9)
    assert load_config(path, preset="default", environ={"GAUNTLET_PRESET": "paper"}).preset == "default"


def test_bad_files_and_presets_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rating\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown"):
        load_config(preset="fast")
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(overrides=["rating.beta"])
    with pytest.raises(ConfigError, match="remove it"):
        load_config(overrides=["colour=1"])


@pytest.mark.parametrize("removed", ["penalty.inactive=0.5", "audit.archive_submissions=false", "storage.root=x"])
def test_settings_that_changed_nothing_are_gone(removed):
    with pytest.raises(ConfigError, match="remove it"):
        load_config(overrides=[removed])


def test_local_network_config_ships_in_the_package():
    packaged = load_config(LOCAL_CONFIG)
    assert LOCAL_CONFIG.parent.parent.name == "gauntlet" and packaged.model.size == "tiny"
    assert packaged == load_config(ROOT / "deployments" / "local.toml"), "deployments/local.toml drifted"


def test_resolved_config_round_trips_and_overrides_copy():
    cfg = load_config()
    assert GauntletConfig.model_validate_json(cfg.to_json()) == cfg
    assert with_overrides(cfg, ["weights.power=3"]).weights.power == 3.0 and cfg.weights.power == 1.0


def test_explain_lists_every_field_with_its_docstring():
    cfg = load_config(preset="paper")
    lines = explain_config(cfg).splitlines()
    fields = [ln for ln in lines if " = " in ln and not ln.startswith("#")]
    leaves = sum(len(type(getattr(cfg, s)).model_fields) for s in GauntletConfig.model_fields if s != "preset") + 1
    assert len(fields) == leaves
    assert all("  # " in ln and ln.split("  # ", 1)[1].strip() for ln in fields)
    assert 'scoring.policy = "sample"  # `all` (ours)' in explain_config(cfg)
    assert "filter.probe_elements = [10, 11]" in explain_config(cfg)


def test_explain_marks_values_off_the_preset_and_their_source(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[rating]\nbeta = 9.0\n')
    cfg, origins = traced_config(path, preset="paper", environ={"GAUNTLET_RATING__TAU": "0.3"},
                                 overrides=["weights.power=1"])
    text = explain_config(cfg, origins)
    line = {ln.split(" = ")[0]: ln for ln in text.splitlines() if " = " in ln}
    assert "[paper: 7.0; from file" in line["rating.beta"]
    assert "[paper: 0.1; from environment GAUNTLET_RATING__TAU]" in line["rating.tau"]
    assert "[paper: 2.0; from --set]" in line["weights.power"]
    assert "paper:" not in line["rating.mu"] and "from" not in line["rating.mu"]
    assert "[paper: 7.0]" in explain_config(cfg)  # without the origins: only the preset's value


def test_config_imports_without_torch_or_prefect():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['prefect'] = None; "
            "import gauntlet.config as c; c.load_config()")
    subprocess.run([sys.executable, "-c", code], check=True)


# The reference as it last ran (one-covenant/templar v2.1.28, hparams.json and validator.py): the
# values where `templar-2026` differs from the paper; everything else must equal the paper's.
TEMPLAR_2026 = {
    ("codec", "kind"): "sparseloco", ("codec", "topk"): 64, ("codec", "bins"): 4,
    ("codec", "range_sigmas"): 6.0, ("codec", "ef_decay"): 0.95,
    ("scoring", "peers_per_window"): 20,
    ("uniqueness", "ban_windows"): 20,
    ("filter", "sync_cap_steps"): 3.0,
    ("filter", "sync_max_steps"): 2.0,
    ("aggregation", "gather_size"): 20,
    ("aggregation", "refresh_every"): 2,
    ("weights", "set_interval"): 3,
    ("rules", "missing_in_match"): True, ("rules", "missing_score"): -99.0,
    ("rules", "escalating_missing"): True, ("rules", "missing_cuts"): (0.75, 0.5, 0.0),
    ("rules", "gather_success_floor"): 0.4,
    ("rules", "naughty"): True, ("rules", "miss_history"): 8, ("rules", "naughty_ratio"): 0.5,
    ("rules", "naughty_windows"): 20, ("rules", "reset_barred"): True,
    ("rules", "negative_cut"): True, ("rules", "negative_history"): 8, ("rules", "negative_ratio"): 0.5,
    ("rules", "negative_factor"): 0.25, ("rules", "skip_rank"): 5,
    ("rules", "exclude_negative"): True, ("rules", "negative_streak"): 3,
    ("rules", "uniqueness_floor"): True, ("rules", "floor"): 0.10, ("rules", "floor_after"): 10,
    ("rules", "zero_below"): 1e-4,
    ("rules", "sync_iqm"): True, ("rules", "sync_ema_alpha"): 0.2,
    ("rules", "weight_scheme"): "ramp", ("rules", "gather_share"): 0.75, ("rules", "top_ratio"): 2.0,
    ("rules", "reserve_count"): 10, ("rules", "reserve_decay"): 0.5,
    ("rules", "burn_share"): 0.0, ("rules", "burn_uid"): 0,
}


def test_templar_2026_preset_pins_the_last_reference_constants():
    cfg = load_config(preset="templar-2026")
    for (section, name), value in {**PAPER, **TEMPLAR_2026}.items():
        assert getattr(getattr(cfg, section), name) == value, f"{section}.{name}"
    assert cfg.preset == "templar-2026"


def test_with_preset_switches_the_rules_and_keeps_the_network():
    from gauntlet.config import LOCAL_CONFIG, with_preset

    local = load_config(LOCAL_CONFIG)
    templar = with_preset(local, "templar-2026")
    assert templar.preset == "templar-2026" and templar.rules.sync_iqm and templar.uniqueness.own_margin == 0.0
    assert templar.uniqueness.overlap_ban == local.uniqueness.overlap_ban  # the network's own threshold stays
    assert (templar.model, templar.data, templar.chain, templar.audit) == (local.model, local.data, local.chain, local.audit)
    back = with_preset(templar, "default")
    assert not back.rules.sync_iqm and back.uniqueness.own_test == "sequential" and back.uniqueness.ban_windows == 200
    assert back.rules == load_config(preset="default").rules
