"""CKKS summation: fedsecure vs the FLARE-style TenSEAL baseline, side by side in one run.

Baseline (NVIDIA FLARE's HE defaults): ``tenseal.context(CKKS, 8192,
[60, 40, 40])``, scale 2^40, every client holding the secret key, one
``ckks_vector`` per flattened update (TenSEAL splits a long vector into
ceil(d / 4096) ciphertexts itself), serialized with ``serialize()``; the
server deserializes and adds. fedsecure (wire v4): ``KeyHolder`` /
``ClientEncryptor`` / ``StreamingAggregator`` at the default 128-bit
parameters, with everything v4 does per round: each client draws its
encryption randomness from the seed it shares with the key holder, computes
``c0 = p0 u + e0 + Delta m``, masks it with its AES-CTR mask, signs it
(Ed25519) and sends it to the aggregator (no c1 leaves the client); the
aggregator verifies every signature and sums the c0 parts; the key holder
verifies the evidence, recomputes the n clients' (u, e1) and masks, builds
``C1``, decrypts, checks the range and adds flooding noise.

Measured for n clients and each d: bytes per value on the wire, client
encrypt+serialize seconds (mean per client), aggregator deserialize+sum
seconds (all clients), decrypt seconds, end-to-end (n clients + aggregator +
decrypt), max error against the float64 numpy sum on inputs uniform in
[-1, 1]. Aggregator peak memory: a child process that only aggregates reads
the c0 parts (fedsecure) or contributions (baseline) one by one from a pipe; we report its peak RSS
(``VmHWM``) and the growth over its RSS before the first contribution
(SEAL allocates outside Python, so tracemalloc would not see it).

    python benchmarks/bench_ckks.py                 # full run, writes benchmarks/results/ckks.json
    python benchmarks/bench_ckks.py --sizes 10000 --clients 3 --memory-clients 3 5 --memory-length 10000
    python benchmarks/bench_ckks.py --sizes 1000000 --memory-clients 10 --out ...   # the d = 10^6 headline only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import tenseal as ts

from fedsecure.bench import CkksSession
from fedsecure.ckks import ClientRegistration, StreamingAggregator


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


# ---------------------------------------------------------------- baseline (FLARE-style)


class FlareBaseline:
    name = "baseline"

    def __init__(self) -> None:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
        ctx.global_scale = 2**40
        self.client_context_bytes = ctx.serialize(save_secret_key=True)  # every client holds the secret key
        server = ctx.copy()
        server.make_context_public()
        self.server_context_bytes = server.serialize()
        self.client_ctx = ts.context_from(self.client_context_bytes)
        self.server_ctx = ts.context_from(self.server_context_bytes)
        self._acc = None

    def ciphertexts(self, d: int) -> int:
        return -(-d // 4096)

    def encrypt(self, x: np.ndarray, client_id: int) -> bytes:
        return ts.ckks_vector(self.client_ctx, x).serialize()

    def start(self, length: int) -> None:
        self._acc = None

    def add(self, blob: bytes, client_id: int) -> None:
        v = ts.ckks_vector_from(self.server_ctx, blob)
        if self._acc is None:
            self._acc = v
        else:
            self._acc.add_(v)

    def aggregate(self) -> bytes:
        return self._acc.serialize()

    def decrypt(self, aggregate: bytes) -> np.ndarray:
        return np.asarray(ts.ckks_vector_from(self.client_ctx, aggregate).decrypt())


#: fedsecure's key holder, client encryptors and per-round aggregator, shared with ``fedsecure bench``
Fedsecure = CkksSession


def run_size(d: int, n: int, rng: np.random.Generator) -> dict:
    """Both implementations interleaved client by client, so machine noise hits both alike."""
    xs = rng.uniform(-1.0, 1.0, (n, d))
    expected = xs.sum(axis=0)
    impls = (FlareBaseline(), Fedsecure())
    t = {impl.name: {"enc": 0.0, "agg": 0.0, "dec": 0.0, "bytes": 0, "agg_bytes": 0} for impl in impls}
    for i in range(n):  # client key set-up (X25519/Ed25519 generation, registration) happens once, not per round
        impls[1]._encryptor(i)
    for impl in impls:
        impl.start(d)
    for i in range(n):
        for impl in impls:
            t0 = time.perf_counter()
            blob = impl.encrypt(xs[i], i)
            t1 = time.perf_counter()
            impl.add(blob, i)
            t2 = time.perf_counter()
            rec = t[impl.name]
            rec["enc"] += t1 - t0
            rec["agg"] += t2 - t1
            rec["bytes"] += len(blob)
            rec["agg_bytes"] += len(blob)
            del blob
    out = {"d": d, "n": n}
    for impl in impls:
        rec = t[impl.name]
        t0 = time.perf_counter()
        aggregate = impl.aggregate()
        t1 = time.perf_counter()
        total = impl.decrypt(aggregate)
        t2 = time.perf_counter()
        rec["agg"] += t1 - t0
        rec["dec"] = t2 - t1
        res = {
            "bytes_per_value": rec["bytes"] / (n * d),
            "aggregator_download_bytes_per_value": rec["agg_bytes"] / (n * d),
            "float32_ratio": rec["bytes"] / (n * d * 4),
            "ciphertexts_per_client": impl.ciphertexts(d),
            "client_encrypt_serialize_s": rec["enc"] / n,
            "aggregator_deserialize_sum_s": rec["agg"],
            "decrypt_s": rec["dec"],
            "end_to_end_s": rec["enc"] + rec["agg"] + rec["dec"],
            "max_abs_error": float(np.max(np.abs(total[:d] - expected))),
        }
        if impl.name == "fedsecure":
            res["stated_error_bound"] = impl.holder.error_bound(n, d)
            res["flood_std"] = impl.holder.flood_std
            res["max_abs_error_relative_to_clip_range"] = res["max_abs_error"] / 1.0  # inputs in [-1, 1]
        out[impl.name] = res
        print(f"d={d:>8} {impl.name:>9}: " + ", ".join(f"{k}={v:.4g}" for k, v in res.items()), flush=True)
    b, f = out["baseline"], out["fedsecure"]
    out["ratios_fedsecure_over_baseline"] = {
        k: f[k] / b[k]
        for k in (
            "bytes_per_value",
            "client_encrypt_serialize_s",
            "aggregator_deserialize_sum_s",
            "decrypt_s",
            "end_to_end_s",
        )
    }
    print(f"d={d:>8} ratios fedsecure/baseline: "
          + ", ".join(f"{k}={v:.3f}" for k, v in out["ratios_fedsecure_over_baseline"].items()), flush=True)
    return out


# ---------------------------------------------------------------- aggregator memory, in a child process


def _child(kind: str, context_path: str, length: int) -> None:
    data = Path(context_path).read_bytes()
    if kind == "fedsecure":
        reg = json.loads(Path(context_path + ".round.json").read_text())
        clients = [ClientRegistration(c, bytes.fromhex(x), bytes.fromhex(e)) for c, x, e in reg["clients"]]
        agg = StreamingAggregator(data, length, round_id=bytes.fromhex(reg["round_id"]), clients=clients)
    else:
        server_ctx = ts.context_from(data)
        acc = None
    start = _status_kib("VmRSS")
    stdin = sys.stdin.buffer
    count = 0
    trajectory: dict[int, int] = {}  # peak RSS (KiB) after this many contributions
    while True:
        head = stdin.read(12)
        if not head:
            break
        sender, size = struct.unpack(">qI", head)
        blob = stdin.read(size)
        if kind == "fedsecure":
            agg.add(blob, sender=sender)
        else:
            v = ts.ckks_vector_from(server_ctx, blob)
            if acc is None:
                acc = v
            else:
                acc.add_(v)
        del blob
        count += 1
        if count in (1, 2, 5, 10, 20, 50, 100, 200):
            trajectory[count] = _status_kib("VmHWM")
    result = agg.aggregate() if kind == "fedsecure" else acc.serialize()
    # VmHWM: this address space's peak RSS (ru_maxrss would carry the parent's over exec)
    peak = _status_kib("VmHWM")
    print(json.dumps({"contributions": count, "rss_before_kib": start, "peak_rss_kib": peak,
                      "growth_kib": peak - start, "aggregate_bytes": len(result),
                      "peak_rss_kib_after": trajectory}))


def aggregator_memory(kind: str, n: int, length: int, impl, tmpdir: Path) -> dict:
    ctx_path = tmpdir / f"{kind}.ctx"
    ctx_path.write_bytes(impl.aggregator_context if kind == "fedsecure" else impl.server_context_bytes)
    if kind == "fedsecure":
        impl.new_round()
        for i in range(n):
            impl._encryptor(i)
        regs = [[r.client_id, r.exchange_public.hex(), r.signing_public.hex()] for r in impl.holder.registrations]
        Path(str(ctx_path) + ".round.json").write_text(json.dumps({"round_id": impl.round_id.hex(), "clients": regs}))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(ctx_path), str(length)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    rng = np.random.default_rng(n)
    reused = None
    for i in range(n):
        if kind == "fedsecure":  # the contribution: the masked c0 half, all a client sends
            blob = impl.encrypt(rng.uniform(-1, 1, length), i)
        else:  # the baseline has no replay check: one ciphertext sent n times costs the aggregator the same
            reused = reused or impl.encrypt(rng.uniform(-1, 1, length), i)
            blob = reused
        proc.stdin.write(struct.pack(">qI", i, len(blob)) + blob)
        proc.stdin.flush()
    proc.stdin.close()
    out = json.loads(proc.stdout.read())
    proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--memory-clients", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--memory-length", type=float, default=1e6)
    ap.add_argument("--out", default="benchmarks/results/ckks.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)  # benchmark inputs only; keys come from SEAL's OS-seeded PRNG
    sizes = [run_size(int(d), args.clients, rng) for d in args.sizes]
    import tempfile

    memory = []
    length = int(args.memory_length)
    with tempfile.TemporaryDirectory() as tmp:
        impls = {"fedsecure": Fedsecure(), "baseline": FlareBaseline()}
        for n in args.memory_clients:
            for kind, impl in impls.items():
                rec = {"kind": kind, "n": n, "d": length, **aggregator_memory(kind, n, length, impl, Path(tmp))}
                memory.append(rec)
                print(f"memory {kind:>9} n={n:>3} d={length}: peak {rec['peak_rss_kib'] / 1024:.1f} MiB, "
                      f"growth {rec['growth_kib'] / 1024:.1f} MiB", flush=True)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"tenseal": ts.__version__, "numpy": np.__version__},
        "baseline": "FLARE-style: tenseal.context(CKKS, 8192, [60,40,40]), scale 2^40, one ckks_vector per update",
        "fedsecure_protocol": "wire v4: encryption randomness seeded from a secret shared with the key holder, "
        "per-round masks, Ed25519-signed masked c0 contributions (no c1 leaves a client), key-holder evidence "
        "check, C1 and mask recomputation, range check, flooding noise (std 2^-24 per value)",
        "fedsecure_params": Fedsecure().holder.params.describe(),
        "sizes": sizes,
        "aggregator_memory": memory,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
