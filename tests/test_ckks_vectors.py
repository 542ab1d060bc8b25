"""The suite checks ``protocols/vectors/ckks_v4.json``: parameter sets, wire layout, key agreement, masks,
encryption randomness, signatures, a decrypted round, and a refused v3 contribution."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from fedsecure.ckks import (
    ClientIdentity,
    KeyHolder,
    RoundReusedError,
    StreamingAggregator,
    TooFewContributionsError,
    summation_params,
)
from fedsecure.ckks.context import build_seal_context, context_id
from fedsecure.ckks.keys import contribution_message, encryption_randomness, mask, mask_seed, randomness_seed
from fedsecure.ckks.wire import VERSION, ContextBlob, ContributionBlob, chunks_digest

VECTORS = json.loads((Path(__file__).parents[1] / "protocols" / "vectors" / "ckks_v4.json").read_text())
EXAMPLE = VECTORS["example"]
ROUND = bytes.fromhex(EXAMPLE["round_id"])


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def _identity(c: dict) -> ClientIdentity:
    return ClientIdentity(
        c["client_id"],
        exchange_private=bytes.fromhex(c["exchange_private_DANGEROUS_test_only"]),
        signing_private=bytes.fromhex(c["signing_private_DANGEROUS_test_only"]),
    )


def _holder(**kw) -> KeyHolder:
    return KeyHolder.from_secret_key(
        _b(EXAMPLE["public_context"]),
        _b(EXAMPLE["secret_key_DANGEROUS_test_only"]),
        bytes.fromhex(EXAMPLE["exchange_private_DANGEROUS_test_only"]),
        clients=[_identity(c).registration for c in EXAMPLE["clients"]],
        **kw,
    )


def _aggregator(clients) -> StreamingAggregator:
    """The round's contributions (masked c0 halves) summed by an aggregator."""
    regs = [_identity(c).registration for c in EXAMPLE["clients"]]
    agg = StreamingAggregator(_b(EXAMPLE["aggregator_context"]), EXAMPLE["length"], round_id=ROUND, clients=regs)
    for c in clients:
        agg.add(_b(c["contribution"]), sender=c["client_id"])
    return agg


@pytest.mark.parametrize("vec", VECTORS["parameter_sets"], ids=lambda v: f"{v['requested_security_bits']}bit")
def test_parameter_sets(vec):
    p = summation_params(vec["requested_security_bits"])
    assert (p.poly_modulus_degree, list(p.coeff_bits), p.scale_bits) == (
        vec["poly_modulus_degree"],
        vec["coeff_bits"],
        vec["scale_bits"],
    )
    assert p.security_bits == vec["security_bits"] and p.max_abs_sum == vec["max_abs_sum"]
    seal = build_seal_context(p)
    assert [m.value() for m in seal.first_context_data().parms().coeff_modulus()] == vec["coeff_modulus"]
    assert [f"{w:016x}" for w in seal.first_parms_id()] == vec["parms_id"]


def test_public_context_layout():
    raw = _b(EXAMPLE["public_context"])
    assert VECTORS["wire_version"] == VERSION == 4
    magic, version, kind, sec, n, scale_bits, nprimes = struct.unpack(">4sBBHIBB", raw[:14])
    assert (magic, version, kind) == (b"FSCK", 4, 1)
    assert (sec, n, scale_bits, nprimes, raw[14]) == (192, 4096, 40, 1, 60)
    blob = ContextBlob.from_bytes(raw, public=True)
    assert raw[-64:-32] == blob.exchange_public == bytes.fromhex(EXAMPLE["key_holder_exchange_public"])
    cid = context_id(blob.seal_parameters, blob.public_key, blob.exchange_public)
    assert blob.context_id == raw[15:31] == cid == bytes.fromhex(EXAMPLE["context_id"])
    agg = ContextBlob.from_bytes(_b(EXAMPLE["aggregator_context"]), public=False)
    assert agg.context_id == blob.context_id and agg.public_key is None


