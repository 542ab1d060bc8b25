"""Regenerate ``protocols/vectors/ckks_v1.json`` (run from the repository root).

CKKS encryption is randomized, so the vectors are not reproducible byte for
byte: they record one deployment (its public context, aggregator context and,
for checking only, its secret key), two contributions, and the sum they must
decrypt to within the stated bound. The parameter sets (SEAL's primes and
parms_id) are deterministic.

    python protocols/vectors/ckks_make_vectors.py
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from fedsecure.ckks import ClientEncryptor, KeyHolder, summation_params
from fedsecure.ckks.context import build_seal_context
from fedsecure.ckks.wire import VERSION


def parameter_set(level: int) -> dict:
    p = summation_params(level)
    seal = build_seal_context(p)
    data = seal.first_context_data()
    return {
        "requested_security_bits": level,
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_bits": list(p.coeff_bits),
        "scale_bits": p.scale_bits,
        "security_bits": p.security_bits,
        "coeff_modulus": [m.value() for m in data.parms().coeff_modulus()],
        "parms_id": [f"{w:016x}" for w in seal.first_parms_id()],
        "max_abs_sum": p.max_abs_sum,
        "values_per_ciphertext": p.values_per_ciphertext,
    }


def main() -> None:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    holder = KeyHolder(min_contributions=2)
    enc = ClientEncryptor(holder.public_context())
    inputs = {1: ([0.5, -1.25, 3.0, 1e-3, -7.75], 1.0), 2: ([0.25, 0.25, -1.0, 2e-3, 100.0], 0.5)}
    contributions = [
        {"client_id": c, "input": x, "weight": w, "blob": b64(enc.encrypt(np.array(x), client_id=c, weight=w))}
        for c, (x, w) in inputs.items()
    ]
    expected = sum(np.array(x) * w for x, w in inputs.values())
    vectors = {
        "description": "fedsecure CKKS summation wire format v1: parameter sets and one worked deployment",
        "wire_version": VERSION,
        "parameter_sets": [parameter_set(level) for level in (128, 192, 256)],
        "example": {
            "public_context": b64(holder.public_context()),
            "aggregator_context": b64(holder.aggregator_context()),
            "secret_key_DANGEROUS_test_only": b64(holder.export_secret_key()),
            "min_contributions": 2,
            "length": 5,
            "contributions": contributions,
            "expected_sum": expected.tolist(),
            "error_bound": holder.error_bound(2, 5),
        },
    }
    out = Path(__file__).with_name("ckks_v1.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
