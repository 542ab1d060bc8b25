"""Embedding: the protocol packages import light, and the two embedding examples run over real sockets.

The examples (``examples/embed_secagg.py``, ``examples/embed_ckks.py``) start
one OS process per party and pass every protocol message as bytes over
loopback TCP; each prints a JSON report and exits 1 if the decoded sum misses
the plaintext sum of the included clients by more than its stated bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LIGHT = (
    "import sys, time\n"
    "t0, c0 = time.perf_counter(), time.process_time()\n"
    "import fedsecure.secagg, fedsecure.ckks\n"
    "dt, cpu = time.perf_counter() - t0, time.process_time() - c0\n"
    "heavy = sorted(m for m in ('torch', 'opacus', 'fedsecure.recsys', 'fedsecure.fl.engine', 'fedsecure.fl.local',"
    " 'flwr') if m in sys.modules)\n"
    "print(cpu, dt, ','.join(heavy))\n"
)


def test_protocol_packages_import_without_torch_in_under_a_second():
    # The check of the issue, verbatim, in a fresh interpreter.
    subprocess.run([sys.executable, "-c", "import fedsecure.secagg, fedsecure.ckks, sys; "
                    "assert 'torch' not in sys.modules"], cwd=ROOT, check=True)
    # The import's CPU time (wall time on a quiet machine is about the same, 0.6 s; on the shared CI cores
    # other processes' load adds wall time that is not the import's), best of three fresh interpreters.
    best = best_wall = None
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", LIGHT], cwd=ROOT, check=True, capture_output=True, text=True)
        parts = out.stdout.split()
        cpu, wall, heavy = float(parts[0]), float(parts[1]), (parts[2] if len(parts) > 2 else "")
        assert heavy == "", f"importing the protocol packages pulled in {heavy}"
        best = cpu if best is None else min(best, cpu)
        best_wall = wall if best_wall is None else min(best_wall, wall)
        if best < 1.0 and best_wall < 1.0:
            break
    assert best < 1.0, f"import fedsecure.secagg, fedsecure.ckks took {best:.2f} s of CPU"
    assert best_wall < 5.0, f"import fedsecure.secagg, fedsecure.ckks took {best_wall:.2f} s of wall time"


def test_the_interfaces_live_in_a_light_module():
    # SumProtocol / SumResult / AggregationError: numpy and the standard library only.
    out = subprocess.run(
        [sys.executable, "-c", "import sys; import fedsecure.fl.aggregation as a; "
         "print(a.SumProtocol.__module__, 'numpy' in sys.modules, 'torch' in sys.modules, 'tenseal' in sys.modules)"],
        cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["fedsecure.fl.aggregation", "True", "False", "False"]


def _run_example(name: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"{name} printed no report\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert proc.returncode == 0, f"{name} failed: {report}\nstderr:\n{proc.stderr[-3000:]}"
    return report


@pytest.mark.slow
def test_embed_secagg_example_over_tcp_with_dropouts():
    report = _run_example("embed_secagg.py", "--clients", "6", "--dim", "3000", "--drop", "1")
    assert report["ok"] and report["max_abs_error"] <= report["error_bound"]
    assert len(report["included"]) == 5 and "0" in report["excluded"]  # client 0 crashed before its masked input
    assert report["excluded"]["0"].startswith("no valid message at stage masked_input")


@pytest.mark.slow
def test_embed_ckks_example_over_tcp_with_a_dropout():
    report = _run_example("embed_ckks.py", "--clients", "4", "--dim", "3000", "--drop", "1")
    assert report["ok"] and report["max_abs_error"] <= report["error_bound"]
    assert report["included"] == [1, 2, 3]
