"""fedsecure SecAgg+ vs Flower's own SecAgg+ (flwr SecAggPlusWorkflow + secaggplus_mod), side by side.

Flower is driven through its real server workflow (``SecAggPlusWorkflow``)
and its real client mod (``secaggplus_mod`` on a real ``ClientApp``), with
Flower's example setting ``num_shares=3, reconstruction_threshold=2``. The
only thing written (in :mod:`fedsecure.bench`, shared with ``fedsecure bench``)
is the transport: ``DirectGrid``, a
:class:`flwr.serverapp.grid.Grid` that hands each message straight to the
destination node's ``ClientApp`` in this process (no network, no
serialisation beyond a deep copy of each inbound message -- which only
flatters Flower's numbers). Flower's simulation
engine needs Ray, which is not installed here.

Compute is CPU time of this process (server plus all clients run in it, one
at a time) for one aggregation round, measured with ``time.process_time``;
everything fedsecure does in the round (client construction and encoding,
key agreement, sharing, masking, MACs, server unmasking, decoding) is inside
the measured interval.

Threat model, for a fair comparison: Flower's SecAgg+ is a *semi-honest*
protocol (no signatures, no consistency check; its server is trusted to
follow the protocol). The headline fedsecure row is therefore fedsecure in its
semi-honest mode, with the (k, t) ``choose_params(threat_model="semi-honest")``
picks for n clients at 10% dropout and no assumed corrupt client: round
failure <= 1e-6 and privacy failure (collusion + disconnection of the honest
survivors) <= 2^-40, both recorded in the JSON. For reference the JSON also
has fedsecure in its active mode (Ed25519 signatures, consistency check,
2t > k), which Flower does not offer, and, like for like, fedsecure with
Flower's own ring degree (k=2, t=2), whose failure bound under 10% dropout is
far above 1e-6 (its clients run under a ``ClientPolicy`` with
``privacy_target=1``, since fedsecure clients refuse it by default). Dropouts:
a random 10% of the clients stop before sending their masked vector (the
stage that forces unmasking of dropped clients).

Wire v4 (the hardened protocol): every fedsecure round includes the signed
round configuration, the commit-and-reveal graph seed (one more round trip,
``seed_reveal``: each client hashes every reveal of the view), and each
client's own :class:`~fedsecure.secagg.ClientPolicy` checks, all inside the
measured interval (``run_round`` drives the stages until ``done``). Wire v4
adds, in active mode only, one Ed25519 signature per dealt share pair (made
by the dealer, checked by the recipient) and keeps the masked inputs on the
server; no client cheats here, so the exclusion stage never runs.

Targets (issue 11), after the hardening, at n=100, d=100,000: fedsecure
semi-honest <= 0.4x Flower's compute, fedsecure active <= 1.5x. Both ratios,
with their k and t and threat model, are in the JSON summary. Flower with
``num_shares=3`` halts whenever two ring neighbours drop (its own
``_check_threshold``: with 10 of 100 dropped, most rounds -- about 7 in 8 here); a halted
round skips unmasking and returns no aggregate, so its CPU time flatters
Flower. Each row keeps Flower's first attempt (``flower_cpu_seconds``, the
ratio ``ratio_*_over_flower``, as before) and, with ``--flower-attempts``,
re-runs Flower's round with the same dropped clients (a fresh ring shuffle,
Flower's own ``random.shuffle``) until one completes: its CPU time gives
``ratio_*_over_completed_flower``, the cost of actually aggregating under
that dropout. The summary has both.

Usage: python benchmarks/bench_secagg_vs_flower.py [--n 100] [--d 100000] [--repeats 2] [--flower-attempts 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

from fedsecure.bench import fedsecure_round, flower_round  # the shared drivers (also behind `fedsecure bench`)
from fedsecure.secagg import ClientPolicy, FixedPointEncoding, choose_params
from fedsecure.secagg.params import evaluate

#: issue 11: fedsecure CPU / Flower CPU at n=100, d=100,000, side by side in one run
TARGET_SEMI_HONEST = 0.4
TARGET_ACTIVE = 1.5

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--flower-attempts", type=int, default=30,
                    help="Flower rounds tried per row (same dropped clients) until one completes; 1 = first only")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_vs_flower.json"))
    args = ap.parse_args()
    n, d = args.n, args.d
    vectors = {u: (np.sin(np.arange(d, dtype=np.float64) * (u + 1) * 1e-3) * 0.9).astype(np.float32) for u in range(n)}
    params = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model="semi-honest")
    active = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model="active")
    # Like-for-like: Flower's ring (2 neighbours, threshold 2) as a fedsecure Harary graph with k=2, t=2.
    # choose_params refuses it (it aborts far too often); evaluate() states its failure bound.
    ring = evaluate(n, 2, 2, graph="sparse", dropout_rate=0.1)
    # fedsecure clients refuse that ring by default (privacy bound 1 > 2^-40); these ones accept any bound.
    ring_policy = ClientPolicy(dropout_rate=0.1, privacy_target=1.0)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    sel = np.random.default_rng(12345)  # which clients drop: a benchmark scenario, not secret randomness
    results = []
    for dropout in (0.0, 0.1):
        for rep in range(args.repeats):
            dropped = sorted(sel.choice(n, size=int(round(dropout * n)), replace=False).tolist()) if dropout else []
            fl_tries = []
            for _ in range(max(1, args.flower_attempts)):
                fl_tries.append(flower_round(vectors, {u: "collect_masked_vectors" for u in dropped})[:3])
                if fl_tries[-1][1]:
                    break
            fl_secs, fl_done, _ = fl_tries[0]  # the first attempt, completed or halted
            fl_full_secs, fl_full_done, fl_mean = fl_tries[-1]
            fl_full = fl_full_secs if fl_full_done else None
            drop = {u: "masked_input" for u in dropped}
            fs_secs, rep_fs, extra = fedsecure_round(vectors, drop, params, enc)
            ring_secs, rep_ring, ring_extra = fedsecure_round(vectors, drop, ring, enc, policy=ring_policy)
            act_secs, rep_act, act_extra = fedsecure_round(vectors, drop, active, enc, active=True)
            true_sum = sum(vectors[u].astype(np.float64) for u in rep_fs.included)
            fs_err = float(np.abs(rep_fs.total - true_sum).max())
            act_err = None
            if rep_act is not None:
                act_err = float(np.abs(rep_act.total - sum(vectors[u].astype(np.float64)
                                                           for u in rep_act.included)).max())
            fl_err = None
            if fl_full_done:
                fl_err = float(np.abs(fl_mean - true_sum / len(rep_fs.included)).max())
            row = {
                "dropout": dropout, "repeat": rep, "dropped": dropped,
                "flower_cpu_seconds": fl_secs, "flower_completed": fl_done, "flower_max_abs_error_of_mean": fl_err,
                "flower_attempts": [{"cpu_seconds": a[0], "completed": a[1]} for a in fl_tries],
                "flower_completed_cpu_seconds": fl_full,
                "ratio_fedsecure_over_completed_flower": fs_secs / fl_full if fl_full else None,
                "ratio_fedsecure_active_over_completed_flower": act_secs / fl_full if fl_full else None,
                "fedsecure_cpu_seconds": fs_secs, "fedsecure_max_abs_error_of_sum": fs_err,
                "fedsecure_error_bound": enc.max_error(len(rep_fs.included)),
                "ratio_fedsecure_over_flower": fs_secs / fl_secs, **{"fedsecure_" + k: v for k, v in extra.items()},
                "fedsecure_ring_k2_cpu_seconds": ring_secs, "fedsecure_ring_k2_completed": rep_ring is not None,
                "ratio_fedsecure_ring_k2_over_flower": ring_secs / fl_secs,
                **{"fedsecure_ring_k2_" + k: v for k, v in ring_extra.items()},
                "fedsecure_active_cpu_seconds": act_secs, "fedsecure_active_completed": rep_act is not None,
                "fedsecure_active_max_abs_error_of_sum": act_err,
                "ratio_fedsecure_active_over_flower": act_secs / fl_secs,
                **{"fedsecure_active_" + k: v for k, v in act_extra.items()},
            }
            results.append(row)
            print(f"dropout={dropout:.0%} rep={rep}: flower {fl_secs:.2f}s (completed={fl_done}; completed round "
                  f"{'%.2fs' % fl_full if fl_full else 'none'} after {len(fl_tries)} attempt(s)), "
                  f"fedsecure semi-honest k={params.k} t={params.t} {fs_secs:.2f}s (ratio {fs_secs / fl_secs:.3f}), "
                  f"active k={active.k} t={active.t} {act_secs:.2f}s (completed={rep_act is not None}; "
                  f"ratio {act_secs / fl_secs:.3f}), k=2 ring {ring_secs:.2f}s (completed={rep_ring is not None}; "
                  f"ratio {ring_secs / fl_secs:.3f})", flush=True)
    def med(rows, key):
        return float(np.median([r[key] for r in rows])) if rows else None

    summary = {}
    for dropout in (0.0, 0.1):
        rows = [r for r in results if r["dropout"] == dropout]
        done = [r for r in rows if r["flower_completed_cpu_seconds"] is not None]
        sh, ac = med(rows, "ratio_fedsecure_over_flower"), med(rows, "ratio_fedsecure_active_over_flower")
        summary[f"dropout_{dropout}"] = {
            "semi_honest": {"threat_model": params.threat_model, "k": params.k, "t": params.t,
                            "median_ratio_over_flower": sh, "target_ratio": TARGET_SEMI_HONEST,
                            "target_met": sh <= TARGET_SEMI_HONEST,
                            "median_ratio_over_completed_flower": med(done, "ratio_fedsecure_over_completed_flower")},
            "active": {"threat_model": active.threat_model, "k": active.k, "t": active.t,
                       "median_ratio_over_flower": ac, "target_ratio": TARGET_ACTIVE,
                       "target_met": ac <= TARGET_ACTIVE,
                       "median_ratio_over_completed_flower": med(done, "ratio_fedsecure_active_over_completed_flower"),
                       "completed": [r["fedsecure_active_completed"] for r in rows]},
            "median_ratio_fedsecure_over_flower": sh,
            "median_ratio_fedsecure_active_over_flower": ac,
            "median_flower_cpu_seconds": med(rows, "flower_cpu_seconds"),
            "median_fedsecure_cpu_seconds": med(rows, "fedsecure_cpu_seconds"),
            "median_fedsecure_active_cpu_seconds": med(rows, "fedsecure_active_cpu_seconds"),
            "median_ratio_fedsecure_ring_k2_over_flower": med(rows, "ratio_fedsecure_ring_k2_over_flower"),
            "fedsecure_ring_k2_completed": [r["fedsecure_ring_k2_completed"] for r in rows],
            "flower_completed": [r["flower_completed"] for r in rows],
            "median_flower_completed_round_cpu_seconds": med(done, "flower_completed_cpu_seconds"),
            "flower_attempts": [len(r["flower_attempts"]) for r in rows],
            "rows_with_a_completed_flower_round": len(done),
        }
    out = {
        "command": " ".join(["python"] + sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("flwr", "cryptography", "numpy")},
        "setting": {"n": n, "d": d, "flower": {"num_shares": 3, "reconstruction_threshold": 2},
                    "comparison": "Flower SecAgg+ is semi-honest; the headline ratio uses fedsecure's semi-honest "
                                  "mode (threat_model below); fedsecure_active (signatures, consistency check, "
                                  "2t > k + min_colluders) has its own target",
                    "fedsecure_wire": "v4 (signed configuration, commit-and-reveal graph seed, client policy, complaints in masked inputs and an exclusion stage for a dealer nobody can use; active mode: dealer-signed shares, exclusion of a dealer proven to cheat)",
                    "targets": {"semi_honest_over_flower": TARGET_SEMI_HONEST, "active_over_flower": TARGET_ACTIVE},
                    "fedsecure": params.as_dict(), "fedsecure_active": active.as_dict(),
                    "fedsecure_ring_k2": ring.as_dict(),
                    "bits": enc.bits, "scale": enc.scale},
        "summary": summary,
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    for key, srow in summary.items():
        for mode in ("semi_honest", "active"):
            v = srow[mode]
            if v["median_ratio_over_completed_flower"] is not None:
                v["target_met_vs_completed_flower"] = v["median_ratio_over_completed_flower"] <= v["target_ratio"]
            print(f"{key} {v['threat_model']:11s} k={v['k']} t={v['t']}: median fedsecure/Flower CPU "
                  f"{v['median_ratio_over_flower']:.3f} (target <= {v['target_ratio']}: "
                  f"{'met' if v['target_met'] else 'MISSED'}); vs a completed Flower round "
                  f"{v['median_ratio_over_completed_flower']}")
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