@pytest.mark.parametrize("c", EXAMPLE["clients"], ids=lambda c: f"client{c['client_id']}")
def test_key_agreement_masks_and_signatures_are_deterministic(c):
    """X25519 both ways, the HKDF seed, the AES-CTR mask words and the Ed25519 signature match the record."""
    ident = _identity(c)
    kh_pub = bytes.fromhex(EXAMPLE["key_holder_exchange_public"])
    assert ident.registration.exchange_public.hex() == c["exchange_public"]
    assert ident.registration.signing_public.hex() == c["signing_public"]
    shared = ident.shared_secret(kh_pub)
    assert shared.hex() == c["shared_secret"]
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from fedsecure.ckks.keys import exchange

    kh = X25519PrivateKey.from_private_bytes(bytes.fromhex(EXAMPLE["exchange_private_DANGEROUS_test_only"]))
    assert exchange(kh, ident.registration.exchange_public, c["client_id"]) == shared
    cid = bytes.fromhex(EXAMPLE["context_id"])
    seed = mask_seed(shared, cid, ROUND, c["client_id"])
    assert seed.hex() == c["mask_seed"]
    moduli = np.array(VECTORS["parameter_sets"][0]["coeff_modulus"], dtype=np.uint64)
    m = mask(seed, 1, 4096, moduli)
    assert [int(v) for v in m[0, 0, :8]] == c["mask_first_words"]
    assert hashlib.sha256(m.astype("<u8").tobytes()).hexdigest() == c["mask_sha256"]
    rseed = randomness_seed(shared, cid, ROUND, c["client_id"])
    assert rseed.hex() == c["randomness_seed"]
    u, e1 = encryption_randomness(rseed, 1, 4096)
    assert u[0, :16].tolist() == c["u_first"] and e1[0, :16].tolist() == c["e1_first"]
    assert hashlib.sha256(u.astype("<i8").tobytes()).hexdigest() == c["u_sha256"]
    assert hashlib.sha256(e1.astype("<i8").tobytes()).hexdigest() == c["e1_sha256"]
    assert set(np.unique(u).tolist()) == {-1, 0, 1} and np.abs(e1).max() <= 21
    parsed = ContributionBlob.from_bytes(_b(c["contribution"]), sender=c["client_id"])
    assert _b(c["contribution"])[4:6] == bytes([4, 3])
    d0 = chunks_digest(parsed.chunks)
    assert d0.hex() == c["c0_digest"]
    msg = contribution_message(cid, ROUND, c["client_id"], len(c["input"]), d0)
    assert msg.hex() == c["signed_message"]
    assert ident.sign(msg) == parsed.signature == bytes.fromhex(c["signature"])


def test_contributions_sum_and_decrypt_to_the_recorded_result():
    holder = _holder(min_contributions=EXAMPLE["min_contributions"])
    out = holder.decrypt(_aggregator(EXAMPLE["clients"]).aggregate())
    expected = sum(np.array(c["input"]) * c["weight"] for c in EXAMPLE["clients"])
    np.testing.assert_allclose(expected, EXAMPLE["expected_sum"], rtol=0, atol=1e-15)
    assert np.max(np.abs(out - expected)) <= EXAMPLE["error_bound"]
    assert holder.flood_std == EXAMPLE["flood_std"]
    assert holder.error_bound(2, EXAMPLE["length"]) == pytest.approx(EXAMPLE["error_bound"], rel=1e-9)
    with pytest.raises(RoundReusedError):
        holder.decrypt(_replay_aggregate())


def test_recorded_minimum_is_enforced():
    holder = _holder(min_contributions=2)
    with pytest.raises(TooFewContributionsError):
        holder.decrypt(_aggregator(EXAMPLE["clients"][:1]).aggregate())


def _replay_aggregate() -> bytes:
    """The round's aggregate built again."""
    return _aggregator(EXAMPLE["clients"]).aggregate()


def test_a_v3_contribution_is_refused_by_name():
    from fedsecure.ckks import ContributionError

    old = _b(VECTORS["refused_v3_contribution"])
    assert old[:6] == b"FSCK" + bytes([3, 3])
    with pytest.raises(ContributionError, match="unsupported wire version 3"):
        _aggregator([]).add(old, sender=1)
