"""Stage "aggregate": the update of window W applied to theta_W, giving theta_{W+1}.

The aggregation set is the gather list in force for W (chosen by the validator from earlier
weights and published) intersected with the peers whose files passed the public checks of
stage 1. Before any gather list exists (a new network) every accepted peer is used. An honest
peer in sync computes the same set and the same step (the local network does exactly this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from gauntlet.aggregation import aggregate, sign_step
from gauntlet.codec import DCTCodec
from gauntlet.submission import Submission


def aggregation_set(accepted: Sequence[int], gather: Sequence[int] | None) -> list[int]:
    if gather is None:
        return sorted(accepted)
    return sorted(set(accepted) & set(gather))


def apply_aggregate(theta: Mapping[str, Tensor], subs: Mapping[int, Submission], uids: Sequence[int],
                    codec: DCTCodec, shapes: Mapping[str, tuple[int, ...]], lr: float) -> bool:
    """Step theta in place with the peers' merged update; False (no step) when nobody qualifies."""
    if not uids:
        return False
    delta = aggregate(codec, [subs[u].grads for u in uids], shapes)
    sign_step(theta, delta, lr)
    return True
