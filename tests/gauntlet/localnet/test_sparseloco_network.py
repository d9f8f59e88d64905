"""A local network whose miners all upload SparseLoCo files, validated by the direct pipeline.

Honest peers are accepted and paid for a positive gradient score; the copycat is caught by its
top-k indices, the late peer by the clock; a peer that uploads a broken SparseLoCo file (a
different fault each window) gets the verdict of that fault. The miners and the validator step
the same model, so honest peers never fall out of sync.
"""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from gauntlet.audit.store import AuditStore
from gauntlet.localnet.behaviours import BEHAVIOURS, Behaviour, WindowEnv
from gauntlet.localnet.network import init_network
from gauntlet.localnet.simulate import run_network
from gauntlet.ratings import ValidatorState
from gauntlet.sparseloco import SparseLoCoCodec
from gauntlet.storage import gradient_key
from gauntlet.submission import META_KEY, Submission, parse_submission
from gauntlet.window.context import context_for
from gauntlet.window.pipeline import Direct, validate_window

pytestmark = pytest.mark.slow
FAULTS = {"nan_qparams": ("non_finite", "holds NaN or Inf"), "wide_index": ("malformed", "is outside [0,"),
          "dct_kind": ("malformed", "codec kind 'dct' but this validator reads 'sparseloco'"),
          "short_codes": ("malformed", "has shape")}


class BrokenSparseLoCo(Behaviour):
    """Trains honestly, then breaks its SparseLoCo file in one way per window (FAULTS, in order)."""

    name = "broken_sparseloco"

    def fault(self, window: int) -> str:
        return list(FAULTS)[window % len(FAULTS)]

    def prepare(self, env: WindowEnv) -> bytes:
        data = self.encode(env, self.train(env))
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + n])["__metadata__"][META_KEY])
        tensors = safetensors.torch.load(data)
        name = next(n for n, s in sorted(env.spec.shapes.items()) if len(s) == 1)  # chunks of 64 elements
        fault = self.fault(env.window)
        if fault == "nan_qparams":
            tensors[f"{name}.qparams"][0] = float("nan")
        elif fault == "wide_index":  # the first 12-bit index set to 4095, past the chunk's 64 elements
            idx = tensors[f"{name}.idx"]
            idx[0], idx[1] = 0xFF, idx[1] | 0x0F
        elif fault == "dct_kind":
            meta["codec"] = {"kind": "dct", "chunk": meta["codec"]["chunk"], "topk": meta["codec"]["topk"]}
        else:
            tensors[f"{name}.codes"] = tensors[f"{name}.codes"][:-1].clone()
        return safetensors.torch.save(tensors, metadata={META_KEY: json.dumps(meta)})


def test_a_network_of_sparseloco_miners(tmp_path, prepared_data, monkeypatch) -> None:
    monkeypatch.setitem(BEHAVIOURS, BrokenSparseLoCo.name, BrokenSparseLoCo)
    corpus, tokenizer = prepared_data
    roster = ["honest"] * 3 + ["copycat", "late", "broken_sparseloco"]
    net = init_network(tmp_path / "net", behaviours=roster, corpus=corpus, tokenizer=tokenizer, force=True,
                       overrides={"codec": {"kind": "sparseloco", "topk": 64}, "data": {"rows_per_page": 4},
                                  "filter": {"put_window_s": 1.0}})
    cfg = net.config
    store = AuditStore(cfg.audit.root)
    state = [ValidatorState()]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), cfg, window, state=state[0]).state

    run_network(net, 4, validate)
    windows = store.windows()
    assert windows == list(range(len(windows))) and len(windows) >= 3

    honest, broken = net.uids("honest"), net.uids("broken_sparseloco")[0]
    data = net.bucket(honest[0]).get(gradient_key(0, honest[0]), max_bytes=2**26, timeout_s=30.0)
    n = int.from_bytes(data[:8], "little")
    assert json.loads(json.loads(data[8:8 + n])["__metadata__"][META_KEY])["codec"]["kind"] == "sparseloco"
    spec = context_for(cfg).spec
    assert isinstance(context_for(cfg).codec, SparseLoCoCodec)
    assert isinstance(parse_submission(data, window=0, uid=honest[0], spec=spec, max_bytes=len(data)), Submission)

    for window in windows:
        verdicts = {r["uid"]: (r["reason"], r["detail"]) for r in store.read("verdicts", window_id=window).iter_rows(named=True)}
        assert all(verdicts[u][0] == "ok" for u in honest), (window, verdicts)
        assert verdicts[net.uids("copycat")[0]][0] == "copied"
        assert verdicts[net.uids("late")[0]][0] == "too_late"
        reason, words = FAULTS[BrokenSparseLoCo(broken, {}).fault(window)]
        assert verdicts[broken][0] == reason and words in verdicts[broken][1], (window, verdicts[broken])
    scores = store.read("scores", window_id=windows[-1])
    by_uid = {r["uid"]: r["gradient_score"] for r in scores.iter_rows(named=True)}
    assert all(by_uid[u] is not None and by_uid[u] > 0 for u in honest), by_uid
    assert torch.isfinite(torch.tensor([by_uid[u] for u in honest])).all()
