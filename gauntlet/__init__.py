"""Gauntlet: the validator core. Pure Python + torch; never imports prefect, flows or tasks."""

__version__ = "0.1.0"
