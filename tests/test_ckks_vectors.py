"""The suite checks ``protocols/vectors/ckks_v1.json``: parameter sets, wire layout, a decrypted result."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from fedsecure.ckks import KeyHolder, StreamingAggregator, TooFewContributionsError, summation_params
from fedsecure.ckks.context import build_seal_context, context_id
from fedsecure.ckks.wire import VERSION, ContextBlob

VECTORS = json.loads((Path(__file__).parents[1] / "protocols" / "vectors" / "ckks_v1.json").read_text())
EXAMPLE = VECTORS["example"]


def _b(s: str) -> bytes:
    return base64.b64decode(s)


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
    assert VECTORS["wire_version"] == VERSION
    magic, version, kind, sec, n, scale_bits, nprimes = struct.unpack(">4sBBHIBB", raw[:14])
    assert (magic, version, kind) == (b"FSCK", 1, 1)
    assert (sec, n, scale_bits, nprimes, raw[14]) == (192, 4096, 40, 1, 60)
    blob = ContextBlob.from_bytes(raw, public=True)
    assert blob.context_id == raw[15:31] == context_id(blob.seal_parameters, blob.public_key)
    agg = ContextBlob.from_bytes(_b(EXAMPLE["aggregator_context"]), public=False)
    assert agg.context_id == blob.context_id and agg.public_key is None


def test_contributions_sum_and_decrypt_to_the_recorded_result():
    agg = StreamingAggregator(_b(EXAMPLE["aggregator_context"]), EXAMPLE["length"])
    for c in EXAMPLE["contributions"]:
        agg.add(_b(c["blob"]), sender=c["client_id"])
    holder = KeyHolder.from_secret_key(
        _b(EXAMPLE["public_context"]),
        _b(EXAMPLE["secret_key_DANGEROUS_test_only"]),
        min_contributions=EXAMPLE["min_contributions"],
    )
    out = holder.decrypt(agg.aggregate())
    expected = sum(np.array(c["input"]) * c["weight"] for c in EXAMPLE["contributions"])
    np.testing.assert_allclose(expected, EXAMPLE["expected_sum"], rtol=0, atol=1e-15)
    assert np.max(np.abs(out - expected)) <= EXAMPLE["error_bound"]
    assert holder.error_bound(2, EXAMPLE["length"]) == pytest.approx(EXAMPLE["error_bound"], rel=1e-9)


def test_recorded_minimum_is_enforced():
    agg = StreamingAggregator(_b(EXAMPLE["aggregator_context"]), EXAMPLE["length"])
    c = EXAMPLE["contributions"][0]
    agg.add(_b(c["blob"]), sender=c["client_id"])
    holder = KeyHolder.from_secret_key(
        _b(EXAMPLE["public_context"]), _b(EXAMPLE["secret_key_DANGEROUS_test_only"]), min_contributions=2
    )
    with pytest.raises(TooFewContributionsError):
        holder.decrypt(agg.aggregate())
