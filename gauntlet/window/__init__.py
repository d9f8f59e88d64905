"""The stages of one window as functions over stored inputs (see runner.py for the order)."""
