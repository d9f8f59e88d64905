"""Miner behaviours of the local network: the honest reference miner and the hostile ones.

Each behaviour is a small strategy over the reference miner (`gauntlet.miner`): it decides what
bytes its peer uploads for a window and in which phase of the window (`Phase`). The simulation
(`simulate.py`) runs every behaviour against the network's shared model theta_W, puts the bytes
in the peer's bucket at the behaviour's phase, and aggregates the window as the validator will.

| behaviour      | uploads                                                   | meant to be caught by       |
|----------------|-----------------------------------------------------------|-----------------------------|
| honest         | the reference miner's update on its own pages             | (paid)                      |
| free_rider     | a valid file: zero values at random indices               | loss score                  |
| noise          | a random update with the honest update's norm per tensor  | loss score                  |
| copycat        | another peer's file relabelled with its own uid, after it | copy check (overlap 1.0)    |
| copycat_noisy  | the same, with 1 % noise on the values                    | copy check (overlap 1.0)    |
| sign_flip      | the honest update negated                                 | loss score                  |
| scaled         | the honest update times 100                               | unit norm in aggregation    |
| data_ignorer   | an honest update trained on pages that are not its own    | uniqueness (r_own vs s)     |
| stale          | honest training on a model that never applies aggregates  | sync probe (steps behind)   |
| late / early   | an honest file after t_max / before t_min                 | timing                      |
| malformed      | a broken file of another kind each window (MALFORMED_KINDS) | format check              |
| sybil          | one honest update shared by several uids                  | copy check (later uploaders)|

Effort variants (lazy, diligent) and the attacks of the robust-aggregation literature (alie, ipm,
sandbagger, replayer) are in `attacks.py`; they are registered in `BEHAVIOURS` too.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

import safetensors.torch
import torch
from torch import Tensor

from gauntlet.codec import Compressed, DCTCodec
from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, assign_pages
from gauntlet.filter import probe_values
from gauntlet.miner import MinedWindow, MinerState, mine_window, own_pages
from gauntlet.payload import corrupt_parts
from gauntlet.submission import META_KEY, ModelSpec, Submission, parse_submission, write_submission

MALFORMED_KINDS = ("garbage", "nan", "wrong_window", "pickle", "index_out_of_range")


class Phase(IntEnum):
    """When in window W a behaviour uploads, in the order the simulation runs them."""

    EARLY = 0
    """During W, before t_min (the file is too early)."""
    ON_TIME = 1
    """Just after t_min, inside the put window."""
    FOLLOW = 2
    """Inside the put window, after the ON_TIME files are in place (copycats read them)."""
    LATE = 3
    """After t_max (the file is too late)."""


@dataclass
class WindowEnv:
    """What a behaviour sees in window W. `model` holds theta_W: read it, never change it."""

    cfg: GauntletConfig
    window: int
    lr: float
    model: torch.nn.Module
    codec: DCTCodec
    corpus: Corpus
    tokenizer: object
    spec: ModelSpec
    read_upload: Callable[[int], bytes | None]
    """uid -> that peer's file for W from its committed bucket (None when absent)."""
    scratch_model: Callable[[Mapping[str, Tensor]], torch.nn.Module]
    """A second model loaded with the given parameters (for peers off the shared state)."""
    seed: int = 0
    shared: dict[object, object] = field(default_factory=dict)
    """Results behaviours share within the window (the sybils' common update)."""

    @property
    def theta(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from a hash of `parts`: reproducible, independent per (seed, uid, window)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big") >> 1)


def random_indices(codec: DCTCodec, shapes: Mapping[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, Tensor]:
    """Distinct random indices per chunk, sorted like the codec's: name -> (C, k) int64."""
    out = {}
    for name, shape in shapes.items():
        lay = codec.layout(shape)
        order = torch.rand(lay.n_chunks, lay.chunk_elems, generator=gen).argsort(dim=1)  # (C, E)
        out[name] = order[:, : lay.k].sort(dim=1).values
    return out


def rescale(compressed: Compressed, norms: Mapping[str, Tensor]) -> Compressed:
    """Each tensor's values scaled to the given L2 norm (a zero tensor stays zero)."""
    out = {}
    for name, (idx, vals) in compressed.items():
        own = vals.norm()
        out[name] = (idx, vals * (norms[name] / own) if own > 0 else vals)
    return out


class Behaviour:
    """A peer's strategy. `prepare` runs before the put window, `finish` at the behaviour's phase."""

    name: ClassVar[str] = ""
    phase: ClassVar[Phase] = Phase.ON_TIME

    def __init__(self, uid: int, roster: Mapping[int, str], seed: int = 0) -> None:
        self.uid = uid
        self.roster = dict(roster)
        """uid -> behaviour name of every peer (what a colluding group or a copycat would know)."""
        self.seed = seed
        self.state = MinerState(uid)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uid={self.uid})"

    def prepare(self, env: WindowEnv) -> bytes | None:
        """The file for W, computed from theta_W before t_min; None uploads nothing."""
        return self.encode(env, self.train(env))

    def finish(self, env: WindowEnv, prepared: bytes | None) -> bytes | None:
        """The bytes actually put at the behaviour's phase (by default the prepared file)."""
        return prepared

    def train(self, env: WindowEnv, pages: list[int] | None = None) -> MinedWindow:
        return mine_window(env.model, self.state, env.window, env.lr, env.corpus, env.tokenizer, env.codec,
                           env.cfg, pages=pages)

    def encode(self, env: WindowEnv, mined: MinedWindow, grads: Compressed | None = None) -> bytes:
        grads = mined.compressed if grads is None else grads
        return write_submission(env.window, self.uid, env.spec.fingerprint, env.codec, grads, mined.probe)

    def rng(self, env: WindowEnv, tag: str = "") -> torch.Generator:
        return generator("gauntlet-localnet", self.seed, self.name, tag, self.uid, env.window)

    # Persistence between processes: the momentum (and behaviour extras) as tensors + metadata.
    def save_state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        tensors = {f"momentum/{n}": t for n, t in (self.state.momentum or {}).items()}
        return tensors, {"windows_trained": str(self.state.windows_trained)}

    def load_state(self, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
        momentum = {k.split("/", 1)[1]: t for k, t in tensors.items() if k.startswith("momentum/")}
        self.state = MinerState(self.uid, momentum or None, int(meta.get("windows_trained", 0)))


class Honest(Behaviour):
    name = "honest"


class Early(Behaviour):
    name = "early"
    phase = Phase.EARLY


class Late(Behaviour):
    name = "late"
    phase = Phase.LATE


class FreeRider(Behaviour):
    """Trains nothing; a valid, in-sync file whose values are zero (`scale` > 0: tiny noise)."""

    name = "free_rider"
    scale: ClassVar[float] = 0.0

    def prepare(self, env: WindowEnv) -> bytes:
        gen = self.rng(env)
        idx = random_indices(env.codec, env.spec.shapes, gen)
        grads = {n: (i, self.scale * torch.randn(i.shape, generator=gen)) for n, i in idx.items()}
        probe = probe_values(env.theta, env.cfg.filter.probe_elements)
        return write_submission(env.window, self.uid, env.spec.fingerprint, env.codec, grads, probe)


class Noise(Behaviour):
    """A random dense update, compressed, scaled to the norm of its own honest update per tensor."""

    name = "noise"

    def prepare(self, env: WindowEnv) -> bytes:
        mined = self.train(env)
        gen = self.rng(env)
        dense = {n: torch.randn(s, generator=gen) for n, s in env.spec.shapes.items()}
        norms = {n: vals.norm() for n, (_, vals) in mined.compressed.items()}
        return self.encode(env, mined, rescale(env.codec.encode_all(dense), norms))


class SignFlip(Behaviour):
    name = "sign_flip"

    def prepare(self, env: WindowEnv) -> bytes:
        mined = self.train(env)
        return self.encode(env, mined, {n: (i, -v) for n, (i, v) in mined.compressed.items()})


class Scaled(Behaviour):
    name = "scaled"
    factor: ClassVar[float] = 100.0

    def prepare(self, env: WindowEnv) -> bytes:
        mined = self.train(env)
        return self.encode(env, mined, {n: (i, v * self.factor) for n, (i, v) in mined.compressed.items()})


class DataIgnorer(Behaviour):
    """Trains as well as anyone, on pages drawn for another seed (none of its own for W)."""

    name = "data_ignorer"

    def pages(self, env: WindowEnv) -> list[int]:
        d = env.cfg.data
        n_pages = env.corpus.n_pages(d.rows_per_page)
        own = set(own_pages(self.uid, env.window, env.corpus, env.cfg))
        drawn = assign_pages(seed=1_000_003 + self.uid, offset=env.window * d.pages_per_window,
                             n=min(n_pages, d.pages_per_window + len(own)), n_pages=n_pages)
        return [p for p in drawn if p not in own][: d.pages_per_window]

    def prepare(self, env: WindowEnv) -> bytes:
        return self.encode(env, self.train(env, pages=self.pages(env)))


class Stale(Behaviour):
    """Keeps the model of its first window and trains on it; never applies an aggregate."""

    name = "stale"

    def __init__(self, uid: int, roster: Mapping[int, str], seed: int = 0) -> None:
        super().__init__(uid, roster, seed)
        self.params: dict[str, Tensor] | None = None

    def prepare(self, env: WindowEnv) -> bytes:
        if self.params is None:
            self.params = {n: t.clone() for n, t in env.theta.items()}
        model = env.scratch_model(self.params)
        mined = mine_window(model, self.state, env.window, env.lr, env.corpus, env.tokenizer, env.codec, env.cfg)
        return self.encode(env, mined)

    def save_state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        tensors, meta = super().save_state()
        tensors.update({f"model/{n}": t for n, t in (self.params or {}).items()})
        return tensors, meta

    def load_state(self, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
        super().load_state(tensors, meta)
        params = {k.split("/", 1)[1]: t for k, t in tensors.items() if k.startswith("model/")}
        self.params = params or None


class Copycat(Behaviour):
    """Waits for an honest peer's file, then uploads its gradient and probe under its own uid.

    Not a byte copy (the uid in the metadata differs, so the content hash does too): what gives
    it away is that its top-k indices are the victim's, all of them.
    """

    name = "copycat"
    phase = Phase.FOLLOW
    noise: ClassVar[float] = 0.0
    """Noise added to the values, relative to each tensor's RMS value."""

    def victim(self, window: int) -> int | None:
        honest = sorted(u for u, b in self.roster.items() if b == "honest")
        others = honest or sorted(u for u, b in self.roster.items() if u != self.uid and not b.startswith("copycat"))
        return others[(window + self.uid) % len(others)] if others else None

    def prepare(self, env: WindowEnv) -> None:
        return None

    def finish(self, env: WindowEnv, prepared: bytes | None) -> bytes | None:
        victim = self.victim(env.window)
        data = env.read_upload(victim) if victim is not None else None
        if data is None:
            return None
        parsed = parse_submission(data, window=env.window, uid=victim, spec=env.spec, max_bytes=len(data))
        if not isinstance(parsed, Submission):
            return None
        grads = parsed.grads
        if self.noise > 0:
            gen = self.rng(env)
            grads = {n: (i, v + self.noise * v.pow(2).mean().sqrt() * torch.randn(v.shape, generator=gen))
                     for n, (i, v) in grads.items()}
        return write_submission(env.window, self.uid, env.spec.fingerprint, env.codec, grads, parsed.probe)


class CopycatNoisy(Copycat):
    name = "copycat_noisy"
    noise = 0.01


class Sybil(Behaviour):
    """All sybils upload the update of the lowest sybil uid, trained once, under their own uids."""

    name = "sybil"

    def prepare(self, env: WindowEnv) -> bytes:
        leader = min(u for u, b in self.roster.items() if b == self.name)
        key = ("sybil", env.window)
        if self.uid == leader:
            env.shared[key] = self.train(env)
        if key not in env.shared:
            raise RuntimeError(f"sybil uid {self.uid} prepared before its leader uid {leader}; prepare in uid order")
        return self.encode(env, env.shared[key])


class Malformed(Behaviour):
    """A broken file of a different kind each window (`MALFORMED_KINDS`, rotating with the window)."""

    name = "malformed"

    def kind(self, window: int) -> str:
        return MALFORMED_KINDS[(window + self.uid) % len(MALFORMED_KINDS)]

    def prepare(self, env: WindowEnv) -> bytes:
        gen = self.rng(env)
        kind = self.kind(env.window)
        if kind == "garbage":
            return bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).tolist())
        idx = random_indices(env.codec, env.spec.shapes, gen)
        grads = {n: (i, torch.randn(i.shape, generator=gen)) for n, i in idx.items()}
        if kind == "pickle":
            buffer = io.BytesIO()
            torch.save({"window": env.window, "uid": self.uid, "grads": grads}, buffer)
            return buffer.getvalue()
        probe = probe_values(env.theta, env.cfg.filter.probe_elements)
        valid = write_submission(env.window, self.uid, env.spec.fingerprint, env.codec, grads, probe)
        return corrupt(valid, kind, env.spec)


def corrupt(data: bytes, kind: str, spec: ModelSpec) -> bytes:
    """A valid submission broken in one way: NaN values, a wrong window, an index out of range."""
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"][META_KEY])
    tensors = safetensors.torch.load(data)
    if kind == "wrong_window":
        meta["window"] = meta["window"] + 1
    elif kind in ("nan", "index_out_of_range"):
        corrupt_parts(tensors, kind, spec.codec, spec.layouts)  # the codec's own tensors (gauntlet/payload.py)
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(MALFORMED_KINDS[1:])}")
    return safetensors.torch.save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.name: cls
    for cls in (Honest, FreeRider, Noise, Copycat, CopycatNoisy, SignFlip, Scaled, DataIgnorer, Stale, Late,
                Early, Malformed, Sybil)
}

from gauntlet.localnet.attacks import ATTACKS  # noqa: E402  (attacks.py builds on Behaviour above)

BEHAVIOURS.update({cls.name: cls for cls in ATTACKS})


def make_behaviour(name: str, uid: int, roster: Mapping[int, str], seed: int = 0) -> Behaviour:
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; choose one of {', '.join(BEHAVIOURS)}")
    return BEHAVIOURS[name](uid, roster, seed)
