"""`localnet`: a whole network on one machine: miners (honest and hostile) and the validator.

Miners run by the local network's simulation clock; the validator runs `validate-window` for
each window as soon as the chain has reached its validation point, exactly as in production.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from gauntlet.localnet.network import init_network, load_network
from gauntlet.localnet.simulate import run_network
from gauntlet.report import render
from flows.validate import with_task_runner


@flow(name="localnet", log_prints=True)
def localnet(windows: int = 10, peers: int = 21, network: str = "data/localnet", fresh: bool = True) -> str:
    folder = Path(network)
    if fresh or not (folder / "manifest.json").exists():
        net = init_network(folder, peers=peers, force=True)
    else:
        net = load_network(folder)
    validate = with_task_runner(net.config)
    run_network(net, windows, validate=lambda w: validate(window=w, network=str(folder)))
    text = render(Path(net.config.audit.root), folder)
    print(text)
    return text
