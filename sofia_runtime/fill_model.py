"""The fill-probability model the runtime's EV gate uses and the pipelines fit.

p(fill within h seconds) = 1 - exp(-A * exp(-k * d) * (vol / vol_ref) ** beta * h)

d is the order's distance from mid in spreads (0.5 = at the touch), vol the short-term volatility of mid
(per-minute log-return standard deviation); A, k, vol_ref and beta come from the snapshot's fill_model table.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np


@dataclass(frozen=True)
class FillParams:
    intensity_a: float
    decay_k: float
    vol_ref: float
    vol_exponent: float


def p_fill(params: FillParams, distance_spreads, vol, horizon_s):
    d = np.asarray(distance_spreads, dtype=float)
    ratio = np.maximum(np.asarray(vol, dtype=float), 1e-12) / params.vol_ref
    rate = params.intensity_a * np.exp(-params.decay_k * d) * ratio ** params.vol_exponent
    return 1.0 - np.exp(-rate * np.asarray(horizon_s, dtype=float))


def p_fill_scalar(params: FillParams, distance_spreads: float, vol: float, horizon_s: float) -> float:
    """`p_fill` for one order, without numpy's per-call overhead (the gate's hot path)."""
    ratio = max(vol, 1e-12) / params.vol_ref
    rate = params.intensity_a * math.exp(-params.decay_k * distance_spreads) * ratio ** params.vol_exponent
    return 1.0 - math.exp(-rate * horizon_s)
