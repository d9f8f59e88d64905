"""Validation loss of the local network's model after each window, on pages nobody trained on.

Weights say who was paid; they do not say whether the network learned. This module measures the
model itself: the token-weighted loss of each window's checkpoint (the validator's theta) on a
fixed held-out set of corpus pages. Held out means assigned to no peer in any of the windows
measured (each peer's own pages, and the substitute pages of a behaviour that trains on others,
such as `data_ignorer`), so a falling loss is learning rather than memorising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file

from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, load_tokenizer, page_batches
from gauntlet.localnet.behaviours import make_behaviour
from gauntlet.miner import own_pages
from gauntlet.model import build_model
from gauntlet.scoring import LossEvaluator
from gauntlet.window.context import checkpoint_path

HELD_OUT_PAGES = 8


def trained_pages(corpus: Corpus, cfg: GauntletConfig, roster: Mapping[int, str], windows: Sequence[int]) -> set[int]:
    """Every page a peer of `roster` (uid -> behaviour) could have trained on in `windows`."""
    used: set[int] = set()
    for uid, name in roster.items():
        behaviour = make_behaviour(name, uid, roster)
        pages_of = getattr(behaviour, "pages", None)
        for window in windows:
            used.update(own_pages(uid, window, corpus, cfg))
            if callable(pages_of):
                used.update(pages_of(SimpleNamespace(corpus=corpus, window=window, cfg=cfg)))
    return used


def held_out_pages(corpus: Corpus, cfg: GauntletConfig, roster: Mapping[int, str], windows: Sequence[int],
                   n: int = HELD_OUT_PAGES) -> list[int]:
    """Up to `n` pages trained on by no peer in `windows`, spread evenly over the free ones."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    used = trained_pages(corpus, cfg, roster, windows)
    free = [p for p in range(corpus.n_pages(cfg.data.rows_per_page)) if p not in used]
    if not free:
        raise ValueError(f"every page of the corpus {cfg.data.corpus} was trained on in windows "
                         f"{min(windows)}-{max(windows)}; no page is left to hold out (use a larger corpus)")
    step = max(1, len(free) // n)
    return free[::step][:n]


def validation_losses(cfg: GauntletConfig, windows: Sequence[int], pages: Sequence[int],
                      workdir: str | Path | None = None) -> dict[int, float]:
    """window -> mean loss of theta_window (the validator's checkpoint) on `pages`.

    Checkpoint W holds the model at the start of W, that is after aggregating W - 1. A window
    without a checkpoint (never reached) is left out.
    """
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    batches = page_batches(Corpus(cfg.data.corpus), tokenizer, list(pages), cfg.data)
    model = build_model(cfg.model.size, len(tokenizer), cfg.model.init_seed).eval()
    evaluator = LossEvaluator(model, "cpu")
    folder = cfg.validator.workdir if workdir is None else workdir
    out: dict[int, float] = {}
    for window in windows:
        path = checkpoint_path(folder, window)
        if path.is_file():
            params = load_file(path)
            out[window] = float(evaluator.mean_loss(params, batches))
    return out


def network_losses(cfg: GauntletConfig, roster: Mapping[int, str], validated: Sequence[int]) -> tuple[dict[int, float], list[int]]:
    """Loss before the first validated window and after each one (theta_{W+1}), and the pages used."""
    if not validated:
        raise ValueError("no validated window to measure")
    windows = sorted(validated)
    pages = held_out_pages(Corpus(cfg.data.corpus), cfg, roster, windows)
    with torch.inference_mode():
        losses = validation_losses(cfg, [windows[0], *(w + 1 for w in windows)], pages)
    return losses, pages
