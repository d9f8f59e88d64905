"""More miner behaviours for the incentive benchmark: effort variants and the classic attacks.

The behaviours of `behaviours.py` test one check each; these test whether pay follows work and
whether the attacks of the robust-aggregation literature get through. ALIE and IPM follow the
definitions of `byzfl`'s attacks (Baruch et al. 2019; Xie et al. 2020), adapted to our file
format: the attacker has no view of the other peers' updates before the put window closes, so it
estimates the honest distribution from per-page gradients of its own (its own pages plus a few
more), perturbs the estimate, and compresses the result with the codec like any miner.

| behaviour   | uploads                                                        | honest work? |
|-------------|----------------------------------------------------------------|--------------|
| lazy        | the reference miner's update on half its own pages             | yes (less)   |
| diligent    | the reference miner's update on twice as many pages (own first)| yes (more)   |
| sandbagger  | an update from one sequence of its own pages; a normal file    | no           |
| replayer    | its first window's update, re-uploaded every window (fresh probe) | no        |
| alie        | mean + tau * std of per-page updates (tau = 1.5, byzfl's default) | no        |
| ipm         | -tau * mean of per-page updates (tau = 2, byzfl's default)     | no           |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from gauntlet.codec import Compressed
from gauntlet.data import assign_pages, page_batches
from gauntlet.filter import probe_values
from gauntlet.localnet.behaviours import Behaviour, WindowEnv
from gauntlet.miner import mean_gradient, own_pages, pseudo_gradient
from gauntlet.submission import write_submission


def extended_pages(uid: int, env: WindowEnv, factor: int) -> list[int]:
    """`factor` times a peer's page count for W; the first pages_per_window are its own pages.

    `assign_pages` draws a sequence of distinct pages, so asking for more keeps the own pages as
    the prefix: the validator's own-data test still sees the peer's own pages in its update.
    """
    d = env.cfg.data
    n_pages = env.corpus.n_pages(d.rows_per_page)
    return assign_pages(seed=uid, offset=env.window * d.pages_per_window,
                        n=min(n_pages, factor * d.pages_per_window), n_pages=n_pages)


def upload(env: WindowEnv, uid: int, grads: Compressed) -> bytes:
    """A file of `grads` with the probe of theta_W (in sync, as an honest file is)."""
    probe = probe_values(env.theta, env.cfg.filter.probe_elements)
    return write_submission(env.window, uid, env.spec.fingerprint, env.codec, grads, probe)


class Lazy(Behaviour):
    """Honest, with half the work: the first half of its own pages (at least one)."""

    name = "lazy"

    def prepare(self, env: WindowEnv) -> bytes:
        own = own_pages(self.uid, env.window, env.corpus, env.cfg)
        return self.encode(env, self.train(env, pages=own[: max(1, len(own) // 2)]))


class Diligent(Behaviour):
    """Honest, with twice the work: its own pages plus as many more of its own sequence."""

    name = "diligent"

    def prepare(self, env: WindowEnv) -> bytes:
        return self.encode(env, self.train(env, pages=extended_pages(self.uid, env, 2)))


class Sandbagger(Behaviour):
    """Trains on one sequence of its first own page; momentum, top-k and probe as any miner.

    "Padded to look normal": the file has the full top-k per chunk, a normal norm (the momentum
    and the validator's unit-norm scaling hide the tiny batch) and a probe in sync.
    """

    name = "sandbagger"

    def prepare(self, env: WindowEnv) -> bytes:
        page = own_pages(self.uid, env.window, env.corpus, env.cfg)[0]
        one = page_batches(env.corpus, env.tokenizer, [page], env.cfg.data)[0][:1]  # (1, T)
        grad = mean_gradient(env.model, [one])
        c = env.cfg.codec
        compressed = pseudo_gradient(self.state, grad, env.lr, env.codec, c.momentum, c.error_feedback_after)
        return upload(env, self.uid, compressed)


class Replayer(Behaviour):
    """Trains honestly once, then re-uploads that update every window with a fresh probe."""

    name = "replayer"

    def __init__(self, uid: int, roster: Mapping[int, str], seed: int = 0) -> None:
        super().__init__(uid, roster, seed)
        self.kept: Compressed | None = None

    def prepare(self, env: WindowEnv) -> bytes:
        if self.kept is None:
            mined = self.train(env)
            self.kept = mined.compressed
            return self.encode(env, mined)
        return upload(env, self.uid, self.kept)

    def save_state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        tensors, meta = super().save_state()
        for name, (idx, vals) in (self.kept or {}).items():
            tensors[f"kept_idx/{name}"], tensors[f"kept_vals/{name}"] = idx, vals
        return tensors, meta

    def load_state(self, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
        super().load_state(tensors, meta)
        names = [k.split("/", 1)[1] for k in tensors if k.startswith("kept_idx/")]
        self.kept = {n: (tensors[f"kept_idx/{n}"], tensors[f"kept_vals/{n}"]) for n in names} or None


class _Omniscient(Behaviour):
    """Estimates the honest updates from per-page gradients: lr * g for each of `pages` pages."""

    pages_factor: ClassVar[int] = 2
    tau: ClassVar[float] = 1.0

    def page_updates(self, env: WindowEnv) -> dict[str, Tensor]:
        """name -> (P, *shape): one honest-like update per page (own pages first)."""
        per_page = [mean_gradient(env.model, page_batches(env.corpus, env.tokenizer, [p], env.cfg.data))
                    for p in extended_pages(self.uid, env, self.pages_factor)]
        return {n: env.lr * torch.stack([g[n] for g in per_page]) for n in per_page[0]}

    def perturb(self, updates: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define perturb")

    def prepare(self, env: WindowEnv) -> bytes:
        self.state.windows_trained += 1
        return upload(env, self.uid, env.codec.encode_all(self.perturb(self.page_updates(env))))


class Alie(_Omniscient):
    """A little is enough: mean + tau * coordinate-wise std (byzfl's ALIE, tau = 1.5)."""

    name = "alie"
    tau = 1.5

    def perturb(self, updates: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: u.mean(0) + self.tau * u.std(0) for n, u in updates.items()}


class Ipm(_Omniscient):
    """Inner-product manipulation: -tau * mean (byzfl's IPM, tau = 2)."""

    name = "ipm"
    tau = 2.0

    def perturb(self, updates: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: -self.tau * u.mean(0) for n, u in updates.items()}


ATTACKS: tuple[type[Behaviour], ...] = (Lazy, Diligent, Sandbagger, Replayer, Alie, Ipm)
