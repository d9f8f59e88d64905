"""The local network: a folder with a chain ledger, buckets and simulated honest and hostile miners."""

from gauntlet.localnet.network import Network, Peer, default_mix, init_network, load_network, parse_mix

__all__ = ["Network", "Peer", "default_mix", "init_network", "load_network", "parse_mix"]
