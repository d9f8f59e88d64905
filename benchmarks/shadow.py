"""Shadow models: where each aggregation rule would have taken the model, on the same submissions.

Every window the network's miners publish their files; Gauntlet steps with its gather set (the
network's own model). Each shadow starts from the same initial model and steps every window with
`lr * sign(rule(updates))`, where the updates are the same files, decompressed to dense and
scaled to unit norm per tensor and peer (as Gauntlet's aggregation does; on sparse top-k vectors
a median is zero almost everywhere). The peers computed their files at Gauntlet's model, so a
shadow's gradients are slightly off its own point: the rules get the files a real network under
them would have seen only approximately, which favours the rules that stay close to Gauntlet.
`honest_only` steps with the mean of the equal-work honest peers: the reference network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.aggregators import RULES, flatten, tolerable, unflatten
from gauntlet.aggregation import sign_step
from gauntlet.data import page_batches, random_pages
from gauntlet.submission import Submission, parse_submission

HELD_OUT_SEED = 7_777_777
HELD_OUT_PAGES = 4


class Shadows:
    def __init__(self, miners, honest: list[int], f: int) -> None:
        self.miners, self.honest, self.f = miners, sorted(honest), f
        self.shapes = dict(miners.spec.shapes)
        start = {n: t.detach().clone() for n, t in miners.theta.items()}
        self.start = start
        self.thetas = {name: {n: t.clone() for n, t in start.items()} for name in [*RULES, "honest_only"]}
        self.used_f: dict[str, int] = {}

    def _updates(self, report) -> tuple[list[int], Tensor]:
        """uids and (P, D) unit-norm-per-tensor dense updates of every file stage 1 accepted."""
        m = self.miners
        uids, rows = [], []
        for uid in sorted(u for u, reason in report.verdicts.items() if reason == "ok"):
            data = m.read_upload(uid, report.window)
            sub = parse_submission(data, window=report.window, uid=uid, spec=m.spec, max_bytes=len(data))
            if not isinstance(sub, Submission):
                continue
            dense = m.codec.decode_all(sub.grads, self.shapes)
            dense = {n: t / t.norm() if t.norm() > 0 else t for n, t in dense.items()}
            uids.append(uid)
            rows.append(flatten(dense, list(self.shapes)))
        return uids, torch.stack(rows)

    def step(self, report) -> None:
        """`on_report` of run_network: one window's step of every shadow."""
        if not report.stepped:
            return
        uids, x = self._updates(report)
        for name, rule in RULES.items():
            f = tolerable(name, len(uids), self.f)
            self.used_f[name] = min(self.used_f.get(name, f), f)
            sign_step(self.thetas[name], unflatten(rule(x, f), self.shapes), report.lr)
        honest = [i for i, u in enumerate(uids) if u in self.honest]
        if honest:
            sign_step(self.thetas["honest_only"], unflatten(x[honest].mean(0), self.shapes), report.lr)

    def losses(self) -> dict[str, float]:
        """Held-out loss of every shadow, of Gauntlet's model and of the initial model."""
        m = self.miners
        cfg = m.cfg
        pages = random_pages(HELD_OUT_SEED, HELD_OUT_PAGES, m.corpus.n_pages(cfg.data.rows_per_page))
        batches = page_batches(m.corpus, m.tokenizer, pages, cfg.data)
        models = {**self.thetas, "gauntlet": m.theta, "initial": self.start}
        return {name: _loss(m.scratch_model({n: t.clone() for n, t in params.items()}), batches)
                for name, params in models.items()} | {f"f_{k}": v for k, v in self.used_f.items()}


def _loss(model: torch.nn.Module, batches: list[Tensor]) -> float:
    with torch.no_grad():
        model.eval()
        total = sum(float(model(input_ids=b, labels=b).loss) * len(b) for b in batches)
    return total / sum(len(b) for b in batches)
