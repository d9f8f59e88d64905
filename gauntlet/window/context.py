"""What a validator process loads once and reuses across windows: model, codec, data, paths.

Prefect tasks never pass these between each other; each process builds one context (cached by
the resolved config) and the model's weights come from the checkpoint of the window at hand.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gauntlet.codec import DCTCodec
from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, load_tokenizer
from gauntlet.model import build_model, model_fingerprint, param_shapes, resolve_device
from gauntlet.submission import ModelSpec


@dataclass
class ValidatorContext:
    cfg: GauntletConfig
    workdir: Path
    model: torch.nn.Module
    codec: DCTCodec
    corpus: Corpus
    tokenizer: object
    spec: ModelSpec
    device: torch.device
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held by every stage that loads weights into or runs `model`: functional_call swaps the
    module's parameters while it runs, so two threads must not share the model at once."""
    holds: int | None = None
    """The window whose theta `model` holds now (stages reuse it instead of reloading: at the
    paper's size a checkpoint is 4.8 GB)."""

    @property
    def archive(self) -> Path:
        return self.workdir / "archive"

    def checkpoint_path(self, window: int) -> Path:
        """theta_W: the model state at the start of window W (after aggregating W - 1)."""
        return self.workdir / "checkpoints" / f"{window:08d}.safetensors"

    def load_theta(self, window: int) -> dict[str, torch.Tensor]:
        """theta_W in the context's model (creating the initial state if no checkpoint exists)."""
        if self.holds != window:
            path = self.checkpoint_path(window)
            if not path.exists():
                if any(path.parent.glob("*.safetensors")):
                    raise FileNotFoundError(f"no checkpoint for window {window} at {path}")
                save_checkpoint(initial_state(self.cfg, self.tokenizer), path)
            self.holds = None  # a failed load must not leave a stale claim
            self.model.load_state_dict(load_file(path), strict=True)
            self.holds = window
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def save_theta(self, window: int) -> str:
        """Save the model (stepped in place) as theta of `window`, which it now holds."""
        digest = save_checkpoint({n: p.detach() for n, p in self.model.named_parameters()},
                                 self.checkpoint_path(window))
        self.holds = window
        return digest


def initial_state(cfg: GauntletConfig, tokenizer: object) -> dict[str, torch.Tensor]:
    model = build_model(cfg.model.size, len(tokenizer), cfg.model.init_seed)
    return {n: p.detach() for n, p in model.named_parameters()}


def state_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(state: dict[str, torch.Tensor], path: Path) -> str:
    """Atomic safetensors write; returns the file's sha256 (recorded in the audit tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({n: t.contiguous().cpu() for n, t in state.items()}, str(tmp))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return state_hash(path)


def model_spec(cfg: GauntletConfig, model: torch.nn.Module, vocab_size: int) -> ModelSpec:
    fp = model_fingerprint(cfg.model.size, vocab_size, cfg.model.init_seed, cfg.codec.chunk, cfg.codec.topk)
    return ModelSpec.build(param_shapes(model), fp, cfg.codec)


def build_context(cfg: GauntletConfig, workdir: str | Path) -> ValidatorContext:
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    device = resolve_device(cfg.scoring.device)
    model = build_model(cfg.model.size, len(tokenizer), cfg.model.init_seed).to(device)
    model.eval()
    return ValidatorContext(
        cfg=cfg, workdir=Path(workdir), model=model, codec=DCTCodec.from_config(cfg.codec),
        corpus=Corpus(cfg.data.corpus), tokenizer=tokenizer,
        spec=model_spec(cfg, model, len(tokenizer)), device=device,
    )


_CONTEXTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached(config_json: str) -> ValidatorContext:
    cfg = GauntletConfig.model_validate_json(config_json)
    return build_context(cfg, cfg.validator.workdir)


def cached_context(config_json: str) -> ValidatorContext:
    """One context per resolved config per process: what tasks use (built once, under a lock)."""
    with _CONTEXTS_LOCK:
        return _cached(config_json)
