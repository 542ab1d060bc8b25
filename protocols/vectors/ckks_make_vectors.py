"""Regenerate ``protocols/vectors/ckks_v4.json`` (run from the repository root).

CKKS encryption is randomized (the client's ``e0`` comes from the OS), so the
vectors are not reproducible byte for byte: they record one deployment (its
public context, aggregator context and, for checking only, the key holder's
CKKS secret key and X25519 key and the clients' identity keys), one round of
two contributions (each client's masked c0 half), and the sum they must
decrypt to within the stated bound. Deterministic parts are checkable
exactly: the parameter sets (SEAL's primes and parms_id), the X25519 shared
secrets, the HKDF mask and randomness seeds, the first mask words, the
encryption randomness ``u`` and ``e1`` the key holder recomputes, and the
Ed25519 signatures (deterministic given the key and the message). The last
entry is a v3 contribution, which a v4 party refuses.

    python protocols/vectors/ckks_make_vectors.py
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np

from fedsecure.ckks import ClientEncryptor, ClientIdentity, KeyHolder, summation_params
from fedsecure.ckks.context import build_seal_context
from fedsecure.ckks.keys import contribution_message, encryption_randomness, mask, mask_seed, randomness_seed
from fedsecure.ckks.wire import VERSION, ContextBlob, ContributionBlob, chunks_digest

#: one contribution of wire v3 (from the retired ckks_v3.json), kept so that every version refuses it
V3_CONTRIBUTION = Path(__file__).with_name("ckks_v3_contribution.b64")


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
    idents = {1: ClientIdentity(1), 2: ClientIdentity(2)}
    holder = KeyHolder(min_contributions=2, clients=[c.registration for c in idents.values()])
    public = ContextBlob.from_bytes(holder.public_context(), public=True)
    moduli = np.array(parameter_set(128)["coeff_modulus"], dtype=np.uint64)
    round_id = bytes(range(16))
    inputs = {1: ([0.5, -1.25, 3.0, 1e-3, -7.75], 1.0), 2: ([0.25, 0.25, -1.0, 2e-3, 100.0], 0.5)}
    clients = []
    for c, (x, w) in inputs.items():
        ident = idents[c]
        blob = ClientEncryptor(holder.public_context(), ident).encrypt(np.array(x), round_id=round_id, weight=w)
        parsed = ContributionBlob.from_bytes(blob, sender=c)
        d0 = chunks_digest(parsed.chunks)
        shared = ident.shared_secret(public.exchange_public)
        seed = mask_seed(shared, holder.context_id, round_id, c)
        m = mask(seed, 1, 4096, moduli)
        rseed = randomness_seed(shared, holder.context_id, round_id, c)
        u, e1 = encryption_randomness(rseed, 1, 4096)
        xpriv, spriv = ident.export_private_keys()
        clients.append({
            "client_id": c,
            "exchange_private_DANGEROUS_test_only": xpriv.hex(),
            "signing_private_DANGEROUS_test_only": spriv.hex(),
            "exchange_public": ident.registration.exchange_public.hex(),
            "signing_public": ident.registration.signing_public.hex(),
            "shared_secret": shared.hex(),
            "mask_seed": seed.hex(),
            "mask_first_words": [int(v) for v in m[0, 0, :8]],
            "mask_sha256": hashlib.sha256(m.astype("<u8").tobytes()).hexdigest(),
            "randomness_seed": rseed.hex(),
            "u_first": [int(v) for v in u[0, :16]],
            "u_sha256": hashlib.sha256(u.astype("<i8").tobytes()).hexdigest(),
            "e1_first": [int(v) for v in e1[0, :16]],
            "e1_sha256": hashlib.sha256(e1.astype("<i8").tobytes()).hexdigest(),
            "c0_digest": d0.hex(),
            "signed_message": contribution_message(holder.context_id, round_id, c, len(x), d0).hex(),
            "signature": parsed.signature.hex(),
            "input": x,
            "weight": w,
            "contribution": b64(blob),
        })
    expected = sum(np.array(x) * w for x, w in inputs.values())
    vectors = {
        "description": "fedsecure CKKS summation wire format v4: parameter sets, key agreement, masks, "
        "encryption randomness, signatures, one worked round, and a refused v3 contribution",
        "wire_version": VERSION,
        "parameter_sets": [parameter_set(level) for level in (128, 192, 256)],
        "example": {
            "public_context": b64(holder.public_context()),
            "aggregator_context": b64(holder.aggregator_context()),
            "secret_key_DANGEROUS_test_only": b64(holder.export_secret_key()),
            "exchange_private_DANGEROUS_test_only": holder.export_exchange_key().hex(),
            "key_holder_exchange_public": public.exchange_public.hex(),
            "context_id": holder.context_id.hex(),
            "round_id": round_id.hex(),
            "min_contributions": 2,
            "length": 5,
            "flood_std": holder.flood_std,
            "clients": clients,
            "expected_sum": expected.tolist(),
            "error_bound": holder.error_bound(2, 5),
        },
        "refused_v3_contribution": V3_CONTRIBUTION.read_text().strip(),
    }
    out = Path(__file__).with_name("ckks_v4.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
