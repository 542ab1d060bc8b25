"""fedsecure's robust rules vs ByzFL 0.0.11 (and Flower's aggregate functions), side by side, same inputs.

For each rule both implement, wall time of one aggregation of an ``n x d``
float32 matrix (``n`` = 100 and 1,000 clients, ``d`` = 100,000), with
``f = n // 10`` rows far away (scaled by -100). ByzFL is called as its
documentation shows (numpy in, numpy out); fedsecure through
``make_rule(...).combine``. Parameters are matched so that both compute the
same thing (see tests/test_robust_vs_byzfl.py): Krum and Multi-Krum with
ByzFL's ``n - f - 1`` neighbours, the geometric median with ByzFL's start
(zero), ``nu = 0.1`` and ``T = 3`` fixed steps, centered clipping with
``L = 1``, ``tau = 100`` (ByzFL's defaults) from a zero centre. Each row
records the relative error between the two aggregates.

Flower (``flwr.server.strategy.aggregate``) has ``aggregate_median``,
``aggregate_trimmed_avg``, ``aggregate_krum`` (Krum, and Multi-Krum with
``to_keep``) and ``aggregate_bulyan``; they are compared where their
definitions match fedsecure's defaults (Krum with the paper's ``n - f - 2``
neighbours; Flower's trimmed mean with ``proportiontocut = (f + 0.5) / n``,
which cuts ``f`` per side; Bulyan with Krum selection). Flower computes the
pairwise distances in a Python double loop over clients (``n^2`` norms of
``d``-vectors), so its Krum-family rows run at ``n = 100`` only; at
``n = 1000`` the JSON gives an estimate (``n^2`` scaling of the ``n = 100``
time) instead of a run. Flower's Bulyan re-runs that loop ``n - 2f`` times;
it runs only with ``--flower-bulyan`` (at ``n = 100``; minutes here).

One BLAS thread (``OPENBLAS_NUM_THREADS=1`` unless set): ByzFL's distances
(scipy ``cdist``) are single-threaded, and on this shared machine a
multi-threaded BLAS call can stall. Wall time is the median over ``--repeats`` runs (``--repeats-large`` at
``n = 1000``), taken with ``time.perf_counter`` in this process, the two sides
interleaved so that both see the same load. The machine
is shared: quote the ratios (``byzfl_over_fedsecure`` > 1 means fedsecure is
faster), not the seconds.

Usage: python benchmarks/bench_robust_vs_byzfl.py [--n 100 1000] [--d 100000] [--repeats 5] [--repeats-large 1]
"""

from __future__ import annotations

import os

# one BLAS thread, as the other benchmarks here: on a shared 2-core machine a multi-threaded BLAS call can
# stall for 0.3 s (and ByzFL's scipy cdist is single-threaded anyway)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsecure.robust import make_rule  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "robust_vs_byzfl.json"


def load_byzfl():
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        raise SystemExit("byzfl is not installed: pip install --no-deps byzfl==0.0.11")
    if "byzfl" not in sys.modules:  # its __init__ imports torchvision; load the aggregators only
        stub = types.ModuleType("byzfl")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = stub
    return importlib.import_module("byzfl.aggregators")


def load_flower():
    try:
        return importlib.import_module("flwr.server.strategy.aggregate")
    except ImportError:
        return None


def timed_pair(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int,
               theirs_repeats: int | None = None) -> tuple[float, Any, float, Any]:
    """Median wall time of each, the two interleaved (ours, theirs, ours, ...) so both see the same load."""
    t_a, t_b, a, b = [], [], None, None
    for r in range(max(repeats, theirs_repeats or repeats)):
        if r < repeats:
            a = None
            gc.collect()
            t0 = time.perf_counter()
            a = ours()
            t_a.append(time.perf_counter() - t0)
        if r < (theirs_repeats or repeats):
            b = None
            gc.collect()
            t0 = time.perf_counter()
            b = theirs()
            t_b.append(time.perf_counter() - t0)
    return float(np.median(t_a)), a, float(np.median(t_b)), b


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def rel_err(ours: np.ndarray, theirs: Any) -> float:
    theirs = np.asarray(theirs, dtype=np.float64).ravel()
    return float(np.linalg.norm(np.asarray(ours, dtype=np.float64) - theirs) / max(np.linalg.norm(theirs), 1e-30))


