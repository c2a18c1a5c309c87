"""Seeded interaction streams shared by the detector tests."""

from __future__ import annotations

import numpy as np
from driftline.detectors import Observation


def latency(seed: int, n: int, change: int = 10**9, shift: float = 0.0,
            spread: float = 1.0) -> np.ndarray:
    """Lognormal latency (ms); from ``change`` the log-mean moves ``shift`` SDs."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    after = np.arange(n) >= change
    z = np.where(after, z * spread + shift, z)
    return np.exp(5.0 + 0.5 * z)


def outcomes(seed: int, n: int, p0: float, p1: float | None = None,
             change: int = 10**9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(n) >= change, p1 if p1 is not None else p0, p0)
    return (rng.random(n) < p).astype(np.float64)


def topics(seed: int, n: int, dim: int = 32, share: float = 0.0,
           change: int = 10**9) -> np.ndarray:
    """A mixture of 6 topics; from ``change`` an unseen topic takes ``share`` of traffic."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((7, dim)).astype(np.float32)
    lab = rng.integers(0, 6, n)
    new = (np.arange(n) >= change) & (rng.random(n) < share)
    lab = np.where(new, 6, lab)
    return centers[lab] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)


def observations(seed: int, n: int, dim: int = 16, change: int = 10**9) -> list[Observation]:
    """Interactions with every signal; latency shifts +1 SD at ``change``."""
    rng = np.random.default_rng(seed)
    lat = latency(seed, n, change, 1.0)
    emb = topics(seed + 1, n, dim)
    return [Observation(
        event_id=f"e{i}", ts=1000.0 + i, latency_ms=float(lat[i]),
        output_tokens=int(rng.poisson(120)), refusal=bool(rng.random() < 0.05),
        feedback=int(rng.choice([-1, 0, 1])), correct=bool(rng.random() < 0.9),
        embedding=emb[i]) for i in range(n)]
