"""The local network's clock and miners: one window of uploads, then the miners' own model step.

Honest miners in sync hold the same model, so the simulation keeps ONE shared state theta_W
(plus each uid's momentum). Window W runs as:

1. the chain produces blocks until W has begun;
2. every behaviour computes its file from theta_W (`early` uploads it now, before t_min);
3. the chain produces blocks up to the first block of W + 1, whose wall-clock timestamp is
   t_min(W); t_max = t_min + put_window_s;
4. uploads in phase order: on-time files ON_TIME_MARGIN_S after t_min (a file system stamps
   writes from a coarse clock that can lag `time.time()` by a few milliseconds), then copycats,
   and last `late`, which waits until LATE_MARGIN_S past t_max: with a late peer in the network a
   window takes the put window plus a quarter second longer;
5. the miners aggregate W as the validator will: fetch the files from the buckets, run stage 1
   (`check_window`) against theta_W, intersect the accepted peers with the gather list the
   validator published in its bucket, and step: theta_{W+1}.

The simulation owns the local chain's clock: nothing else should produce blocks meanwhile.
State persists under `<network>/miners/` (theta per window, momentum per uid, progress.json),
so a new process carries on where the last one stopped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gauntlet.chain import LocalChain
from gauntlet.clock import closed_window, first_block, global_step, put_window, window_of
from gauntlet.codec import make_codec
from gauntlet.data import Corpus, load_tokenizer
from gauntlet.localnet.behaviours import Behaviour, Phase, WindowEnv, make_behaviour
from gauntlet.localnet.hostile_endpoints import serve_endpoints, upload_bucket
from gauntlet.localnet.network import Network
from gauntlet.model import build_model
from gauntlet.ratings import ValidatorState
from gauntlet.schedule import lr_at
from gauntlet.storage import Bucket, ObjectMissing, gradient_key
from gauntlet.window.filter import check_window
from gauntlet.window.publish import GATHER_KEY
from gauntlet.window.context import model_spec, save_checkpoint
from gauntlet.window.fetch import fetch_window
from gauntlet.window.plan import plan_window
from gauntlet.window.step import advance_ema, apply_aggregate, choose_aggregated

log = logging.getLogger(__name__)

ON_TIME_MARGIN_S = 0.05
FOLLOW_GAP_S = 0.02
"""Copycats upload after this pause, so their LastModified is later than their victim's."""
LATE_MARGIN_S = 0.25
THETA_KEEP = 4
"""theta files kept under miners/theta/ (older ones are deleted)."""
MAX_GATHER_BYTES = 2**20


@dataclass(frozen=True)
class UploadRecord:
    uid: int
    behaviour: str
    phase: str
    put_at: float | None
    """Wall-clock time of the put; None when the behaviour uploaded nothing."""
    size: int = 0


@dataclass
class MinerReport:
    window: int
    lr: float
    t_min: float
    t_max: float
    uploads: list[UploadRecord]
    verdicts: dict[int, str]
    """The miners' own stage-1 view, uid -> reason (what the validator's filter will also say)."""
    aggregated: list[int]
    gather: list[int] | None
    """The published gather list in force for the window (None: none yet, every accepted peer)."""
    stepped: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        late = [u.uid for u in self.uploads if u.put_at is not None and not self.t_min <= u.put_at <= self.t_max]
        return (f"window {self.window}: {sum(u.put_at is not None for u in self.uploads)} uploads "
                f"({len(late)} outside the put window), {len(self.aggregated)} aggregated "
                f"{self.aggregated}, lr {self.lr:.2e}, {self.seconds.get('total', 0.0):.1f} s")


def read_gather(network: Network, window: int) -> list[int] | None:
    """The gather list in force for `window`, read from the validator's committed bucket."""
    bucket = network.bucket(network.validator.uid)
    if bucket.stat(GATHER_KEY) is None:
        return None
    timeout = network.config.filter.fetch_timeout_s
    raw = bucket.get(GATHER_KEY, max_bytes=MAX_GATHER_BYTES, timeout_s=timeout)
    try:
        schedule = tuple((int(e), tuple(int(u) for u in uids)) for e, uids in json.loads(raw)["schedule"])
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"the validator's {GATHER_KEY} is not a gather schedule: {exc}") from exc
    chosen = ValidatorState(gather_schedule=schedule).gather_for(window)
    return None if chosen is None else list(chosen)