def make_inputs(n: int, d: int, f: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    base = rng.standard_normal(d, dtype=np.float32)
    for i in range(n):  # row by row: no float64 n x d temporary
        x[i] = base + rng.standard_normal(d, dtype=np.float32)
    x[:f] *= -100.0
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeats-large", type=int, default=1, help="repeats at n >= 1000")
    ap.add_argument("--rules", nargs="+", default=None, help="subset of rules to run")
    ap.add_argument("--flower-bulyan", action="store_true", help="also run Flower's Bulyan at n <= 100 (slow)")
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args()

    B = load_byzfl()
    F = load_flower()
    rows: list[dict[str, Any]] = []
    flower_n100: dict[str, float] = {}
    for n in args.n:
        f = n // 10
        d = args.d
        reps = args.repeats if n < 1000 else args.repeats_large
        x = make_inputs(n, d, f)
        one = [([row], 1) for row in x]  # Flower's results format: (list of layer arrays, num_examples)
        tm_cut = (f + 0.5) / n
        assert int(tm_cut * n) == f
        shared: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            ("median", lambda: make_rule("median", f=f).combine(x).aggregate, lambda: B.Median()(x)),
            ("trimmed-mean", lambda: make_rule("trimmed-mean", f=f).combine(x).aggregate, lambda: B.TrMean(f=f)(x)),
            ("krum", lambda: make_rule("krum", f=f, neighbours="n-f-1").combine(x).aggregate, lambda: B.Krum(f=f)(x)),
            ("multi-krum", lambda: make_rule("multi-krum", f=f, neighbours="n-f-1").combine(x).aggregate,
             lambda: B.MultiKrum(f=f)(x)),
            ("geomed", lambda: make_rule("geomed", f=f, nu=0.1, max_iter=3, tol=0.0, init="zero").combine(x).aggregate,
             lambda: B.GeometricMedian(nu=0.1, T=3)(x)),
            ("centered-clipping", lambda: make_rule("centered-clipping", f=f, tau=100.0, iterations=1).combine(x).aggregate,
             lambda: B.CenteredClipping(L=1, tau=100.0)(x)),
        ]
        for name, ours_fn, byz_fn in shared:
            if args.rules and name not in args.rules:
                continue
            t_ours, a, t_byz, b = timed_pair(ours_fn, byz_fn, reps)
            row = {"n": n, "d": d, "f": f, "rule": name, "repeats": reps, "fedsecure_s": t_ours, "byzfl_s": t_byz,
                   "byzfl_over_fedsecure": t_byz / t_ours, "rel_err_vs_byzfl": rel_err(a, b)}
            del b
            print(f"n={n:5d} {name:18s} fedsecure {t_ours:8.3f}s  byzfl {t_byz:8.3f}s  "
                  f"byzfl/fedsecure {t_byz / t_ours:6.2f}  rel.err {row['rel_err_vs_byzfl']:.1e}", flush=True)
            rows.append(row)
        if F is None:
            continue
        flower: list[tuple[str, Callable[[], Any], Callable[[], Any], bool]] = [
            ("median", lambda: make_rule("median", f=f).combine(x).aggregate,
             lambda: F.aggregate_median(one)[0], True),
            ("trimmed-mean", lambda: make_rule("trimmed-mean", f=f).combine(x).aggregate,
             lambda: F.aggregate_trimmed_avg(one, tm_cut)[0], True),
            ("krum", lambda: make_rule("krum", f=f).combine(x).aggregate,
             lambda: F.aggregate_krum(one, num_malicious=f, to_keep=0)[0], n <= 100),
            ("multi-krum", lambda: make_rule("multi-krum", f=f).combine(x).aggregate,
             lambda: F.aggregate_krum(one, num_malicious=f, to_keep=n - f)[0], n <= 100),
            ("bulyan", lambda: make_rule("bulyan", f=f).combine(x).aggregate,
             lambda: F.aggregate_bulyan(list(one), num_malicious=f, aggregation_rule=F.aggregate_krum, to_keep=0)[0],
             n <= 100 and args.flower_bulyan),
        ]
        for name, ours_fn, flw_fn, run_it in flower:
            if args.rules and name not in args.rules:
                continue
            row = {"n": n, "d": d, "f": f, "rule": name, "peer": "flower", "repeats": reps}
            if run_it:
                t_ours, a, t_flw, b = timed_pair(ours_fn, flw_fn, reps,
                                                 1 if name in ("krum", "multi-krum", "bulyan") else reps)
                row["fedsecure_s"] = t_ours
                row.update({"flower_s": t_flw, "flower_over_fedsecure": t_flw / t_ours, "rel_err_vs_flower": rel_err(a, b)})
                if n == 100:
                    flower_n100[name] = t_flw
                print(f"n={n:5d} {name:18s} fedsecure {t_ours:8.3f}s  flower {t_flw:8.3f}s  "
                      f"flower/fedsecure {t_flw / t_ours:6.2f}  rel.err {row['rel_err_vs_flower']:.1e}", flush=True)
            else:
                t_ours, a = timed(ours_fn, reps)
                row["fedsecure_s"] = t_ours
                est = flower_n100.get(name)
                if est is not None:
                    est *= (n / 100) ** 2
                    row.update({"flower_estimated_s": est, "flower_estimated_over_fedsecure": est / t_ours})
                row["flower_skipped"] = ("Python double loop over clients for the pairwise distances "
                                         "(estimate: n^2 scaling of the n=100 time)" if name != "bulyan" else
                                         "Bulyan re-runs Flower's Krum double loop n - 2f times (--flower-bulyan)")
                print(f"n={n:5d} {name:18s} fedsecure {t_ours:8.3f}s  flower skipped"
                      + (f" (estimated {est:.0f}s)" if est else ""), flush=True)
            rows.append(row)
        del x, one
        gc.collect()

    import flwr
    import scipy

    out = {
        "command": "python benchmarks/bench_robust_vs_byzfl.py " + " ".join(sys.argv[1:]),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                     "byzfl": importlib.metadata.version("byzfl"), "flwr": flwr.__version__},
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
        "note": "wall time, median over repeats, same process and inputs; shared machine: quote ratios. "
                "byzfl_over_fedsecure > 1: fedsecure faster. f = n // 10 rows scaled by -100.",
        "rows": rows,
        "summary": {f"{r['rule']} n={r['n']}" + (" vs flower" if r.get("peer") else " vs byzfl"):
                    round(r.get("flower_over_fedsecure", r.get("byzfl_over_fedsecure", float("nan"))), 2)
                    for r in rows if "flower_over_fedsecure" in r or "byzfl_over_fedsecure" in r},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    import importlib.metadata

    main()
