"""Session-wide test settings: one torch thread, quiet Prefect with a persistent test home."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prefect reads these at import; set them before anything imports prefect.
os.environ["PREFECT_HOME"] = str(ROOT / ".prefect-test")  # never the demo's data/prefect
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("OMP_NUM_THREADS", "1")
for key in [k for k in os.environ if k.startswith("GAUNTLET_")]:
    del os.environ[key]  # a developer's own overrides must not change test results

import pytest  # noqa: E402
import torch  # noqa: E402

pytest_plugins = ["tests.s3server"]  # `s3_server`: moto's real S3 server on 127.0.0.1

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The corpus and tokenizer built by `gauntlet data prepare` from the standard library."""
    from gauntlet.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    result = prepare(None, root / "corpus", root / "tokenizer")
    return result.corpus, result.tokenizer


@pytest.fixture(scope="session")
def tiny_config(prepared_data: tuple[Path, Path]):
    """The local network's settings (tiny model) over the prepared data."""
    from gauntlet.config import load_config

    corpus, tokenizer = prepared_data
    return load_config(ROOT / "deployments" / "local.toml",
                       overrides={"data": {"corpus": str(corpus), "tokenizer": str(tokenizer)}})


SHARED_ROSTER = ["honest"] * 4 + ["late", "copycat", "malformed", "honest"]


@pytest.fixture(scope="session")
def validated_network(tmp_path_factory: pytest.TempPathFactory, prepared_data: tuple[Path, Path]):
    """One local network for the tests that need real windows (8 peers of SHARED_ROSTER, 5 windows
    mined, windows 0-3 validated by the direct pipeline after each window): (network, state after
    window 3 as carried in memory). Tests that change it copy it first (`copy_network`)."""
    from gauntlet.localnet.network import init_network
    from gauntlet.localnet.simulate import run_network
    from gauntlet.ratings import ValidatorState
    from gauntlet.window.pipeline import Direct, validate_window

    corpus, tokenizer = prepared_data
    net = init_network(tmp_path_factory.mktemp("shared-net") / "net", behaviours=SHARED_ROSTER, corpus=corpus,
                       tokenizer=tokenizer, force=True, overrides=["filter.put_window_s=1.0"])
    state = [ValidatorState()]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), net.config, window, state=state[0]).state

    run_network(net, 5, validate)
    return net, state[0]


def copy_network(net, folder: Path, *, validated: bool = True):
    """A copy of a network folder with its own ledger, audit root and workdir (the buckets are
    copied too). `validated=False` leaves out the validator's tables and workdir: the windows are
    mined but not validated (the ledger still holds the weights set before)."""
    import shutil

    from gauntlet.localnet.network import load_network

    ignore = None if validated else shutil.ignore_patterns("audit", "validator")
    shutil.copytree(net.folder, folder, symlinks=True, ignore=ignore)
    config = folder / "config.toml"
    config.write_text(config.read_text().replace(str(net.folder), str(folder)))
    return load_network(folder)
