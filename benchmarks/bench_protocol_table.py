"""The README's protocol table: every mode at n = 1,000 clients and d = 10^6, dropout 0, from `fedsecure bench` runs.

Reads every ``benchmarks/results/bench/*/bench.json`` (each made by the
``fedsecure bench`` command it records) and, per mode, takes the cell
n = 1,000, d = 10^6 where it was measured. Where a round of that size would
cost more than about ten CPU-minutes here (or more memory than a shared
24 GiB machine has), it extrapolates **linearly in d at n = 1,000** from the
two measured cells d = 10^4 and 10^5 (``cost = a + b d``: PRG expansion,
masking, quantisation, encryption, the server's sums and the buffered
messages are all linear in d at fixed n; bytes per client are exactly so), and
cross-checks the per-client CPU against the mode's n = 100, d = 10^6 cell
(per-client work does not depend on n in CKKS, and only through the graph
degree k in SecAgg+). Failing those cells, CKKS and Flower's SecAgg+ are
extrapolated **linearly in n** from their measured n = 100, d = 10^6 cell: a
client's work does not depend on n there (CKKS encrypts alone; Flower's ring
has 3 shares whatever n), the server's grows linearly. SecAgg on the complete graph costs O(n^2 d) per round;
it is not extrapolated: its largest measured cells are listed instead.

    python benchmarks/bench_protocol_table.py   # writes benchmarks/results/bench/protocol_table.json, prints the table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent / "results" / "bench"
N, D = 1000, 1_000_000
LINEAR_IN_D = ("secagg+", "ckks", "flower-secagg+")
METRICS = ("client_cpu_seconds", "server_cpu_seconds", "bytes_up_per_client", "bytes_down_per_client",
           "server_peak_bytes", "max_abs_error", "error_bound")
#: a client's work independent of n (CKKS encryption; Flower's ring of num_shares=3), the server's linear in n
LINEAR_IN_N = ("ckks", "flower-secagg+")
MODES = ("plaintext", "secagg", "secagg+", "ckks", "flower-secagg+")


def load() -> tuple[list[dict], dict[tuple, str]]:
    """Every completed dropout-0 cell, with its server memory as two bounds (see fedsecure/bench.py's
    MEMORY_METHOD): runs before the bounds were split measured the upper one (growth since the round began),
    except a run marked ``memory_bound: lower``; ``server_peak_bytes`` is the upper bound where known."""
    rows, commands = [], {}
    for path in sorted(HERE.glob("*/bench.json")):
        doc = json.loads(path.read_text())
        for r in doc["summary"]:
            if r["dropout"] == 0 and r["completed"]:
                r = dict(r)
                if "server_peak_upper_bytes" in r:
                    r["server_peak_lower_bytes"] = r["server_peak_bytes"]
                    r["server_peak_bytes"] = r["server_peak_upper_bytes"]
                elif doc.get("memory_bound") == "lower":
                    r["server_peak_lower_bytes"], r["server_peak_bytes"] = r["server_peak_bytes"], None
                r["command"] = doc["command"]
                rows.append(r)
                commands[(r["mode"], r["n"], r["d"])] = doc["command"]
    return rows, commands


def measured(rows: list[dict], mode: str, n: int, d: int) -> dict | None:
    """The cell as measured, over every run of it: CPU, bytes and error from the last run, each memory bound
    from the last run that measured it (with the commands of all)."""
    hits = [r for r in rows if (r["mode"], r["n"], r["d"]) == (mode, n, d)]
    if not hits:
        return None
    out = dict(hits[-1])
    for key in ("server_peak_bytes", "server_peak_lower_bytes"):
        vals = [r[key] for r in hits if r.get(key) is not None]
        out[key] = vals[-1] if vals else None
    out["commands"] = sorted({r["command"] for r in hits})
    return out


def cell(rows: list[dict], mode: str, n: int, d: int) -> dict | None:
    hits = [r for r in rows if (r["mode"], r["n"], r["d"]) == (mode, n, d)]
    return hits[-1] if hits else None


def per_round(r: dict, n: int) -> float:
    """All clients' CPU plus the server's: one round's CPU, as one machine runs it."""
    return r["client_cpu_seconds"] * n + r["server_cpu_seconds"]


