"""Replay throughput on one core: scalar-only and 384-d JSON embeddings, vs a bare decode loop.

    .venv/bin/python bench/replay_speed.py            # 400k scalar + 40k embedding lines
    .venv/bin/python bench/replay_speed.py --scale 0.25

Files are generated once (seeded) under --dir. The bare loop is
``for line in f: orjson.loads(line)`` over the same file: the floor any
JSON-lines replay pays before validating or detecting anything. Rates are per
second of this process's CPU time (the machine is shared: wall-clock rates are
printed too), best of --repeat runs in one process (calibration caches warm). The run
ends with a gate (``bench/gate.py``): each rate beside its target, exit status 1 on a miss.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as the target says

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from driftline.streams.offline import replay
from gate import Gate

TARGETS = {"scalar": 200_000, "embedding-384": 40_000}


def generate(path: Path, n: int, dim: int, models: int = 8, seed: int = 0) -> None:
    """Interleaved models, realistic shapes, a latency shift half-way for model 0."""
    rng = np.random.default_rng(seed)
    lat = np.exp(5.0 + 0.5 * rng.standard_normal(n))
    lat[n // 2:: models] *= 1.6
    tok = rng.poisson(np.exp(5.0 + 0.6 * rng.standard_normal(n)))
    ref = rng.random(n) < 0.02
    cor = rng.random(n) < 0.9
    centers = rng.standard_normal((16, dim)).astype(np.float32) if dim else None
    with open(path, "wb") as fh:
        for start in range(0, n, 10_000):
            out = []
            for i in range(start, min(n, start + 10_000)):
                doc: dict[str, object] = {
                    "event_id": f"{i:012d}", "model_id": f"model-{i % models}",
                    "model_version": "v1", "ts": 1_700_000_000 + i * 0.01,
                    "latency_ms": round(float(lat[i]), 3), "input_tokens": 200,
                    "output_tokens": int(tok[i]), "refusal": bool(ref[i]),
                    "correct": bool(cor[i])}
                if centers is not None:
                    v = centers[i % 16] + 0.3 * rng.standard_normal(dim).astype(np.float32)
                    doc["embedding"] = [round(float(x), 6) for x in v]
                out.append(orjson.dumps(doc))
            fh.write(b"\n".join(out) + b"\n")


def bare(path: Path) -> float:
    t = time.process_time()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
    return n / (time.process_time() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "driftline-bench"))
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    cases = [("scalar", int(400_000 * args.scale), 0),
             ("embedding-384", int(40_000 * args.scale), 384)]
    print(f"{'file':<15}{'lines':>9}{'MB':>7}{'replay/s cpu':>14}{'(wall)':>10}"
          f"{'bare orjson/s':>15}{'replay/bare':>13}{'target/s':>10}")
    gate = Gate("offline replay throughput, one core")
    for name, n, dim in cases:
        path = d / f"{name}-{n}.jsonl"
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr)
            generate(path, n, dim)
        best_cpu = best_wall = 0.0
        for _ in range(args.repeat):
            c0 = time.process_time()
            st = replay.run(path, d / f"{name}.drift.jsonl")
            cpu = time.process_time() - c0
            best_cpu = max(best_cpu, st.interactions / cpu)
            best_wall = max(best_wall, st.interactions_per_second)
            print(f"  {st}", file=sys.stderr)
        b = max(bare(path) for _ in range(args.repeat))
        mb = path.stat().st_size / 1e6
        print(f"{name:<15}{n:>9,}{mb:>7.0f}{best_cpu:>14,.0f}{best_wall:>10,.0f}{b:>15,.0f}"
              f"{best_cpu / b:>13.2f}{TARGETS[name]:>10,}")
        gate.check(f"{name}: replay interactions per CPU-second", best_cpu, ">=",
                   TARGETS[name], note=f"{n:,} lines, best of {args.repeat}")
    print()
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    raise SystemExit(main())
