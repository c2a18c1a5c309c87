"""Series count and scrape size of ``/metrics`` as distinct model ids grow.

Run: ``.venv/bin/python bench/metrics_cardinality.py [--models 100000] [--cap 100]``.
Prints one row per model count: distinct ids fed, series exposed, distinct ``model``
label values, exposition bytes, and the time the feed took. Then a gate
(``bench/gate.py``; exit status 1 on a miss): at every count, at most ``cap`` model
labels plus ``other``; past the cap, no more series than at the first count past it.
"""

from __future__ import annotations

import argparse
import time

from driftline.streams.metrics import Metrics
from gate import Gate
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

SIGNALS = (("embedding", "embedding"), ("latency", "behavior"), ("correct", "accuracy"))


def feed(m: Metrics, n_models: int) -> None:
    """What a worker does for each interaction of ``n_models`` distinct models (one each)."""
    for i in range(n_models):
        model_id = f"model-{i:06d}"
        label = m.model(model_id)
        m.interactions.labels(label).inc()
        for signal, kind in SIGNALS:
            m.observe_signal(model_id, signal, statistic=0.1, threshold=1.0,
                             baseline=0.5, current=0.6, kind=kind)
            if i % 10 == 0:
                m.drift_events.labels(label, kind, signal, "adwin").inc()


def measure(n_models: int, cap: int) -> dict[str, float]:
    m = Metrics(CollectorRegistry(), max_models=cap)
    t0 = time.perf_counter()
    feed(m, n_models)
    elapsed = time.perf_counter() - t0
    body = generate_latest(m.registry)
    series = 0
    models: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series += 1
            if "model" in sample.labels:
                models.add(sample.labels["model"])
    return {"ids": n_models, "series": series, "model_labels": len(models),
            "bytes": len(body), "feed_s": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--cap", type=int, default=100)
    args = parser.parse_args()
    counts = sorted({c for c in (10, 100, 1_000, 10_000, args.models) if c <= args.models})
    print(f"model label cap = {args.cap}")
    print(f"{'distinct ids':>12} {'series':>8} {'model labels':>12} {'bytes':>9} {'feed s':>7}")
    gate = Gate(f"/metrics cardinality, model label cap {args.cap}")
    first_past: dict[str, float] | None = None  # the first count past the cap
    for n in counts:
        r = measure(n, args.cap)
        print(f"{r['ids']:>12,} {r['series']:>8,} {r['model_labels']:>12,} "
              f"{r['bytes']:>9,} {r['feed_s']:>7.2f}")
        gate.check(f"{n:,} ids: model label values", r["model_labels"], "<=", args.cap + 1,
                   note="the cap, and 'other'")
        if n > args.cap:
            if first_past is None:
                first_past = r
                continue
            gate.check(f"{n:,} ids: series", r["series"], "<=", first_past["series"],
                       note=f"as with {first_past['ids']:,.0f} ids")
    print()
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    raise SystemExit(main())