def main() -> None:
    rows, commands = load()
    table = []
    for mode in MODES:
        got = measured(rows, mode, N, D)
        entry: dict = {"mode": mode, "n": N, "d": D}
        if got is not None:
            entry.update(how="measured", commands=got["commands"],
                         **{k: got[k] for k in (*METRICS, "server_peak_lower_bytes")})
        elif mode in LINEAR_IN_D and cell(rows, mode, N, 10_000) and cell(rows, mode, N, 100_000):
            lo, hi = cell(rows, mode, N, 10_000), cell(rows, mode, N, 100_000)
            t = (D - 100_000) / (100_000 - 10_000)
            entry.update(how="extrapolated linearly in d from the measured n=1000 cells d=1e4 and d=1e5",
                         commands=sorted({commands[(mode, N, 10_000)], commands[(mode, N, 100_000)]}))
            for k in METRICS[:5]:
                entry[k] = hi[k] + (hi[k] - lo[k]) * t
            entry["measured_d1e4"] = {k: lo[k] for k in METRICS}
            entry["measured_d1e5"] = {k: hi[k] for k in METRICS}
            check = cell(rows, mode, 100, D)
            if check is not None:
                entry["check_n100_d1e6"] = {k: check[k] for k in METRICS}
                entry["check_n100_d1e6"]["command"] = commands[(mode, 100, D)]
        elif mode in LINEAR_IN_N and cell(rows, mode, 100, D):
            got = cell(rows, mode, 100, D)
            scale = N / 100
            entry.update(how="extrapolated linearly in n from the measured n=100, d=1e6 cell: per-client CPU and "
                             "bytes as measured (a client's work does not depend on n), server CPU x10"
                             + ("; server memory x10 (it holds every masked vector)" if mode == "flower-secagg+"
                                else "; server memory as measured at n=100 (a lower bound: it grows with n)"),
                         command=commands[(mode, 100, D)], measured_n100={k: got[k] for k in METRICS})
            entry.update(client_cpu_seconds=got["client_cpu_seconds"], server_cpu_seconds=got["server_cpu_seconds"] * scale,
                         bytes_up_per_client=got["bytes_up_per_client"],
                         bytes_down_per_client=got["bytes_down_per_client"],
                         server_peak_bytes=got["server_peak_bytes"] * (scale if mode == "flower-secagg+" else 1))
        else:
            largest = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"] ** 2 * r["d"])
            entry.update(how="not measured at this size and not extrapolated (cost grows faster than linearly)",
                         largest_measured=[{**{k: r[k] for k in ("n", "d", *METRICS)},
                                            "cpu_seconds_per_round": per_round(r, r["n"]),
                                            "command": commands[(mode, r["n"], r["d"])]} for r in largest[-2:]])
        if "client_cpu_seconds" in entry:
            entry["cpu_seconds_per_round"] = per_round(entry, N)
        table.append(entry)
    out = {"command": " ".join(["python", *sys.argv]), "n": N, "d": D, "dropout": 0.0, "rows": table,
           "note": "CPU seconds per round = n x per-client CPU + server CPU (clients run one after another in one "
                   "process; with 2 cores the wall time can approach half of it). Server memory: server_peak_lower_bytes "
                   "and server_peak_bytes are the lower and upper bounds of fedsecure/bench.py's MEMORY_METHOD."}
    (HERE / "protocol_table.json").write_text(json.dumps(out, indent=2))
    print("| mode | CPU s / round (clients + server) | server CPU s | server peak MiB (lower – upper bound) | "
          "up / down per client | "
          "max error (bound) | how |")
    print("|---|---|---|---|---|---|---|")
    for e in table:
        if "cpu_seconds_per_round" not in e:
            big = e["largest_measured"][-1] if e["largest_measured"] else None
            what = (f"largest measured: n={big['n']}, d={big['d']:.0e}: {big['cpu_seconds_per_round']:.0f} CPU-s, "
                    f"server {big['server_peak_bytes'] / 2**20:.0f} MiB") if big else "no measured cell"
            print(f"| {e['mode']} | - | - | - | - | - | {e['how']}; {what} |")
            continue
        err = (f"{e['max_abs_error']:.1e} ({e['error_bound']:.1e})" if e.get("max_abs_error") is not None
               else "-")
        lo, hi = e.get("server_peak_lower_bytes"), e.get("server_peak_bytes")
        mem = " – ".join(f"{v / 2**20:.0f}" for v in (lo, hi) if v is not None)
        print(f"| {e['mode']} | {e['cpu_seconds_per_round']:.0f} | {e['server_cpu_seconds']:.1f} | "
              f"{mem} | {e['bytes_up_per_client'] / 1e6:.2f} MB / "
              f"{e['bytes_down_per_client'] / 1e3:.1f} kB | {err} | {e['how'].split(' from')[0]} |")


if __name__ == "__main__":
    main()