class Miners:
    """Every simulated miner of a network in this process: the shared model and the behaviours."""

    def __init__(self, network: Network) -> None:
        cfg = self.cfg = network.config
        self.network = network
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.corpus = Corpus(cfg.data.corpus)
        self.codec = make_codec(cfg.codec)
        self.model = build_model(cfg.model.size, len(self.tokenizer), cfg.model.init_seed).eval()
        self.spec = model_spec(cfg, self.model, len(self.tokenizer))
        roster = {p.uid: p.behaviour for p in network.peers}
        self.behaviours: dict[int, Behaviour] = {
            uid: make_behaviour(name, uid, roster, network.seed) for uid, name in sorted(roster.items())}
        self.buckets: dict[int, Bucket] = {uid: upload_bucket(network, uid) for uid in roster}
        """Where each peer puts its file (an endpoint peer's folder, which its endpoint serves)."""
        self.first_window: int | None = None
        self.next_window: int | None = None
        self.sync_ema = ""
        """The 2026 sync rule's EMA, tracked as the validator tracks it (`step.advance_ema`)."""
        self._scratch: torch.nn.Module | None = None
        self._load()

    @property
    def folder(self) -> Path:
        return self.network.miners_dir

    def theta_path(self, window: int) -> Path:
        return self.folder / "theta" / f"{window:08d}.safetensors"

    @property
    def theta(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def _load(self) -> None:
        progress = self.folder / "progress.json"
        if not progress.is_file():
            return
        data = json.loads(progress.read_text())
        self.first_window, self.next_window = int(data["first_window"]), int(data["next_window"])
        self.sync_ema = str(data.get("sync_ema", ""))
        _copy_params(self.model, load_file(self.theta_path(self.next_window)))
        for uid, behaviour in self.behaviours.items():
            path = self.folder / "peers" / f"{uid}.safetensors"
            if path.is_file():
                with safe_open(path, "pt") as fh:
                    meta = fh.metadata() or {}
                behaviour.load_state(load_file(path), meta)

    def save(self) -> None:
        """theta for next_window, every uid's state, then progress.json (written last)."""
        save_checkpoint(self.theta, self.theta_path(self.next_window))
        for old in sorted(self.theta_path(0).parent.glob("*.safetensors"))[:-THETA_KEEP]:
            old.unlink()
        (self.folder / "peers").mkdir(parents=True, exist_ok=True)
        for uid, behaviour in self.behaviours.items():
            tensors, meta = behaviour.save_state()
            path = self.folder / "peers" / f"{uid}.safetensors"
            save_file({k: t.contiguous() for k, t in tensors.items()}, str(path) + ".partial", metadata=meta)
            os.replace(str(path) + ".partial", path)
        progress = {"first_window": self.first_window, "next_window": self.next_window, "sync_ema": self.sync_ema}
        (self.folder / "progress.partial").write_text(json.dumps(progress))
        os.replace(self.folder / "progress.partial", self.folder / "progress.json")

    def scratch_model(self, params: dict[str, torch.Tensor]) -> torch.nn.Module:
        if self._scratch is None:
            self._scratch = build_model(self.cfg.model.size, len(self.tokenizer), self.cfg.model.init_seed).eval()
        _copy_params(self._scratch, params)
        return self._scratch

    def read_upload(self, uid: int, window: int) -> bytes | None:
        try:
            return self.buckets[uid].get(gradient_key(window, uid), max_bytes=int(self.cfg.filter.max_file_mb * 2**20),
                                         timeout_s=self.cfg.filter.fetch_timeout_s)
        except ObjectMissing:
            return None

    def env(self, window: int) -> WindowEnv:
        lr = lr_at(global_step(window, self.cfg.chain.start_window), self.cfg.schedule)
        return WindowEnv(self.cfg, window, lr, self.model, self.codec, self.corpus, self.tokenizer, self.spec,
                         read_upload=lambda uid: self.read_upload(uid, window), scratch_model=self.scratch_model,
                         seed=self.network.seed)

    def aggregate(self, window: int) -> tuple[dict[int, str], list[int] | None, list[int], bool]:
        """theta_W -> theta_{W+1} in place, from the files in the buckets, as the validator does."""
        plan = plan_window(self.network.chain, self.cfg, window, self.network.validator.hotkey)
        theta = self.theta
        with tempfile.TemporaryDirectory(dir=self.folder, prefix="fetch-") as tmp:
            records = fetch_window(plan, Path(tmp), self.cfg)
            checked, _ = check_window(plan, records, self.spec, theta, self.cfg, self.sync_ema)
        gather = read_gather(self.network, window)
        accepted = sorted(u for u, v in checked.verdicts.items() if v.ok)
        uids = choose_aggregated(accepted, gather, checked.submissions, self.codec, self.spec.shapes,
                                 self.cfg.aggregation)
        stepped = apply_aggregate(theta, checked.submissions, uids, self.codec, self.spec.shapes, plan.lr,
                                  self.cfg.aggregation.merge)
        self.sync_ema = advance_ema(self.sync_ema, theta, self.cfg)
        self.next_window = window + 1
        return {u: str(v.reason) for u, v in checked.verdicts.items()}, gather, uids, stepped

    def catch_up(self, window: int) -> None:
        """Aggregate windows the miners were not running for, from whatever files they hold."""
        if self.next_window is None:
            self.first_window = self.next_window = window
            return
        if window < self.next_window:
            raise ValueError(f"window {window} was already mined; the network's next window is {self.next_window}")
        while self.next_window < window:
            log.info("miners catching up on window %d (they did not run in it)", self.next_window)
            self.aggregate(self.next_window)
            save_checkpoint(self.theta, self.theta_path(self.next_window))


def _copy_params(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])


