"""What a validator process loads once and reuses across windows: the model and its data.

A context is keyed by the fields that decide the model (size, init seed, tokenizer, device,
codec), never by the whole config: an override of a rating constant or a scratch workdir for a
replay reuses the same model. A process holds at most one context (at the paper's size a model
is about 5 GB of weights; building another per override cost 19 GB). Where a window's files
live (`workdir`) is passed per call, so the live validator and a replay share the model.

Prefect tasks never pass a context between each other: each process finds its own with
``context_for(cfg)``, and the weights come from the checkpoint of the window at hand.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gauntlet.codec import Codec, make_codec
from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, load_tokenizer
from gauntlet.model import build_model, model_fingerprint, param_shapes, resolve_device
from gauntlet.submission import ModelSpec


def model_key(cfg: GauntletConfig) -> tuple:
    """The settings that decide the model, its tokenizer, device and file format."""
    c = cfg.codec
    return (cfg.model.size, cfg.model.init_seed, str(Path(cfg.data.tokenizer).resolve()), cfg.scoring.device,
            c.kind, c.chunk, c.topk, c.bins, c.range_sigmas, c.ef_decay)


def checkpoint_path(workdir: str | Path, window: int) -> Path:
    """theta_W: the model state at the start of window W (after aggregating W - 1)."""
    return Path(workdir) / "checkpoints" / f"{window:08d}.safetensors"


def archive_dir(cfg: GauntletConfig) -> Path:
    return Path(cfg.validator.workdir) / "archive"


@dataclass
class ModelContext:
    key: tuple
    model: torch.nn.Module
    codec: Codec
    tokenizer: object
    spec: ModelSpec
    device: torch.device
    init_seed: int
    size: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held by every stage that loads weights into or runs `model`: functional_call swaps the
    module's parameters while it runs, so two threads must not share the model at once."""
    holds: tuple | None = None
    """(path, size, mtime) of the checkpoint `model` holds now: stages reuse it instead of
    reloading (4.8 GB at the paper's size); a rewritten file or another workdir reloads."""

    def load_theta(self, workdir: str | Path, window: int) -> dict[str, torch.Tensor]:
        """theta_W in the model (creating the initial state for a new network's first window)."""
        path = checkpoint_path(workdir, window)
        if not path.exists():
            if path.parent.exists() and any(path.parent.glob("*.safetensors")):
                raise FileNotFoundError(f"no checkpoint for window {window} at {path}")
            save_checkpoint(initial_state(self.size, self.init_seed, self.tokenizer), path)
        stamp = _stamp(path)
        if self.holds != stamp:
            self.holds = None  # a failed load must not leave a stale claim
            self.model.load_state_dict(load_file(path), strict=True)
            self.holds = stamp
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def save_theta(self, workdir: str | Path, window: int) -> str:
        """Save the model (stepped in place) as theta of `window`, which it now holds."""
        path = checkpoint_path(workdir, window)
        self.holds = None
        digest = save_checkpoint({n: p.detach() for n, p in self.model.named_parameters()}, path)
        self.holds = _stamp(path)
        return digest


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def initial_state(size: str, init_seed: int, tokenizer: object) -> dict[str, torch.Tensor]:
    model = build_model(size, len(tokenizer), init_seed)
    return {n: p.detach() for n, p in model.named_parameters()}


def state_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def build_context(cfg: GauntletConfig) -> ModelContext:
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    device = resolve_device(cfg.scoring.device)
    model = build_model(cfg.model.size, len(tokenizer), cfg.model.init_seed).to(device)
    model.eval()
    return ModelContext(key=model_key(cfg), model=model, codec=make_codec(cfg.codec), tokenizer=tokenizer,
                        spec=model_spec(cfg, model, len(tokenizer)), device=device, init_seed=cfg.model.init_seed,
                        size=cfg.model.size)


_LOCK = threading.Lock()
_CURRENT: list[ModelContext] = []
_CORPORA: dict[str, Corpus] = {}


def context_for(cfg: GauntletConfig) -> ModelContext:
    """The process's one model context, rebuilt only when the model-deciding settings change."""
    key = model_key(cfg)
    with _LOCK:
        if not _CURRENT or _CURRENT[0].key != key:
            _CURRENT.clear()  # drop the old model before building the next: one live model
            _CURRENT.append(build_context(cfg))
        return _CURRENT[0]


def corpus_for(cfg: GauntletConfig) -> Corpus:
    path = str(Path(cfg.data.corpus).resolve())
    with _LOCK:
        if path not in _CORPORA:
            _CORPORA[path] = Corpus(cfg.data.corpus)
        return _CORPORA[path]
