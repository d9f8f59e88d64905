"""One window of the `tiny` model on this machine, one torch thread: miner, network, validator, scorer.

1. One honest miner (median over MINER_PEERS uids): page batches, the mean gradient, the
   compression (momentum, DCT top-k, error feedback) and the file (bytes + put in a local
   bucket). Each uid trains one untimed window first, and its error feedback is switched on, so
   the timed window is a steady-state one.
2. The local network's miner phase for 12 and 21 peers (the default behaviour mix, the local
   network's own settings, put window included), per part of `run_miners`: median over MINED
   windows.
3. The direct validator (`gauntlet.window.pipeline.validate_window`, in the main thread as
   `gauntlet localnet run --validate` calls it) on the ready windows of each network: per-stage
   timings and the scoring throughput (peers scored per second).
4. The scorer (`score_submissions`: one scratch copy of the weights, run functionally,
   `L_rand_before` once a window, one host sync) against a naive apply-evaluate-restore loop that
   deep-copies the model per peer and evaluates `L_rand_before` per peer (as the reference did),
   on the same peers and batches, alternated; both must give the same losses. The batch
   evaluations each path makes and the cost of one on each (and of one deep copy) explain the
   ratio.
5. `codec_share`: the share of the evaluate stage's time (the real stage on the 12-peer network's
   scored window) spent decoding the peers' files: re-reading each archived file
   (`load_submission`: read, hash, parse) and `codec.decode_all`. Both are timed inside the
   stage's own run, by timing wrappers around the real calls, in CPU seconds of this process.

Networks live in `benchmarks/.work/`. Run: `.venv/bin/python -m benchmarks.bench_window`.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from gauntlet.audit.store import AuditStore
from gauntlet.codec import DCTCodec
from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, load_tokenizer, page_batches, random_pages, sample_batches
from gauntlet.filter import probe_values
from gauntlet.localnet.network import Network, default_mix, init_network
from gauntlet.localnet.simulate import run_network
from gauntlet.miner import MinerState, mean_gradient, mine_window, own_pages, pseudo_gradient
from gauntlet.model import build_model
from gauntlet.schedule import lr_at
from gauntlet.scoring import LossEvaluator
from gauntlet.storage import Bucket, BucketSpec, gradient_key
from gauntlet.submission import Submission, parse_submission, write_submission
from gauntlet.state import restore_state
from gauntlet.window import evaluate as evaluate_module, fetch, filter as filter_, plan as plan_
from gauntlet.window.context import ModelContext, context_for, corpus_for, model_spec
from gauntlet.window.evaluate import run as evaluate_peers
from gauntlet.window.load import load_submission
from gauntlet.window.pipeline import Direct, validate_window
from gauntlet.window.plan import WindowPlan

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results" / "window.json"
SIZES = (12, 21)
MINED = 3
"""Windows mined per network: with validator_offset 2, windows 0 and 1 are then ready."""
MINER_PEERS = 6
SCORED_WINDOW = 1


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _medians(runs: list[Mapping[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _one_miner(cfg: GauntletConfig, model: torch.nn.Module, corpus: Corpus, tokenizer: object, codec: DCTCodec,
               fingerprint: str, bucket: Bucket, uid: int) -> dict[str, float]:
    """One steady-state window of the reference miner, part by part (`mine_window`'s steps)."""
    state = MinerState(uid)
    mine_window(model, state, 0, lr_at(0, cfg.schedule), corpus, tokenizer, codec, cfg)  # warm-up window
    state.windows_trained = max(state.windows_trained, cfg.codec.error_feedback_after)
    window, lr = 1, lr_at(1, cfg.schedule)
    t: dict[str, float] = {}
    pages = own_pages(uid, window, corpus, cfg)
    t["batches"], batches = _timed(lambda: page_batches(corpus, tokenizer, pages, cfg.data))
    params = {n: p.detach() for n, p in model.named_parameters()}
    t["gradient"], (probe, grad) = _timed(lambda: (probe_values(params, cfg.filter.probe_elements),
                                                    mean_gradient(model, batches)))
    t["compress"], grads = _timed(lambda: pseudo_gradient(state, grad, lr, codec, cfg.codec.momentum,
                                                           cfg.codec.error_feedback_after))
    t["file"], data = _timed(lambda: _write(bucket, window, uid, write_submission(window, uid, fingerprint, codec,
                                                                                 grads, probe)))
    t["total"] = sum(t.values())
    return t | {"file_bytes": len(data)}


def _write(bucket: Bucket, window: int, uid: int, data: bytes) -> bytes:
    bucket.put(gradient_key(window, uid), data)
    return data


def _honest_miner(cfg: GauntletConfig) -> dict:
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    model = build_model(cfg.model.size, len(tokenizer), cfg.model.init_seed)
    spec = model_spec(cfg, model, len(tokenizer))
    codec, corpus = DCTCodec.from_config(cfg.codec), Corpus(cfg.data.corpus)
    runs = []
    with tempfile.TemporaryDirectory(dir=WORK, prefix="miner-") as tmp:
        bucket = Bucket.from_spec(BucketSpec(kind="local", path=tmp))
        for uid in range(1, MINER_PEERS + 1):
            runs.append(_one_miner(cfg, model, corpus, tokenizer, codec, spec.fingerprint, bucket, uid))
            data = bucket.get(gradient_key(1, uid), max_bytes=int(cfg.filter.max_file_mb * 2**20), timeout_s=60)
            parsed = parse_submission(data, window=1, uid=uid, spec=spec, max_bytes=int(cfg.filter.max_file_mb * 2**20))
            if not isinstance(parsed, Submission):
                raise RuntimeError(f"the timed miner wrote a file the validator refuses: {parsed.detail}")
    return {"peers": MINER_PEERS, "params": sum(p.numel() for p in model.parameters()),
            "batches": len(page_batches(corpus, tokenizer, own_pages(1, 1, corpus, cfg), cfg.data)),
            "median_s": _medians(runs)}


def _network(peers: int) -> tuple[Network, dict]:
    roster = default_mix(peers)
    net = init_network(WORK / f"window-net{peers}", behaviours=roster, corpus=WORK / "data" / "corpus",
                       tokenizer=WORK / "data" / "tokenizer", force=True)
    reports = run_network(net, MINED)
    return net, {"roster": {b: roster.count(b) for b in dict.fromkeys(roster)},
                 "put_window_s": net.config.filter.put_window_s,
                 "windows_s": [r.seconds for r in reports], "median_s": _medians([r.seconds for r in reports])}


def _validator(net: Network) -> tuple[ModelContext, dict]:
    """Every ready window in order (each window's checkpoint comes from the one before)."""
    cfg = net.config
    store = AuditStore(cfg.audit.root)
    state = restore_state(store)
    windows = []
    for window in range(MINED - cfg.chain.validator_offset + 1):
        total, result = _timed(lambda: validate_window(Direct(), cfg, window, state=state))
        state = result.state
        row = store.read("windows", window_id=window).row(0, named=True)
        scored = store.read("scores", window_id=window)["gradient_score"].drop_nulls().len()
        stages = json.loads(row["timings_json"])
        windows.append({"window": window, "total": total, "evaluated_peers": scored, **stages,
                        "peers_scored_per_s": scored / stages["evaluate"]})
    keys = [k for k in windows[0] if k != "window"]
    return context_for(cfg), {"windows": windows, "median": {k: statistics.median(w[k] for w in windows) for k in keys}}


def _batches(cfg, ctx: ModelContext, plan: WindowPlan, uids: list[int]) -> tuple[dict[int, list[Tensor]], list[Tensor]]:
    """The scorer's own and random batches, rebuilt from the public data functions."""
    corpus = corpus_for(cfg)

    def sampled(pages: list[int], seed: int) -> list[Tensor]:
        return sample_batches(page_batches(corpus, ctx.tokenizer, pages, cfg.data), cfg.scoring.sample_rate, seed)

    own = {u: sampled(own_pages(u, plan.window, corpus, cfg), plan.seed + u) for u in uids}
    n_pages = corpus.n_pages(cfg.data.rows_per_page)
    return own, sampled(random_pages(plan.seed, cfg.scoring.random_pages, n_pages), plan.seed)


def _mean_loss(model: torch.nn.Module, batches: list[Tensor]) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in batches:
            n = b[:, 1:].numel()
            total += model(input_ids=b, labels=b).loss.item() * n  # one host sync per batch
            tokens += n
    return total / tokens


def _naive(cfg, ctx: ModelContext, plan: WindowPlan, subs: Mapping[int, Submission]) -> dict[int, tuple]:
    """Per peer: decode, deep-copy the model, step the copy, evaluate before and after."""
    eta = cfg.scoring.eval_lr_factor * plan.lr
    own, rand = _batches(cfg, ctx, plan, sorted(subs))
    out = {}
    for uid in sorted(subs):
        delta = ctx.codec.decode_all(subs[uid].grads, ctx.spec.shapes)
        stepped = copy.deepcopy(ctx.model)
        with torch.no_grad():
            for name, p in stepped.named_parameters():
                p.sub_(eta * torch.sign(delta[name]))
        out[uid] = (_mean_loss(ctx.model, own[uid]), _mean_loss(stepped, own[uid]),
                    _mean_loss(ctx.model, rand), _mean_loss(stepped, rand))
    return out


def _parts(ctx: ModelContext, batch: Tensor, repeats: int = 10) -> dict[str, float]:
    """What one evaluation costs on each path: a batch's forward and loss, and the naive deep copy."""
    evaluator = LossEvaluator(ctx.model, ctx.device)
    fns = {"scorer_batch_ms": lambda: evaluator.mean_loss(evaluator.theta, [batch]).item(),
           "naive_batch_ms": lambda: _mean_loss(ctx.model, [batch]),
           "deepcopy_ms": lambda: copy.deepcopy(ctx.model)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn)[0] * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _scored_window(net: Network) -> tuple[GauntletConfig, WindowPlan, fetch.Fetched, list[int]]:
    """SCORED_WINDOW's plan, fetched files and chosen peers (stages 0-1 again; theta_W loaded)."""
    cfg = net.config
    state = restore_state(AuditStore(cfg.audit.root), before_window=SCORED_WINDOW)
    plan = plan_.plan_window(net.chain, cfg, SCORED_WINDOW, cfg.validator.hotkey)
    fetched = fetch.run(cfg, plan)
    return cfg, plan, fetched, list(filter_.run(cfg, plan, fetched, state).chosen)


class _TimedCodec:
    """The context's codec, its `decode_all` replaced by a timed call of the same method."""

    def __init__(self, codec: object, decode_all: Callable) -> None:
        self._codec, self.decode_all = codec, decode_all

    def __getattr__(self, name: str) -> object:
        return getattr(self._codec, name)


class _DecodeClock:
    """CPU seconds spent in the evaluate stage's decoding while it is active: the real
    `load_submission` and `codec.decode_all`, each wrapped by a timer (nothing else changes)."""

    def __init__(self, ctx: ModelContext) -> None:
        self.ctx, self.seconds, self.calls = ctx, 0.0, 0

    def _timed(self, fn: Callable) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start
                self.calls += 1
        return timed

    def __enter__(self) -> _DecodeClock:
        self.codec, self.load = self.ctx.codec, evaluate_module.load_submission
        self.ctx.codec = _TimedCodec(self.codec, self._timed(self.codec.decode_all))
        evaluate_module.load_submission = self._timed(self.load)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.codec, evaluate_module.load_submission = self.codec, self.load


def codec_share(net: Network, ctx: ModelContext, repeats: int = 3) -> dict:
    """Decoding's share of the evaluate stage, median over `repeats` runs of the stage."""
    cfg, plan, fetched, chosen = _scored_window(net)
    runs = []
    for _ in range(repeats):
        with _DecodeClock(ctx) as clock:
            start = time.process_time()
            evaluate_peers(cfg, plan, fetched, chosen)
            stage = time.process_time() - start
        runs.append({"stage_s": stage, "decode_s": clock.seconds, "decode_calls": clock.calls,
                     "share": clock.seconds / stage})
    return {"window": SCORED_WINDOW, "peers": len(chosen), "model": cfg.model.size,
            "screening": cfg.screening.enabled, "runs": runs,
            "codec_share": statistics.median(r["share"] for r in runs)}


def _scorer_vs_naive(net: Network, ctx: ModelContext, repeats: int) -> dict:
    cfg, plan, fetched, chosen = _scored_window(net)
    records = fetched.by_uid()
    subs = {u: load_submission(cfg, ctx, plan, records[u]) for u in chosen}

    def score_submissions(*_):
        return evaluate_peers(cfg, plan, fetched, chosen).losses

    got, want = score_submissions(), _naive(cfg, ctx, plan, subs)
    for uid, losses in got.items():  # the two must agree before they are timed
        fast = (losses.own_before, losses.own_after, losses.rand_before, losses.rand_after)
        if any(abs(a - b) > 1e-4 * abs(b) for a, b in zip(fast, want[uid])):
            raise RuntimeError(f"scorer and naive loop disagree for uid {uid}: {fast} vs {want[uid]}")
    scorer, naive = [], []
    for _ in range(repeats):
        scorer.append(_timed(lambda: score_submissions(ctx, plan, subs))[0])
        naive.append(_timed(lambda: _naive(cfg, ctx, plan, subs))[0])
    s, n = statistics.median(scorer), statistics.median(naive)
    own, rand = _batches(cfg, ctx, plan, sorted(subs))
    evaluations = {"scorer": sum(2 * len(b) + len(rand) for b in own.values()) + len(rand),  # L_rand_before once
                   "naive": sum(2 * len(b) + 2 * len(rand) for b in own.values())}
    return {"window": SCORED_WINDOW, "peers": len(subs), "repeats": repeats, "scorer_s": s, "naive_s": n,
            "batch_evaluations": evaluations, "parts": _parts(ctx, rand[0]),
            "naive_over_scorer": n / s, "scorer_peers_per_s": len(subs) / s, "naive_peers_per_s": len(subs) / n,
            "scorer_runs_s": scorer, "naive_runs_s": naive}


def main(repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    nets, contexts, networks, validators = {}, {}, {}, {}
    for peers in SIZES:
        nets[peers], networks[peers] = _network(peers)
        contexts[peers], validators[peers] = _validator(nets[peers])
    small = SIZES[0]
    result["model"] = nets[small].config.model.size
    result["honest_miner"] = _honest_miner(nets[small].config)
    result["miner_phase"] = networks
    result["validator"] = validators
    result["scorer_vs_naive"] = _scorer_vs_naive(nets[small], contexts[small], repeats)
    result["codec"] = codec_share(nets[small], contexts[small], repeats)
    result["codec_share"] = result["codec"]["codec_share"]
    m12, v12 = networks[small]["median_s"], validators[small]["median"]
    result["window_12_peers_s"] = {"miner_phase": m12["total"], "validator": v12["total"],
                                   "total": m12["total"] + v12["total"]}
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