def _advance_to(chain: LocalChain, block: int) -> None:
    head = chain.block()
    if head < block:
        chain.produce_blocks(block - head)


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(left)


def _upload(miners: Miners, env: WindowEnv, phase: Phase, prepared: dict[int, bytes | None],
            out: list[UploadRecord]) -> None:
    for uid, behaviour in miners.behaviours.items():
        if behaviour.phase is not phase:
            continue
        data = behaviour.finish(env, prepared[uid])
        if data is not None:
            miners.buckets[uid].put(gradient_key(env.window, uid), data)
        out.append(UploadRecord(uid, behaviour.name, phase.name.lower(), time.time() if data is not None else None,
                                len(data or b"")))


_CACHE: dict[Path, Miners] = {}


def open_miners(network: Network) -> Miners:
    """This process's miners of a network, reloaded when another process moved the network on."""
    progress = network.miners_dir / "progress.json"
    stored = json.loads(progress.read_text())["next_window"] if progress.is_file() else None
    cached = _CACHE.get(network.folder)
    if cached is None or cached.network is not network or cached.next_window != stored:
        _CACHE.clear()
        cached = _CACHE[network.folder] = Miners(network)
    return cached


def run_miners(network: Network, window: int, miners: Miners | None = None) -> MinerReport:
    """Window W of the network (see the module docstring); leaves the chain at W + 1's first block."""
    miners = miners or open_miners(network)
    cfg, chain, bpw = network.config, network.chain, network.config.chain.blocks_per_window
    if chain.block() >= first_block(window + 1, bpw):
        raise ValueError(f"window {window} is over: the chain is at block {chain.block()}")
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    miners.catch_up(window)
    _advance_to(chain, first_block(window, bpw))
    env = miners.env(window)
    prepared = {uid: b.prepare(env) for uid, b in miners.behaviours.items()}
    uploads: list[UploadRecord] = []
    _upload(miners, env, Phase.EARLY, prepared, uploads)
    lap("prepare")
    _advance_to(chain, first_block(window + 1, bpw))
    t_min, t_max = put_window(chain, window, bpw, cfg.filter.put_window_s)
    _sleep_until(t_min + ON_TIME_MARGIN_S)
    lap("wait")
    _upload(miners, env, Phase.ON_TIME, prepared, uploads)
    if any(b.phase is Phase.FOLLOW for b in miners.behaviours.values()):
        time.sleep(FOLLOW_GAP_S)
        _upload(miners, env, Phase.FOLLOW, prepared, uploads)
    lap("upload")
    if any(b.phase is Phase.LATE for b in miners.behaviours.values()):
        _sleep_until(t_max + LATE_MARGIN_S)
        lap("wait")
        _upload(miners, env, Phase.LATE, prepared, uploads)
        lap("upload")
    verdicts, gather, aggregated, stepped = miners.aggregate(window)
    lap("aggregate")
    miners.save()
    lap("save")
    seconds["total"] = sum(seconds.values())
    report = MinerReport(window, env.lr, t_min, t_max, sorted(uploads, key=lambda u: u.uid), verdicts, aggregated,
                         gather, stepped, seconds)
    log.debug("%s", report.summary())
    return report


def run_network(network: Network, windows: int, validate: Callable[[int], None] | None = None, *,
                validate_from: int | None = None, miners: Miners | None = None,
                on_report: Callable[[MinerReport], None] | None = None) -> list[MinerReport]:
    """Run `windows` windows of miners; after each, hand every window that became ready
    (chain at its first block + validator_offset windows) to `validate`, oldest first,
    starting at `validate_from` (default: the first window the miners ran).

    `on_report` sees each window's report as soon as its miners are done (before validation).
    The peers' own hostile S3 endpoint (hostile_endpoints.py) serves for as long as this runs.
    """
    if windows < 0:
        raise ValueError(f"windows must be >= 0, got {windows}")
    with serve_endpoints(network):
        return _run_windows(network, windows, validate, validate_from, miners, on_report)


def _run_windows(network: Network, windows: int, validate: Callable[[int], None] | None, validate_from: int | None,
                 miners: Miners | None, on_report: Callable[[MinerReport], None] | None) -> list[MinerReport]:
    miners = miners or open_miners(network)
    chain_cfg = network.config.chain
    reports = []
    pending = validate_from
    for _ in range(windows):
        current = window_of(network.chain.block(), chain_cfg.blocks_per_window)
        reports.append(run_miners(network, max(current, miners.next_window or 0), miners))
        if on_report is not None:
            on_report(reports[-1])
        if validate is None:
            continue
        pending = miners.first_window if pending is None else pending
        ready = closed_window(network.chain.block(), chain_cfg)
        while ready is not None and pending <= ready:
            validate(pending)
            pending += 1
    return reports
