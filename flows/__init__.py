"""Prefect flows: one run per training window, following the chain, replays, the local network."""
