"""protocols/secagg.md is complete: every vector transcript is re-derived from the spec text alone.

This file deliberately imports nothing from fedsecure. It uses only hashlib, struct, numpy and the
primitives of ``cryptography`` (X25519, Ed25519, HKDF, AES, ChaCha20-Poly1305), rebuilds each party's
randomness stream (section 10.3), and recomputes, message by message, what every party sends
(sections 4 to 9): the signed configuration, AdvertiseKeys with its commitments and K_u tag, the
seed-chain reveals and the graph seed, the Harary ring order and neighbours, the Shamir shares (the
coefficient order of section 6.2) with their dealer signatures (active) inside their AES-GCM
ciphertexts, each recipient's complaints (from its own decryption of every ciphertext), the masked
inputs (encoding with ties to even, PRG words, signs, bit packing), the consistency round, the
unusable dealers and withheld lists, the unmask responses with their share proofs, and the exclusion
stage (the server's proofs against cheating dealers, the proof-less entries for unusable ones, and the
neighbours' pairwise seeds). Each recomputed message
must equal the vector's bytes, so a gap or an error in the spec fails here.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "protocols" / "vectors" / "secagg_v4.json").read_text())
CASES = VECTORS["vectors"]

# -- section 1 ------------------------------------------------------------------------------------
L = b"fedsecure/secagg/v4/"
SERVER = 0xFFFFFFFF
G = 3
P = 2**31 - 1
T_CONFIG, T_ADV, T_COMMITS, T_SHARES, T_FWD, T_MASKED = 1, 2, 3, 4, 5, 6
T_CREQ, T_CSIG, T_UREQ, T_URESP, T_REVEAL, T_REVEALS = 7, 8, 9, 10, 11, 12
T_EREQ, T_ERESP = 13, 14


def H(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def u8(x: int) -> bytes:
    return struct.pack("<B", x)


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def idlist(ids) -> bytes:
    ids = list(ids)
    assert ids == sorted(set(ids))
    return u32(len(ids)) + b"".join(u32(i) for i in ids)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def x25519(sk: bytes, pk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))


def x25519_pub(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


class Stream:
    """Section 10.3: AES-256-CTR keystream under H(label), zero initial counter block, read front to back."""

    def __init__(self, label: str) -> None:
        self._enc = Cipher(algorithms.AES(H(label.encode())), modes.CTR(bytes(16))).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._enc.update(bytes(n))


# -- section 8: header and trailers ------------------------------------------------------------------
def header(mtype: int, round_id: bytes, sender: int, recipient: int) -> bytes:
    return struct.pack("<BB16sII", 4, mtype, round_id, sender, recipient)


def sealed(hdr: bytes, body: bytes, key: bytes, nonce: bytes) -> bytes:
    return hdr + body + nonce + ChaCha20Poly1305(key).encrypt(nonce, b"", hdr + body)


def broadcast(hdr: bytes, body: bytes, sk: Ed25519PrivateKey) -> bytes:
    return hdr + body + sk.sign(L + b"broadcast" + hdr + body)


# -- sections 4 and 6 ---------------------------------------------------------------------------------
def encode(xs, scale: float, clip: float, bits: int) -> list[int]:
    out = []
    for x in xs:
        assert abs(x) <= clip  # inclusive: +-clip are valid inputs
        q = round(x * scale)  # Python's round: binary64 product, exact halves to even
        out.append(q % 2**bits)
    return out


def pack(r: list[int], bits: int) -> bytes:
    return sum(v << (i * bits) for i, v in enumerate(r)).to_bytes((len(r) * bits + 7) // 8, "little")


def prg(seed: bytes, d: int, bits: int) -> list[int]:
    w = 4 if bits <= 32 else 8
    ks = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(w * d))
    return [int.from_bytes(ks[i * w : (i + 1) * w], "little") % 2**bits for i in range(d)]


def limbs(secret: bytes) -> list[int]:
    s = int.from_bytes(secret, "little")
    return [(s >> (30 * i)) & (2**30 - 1) for i in range(9)]


def field_elements(rand: Stream, count: int) -> list[int]:
    vals = [v & 0x7FFFFFFF for v in struct.unpack(f"<{count}I", rand(4 * count))]
    while any(v == P for v in vals):
        bad = [i for i, v in enumerate(vals) if v == P]
        for i, v in zip(bad, struct.unpack(f"<{len(bad)}I", rand(4 * len(bad)))):
            vals[i] = v & 0x7FFFFFFF
    return vals


def shamir_shares(secrets: list[bytes], xs: list[int], t: int, rand: Stream) -> list[dict[int, bytes]]:
    """Section 6.2: coefficients secret by secret, degree by degree, limb by limb."""
    coeffs = field_elements(rand, len(secrets) * (t - 1) * 9) if t > 1 else []
    out = []
    for s, secret in enumerate(secrets):
        poly = [limbs(secret)] + [coeffs[s * (t - 1) * 9 + (e - 1) * 9 : s * (t - 1) * 9 + e * 9] for e in range(1, t)]
        out.append({x: b"".join(u32(sum(poly[e][l] * pow(x, e, P) for e in range(t)) % P) for l in range(9))
                    for x in xs})
    return out


def interpolate(points: dict[int, bytes]) -> bytes:
    xs = list(points)
    total = 0
    for l in range(9):
        acc = 0
        for i, xi in enumerate(xs):
            num = den = 1
            for xj in xs:
                if xj != xi:
                    num, den = num * xj % P, den * (xj - xi) % P
            acc += struct.unpack_from("<I", points[xi], 4 * l)[0] * num * pow(den, P - 2, P)
        total |= (acc % P) << (30 * l)
    return total.to_bytes(32, "little")


# -- section 7 ------------------------------------------------------------------------------------------
def neighbours(graph: int, view: list[int], k: int, seed: bytes) -> dict[int, list[int]]:
    if graph == 0 or k >= len(view) - 1:
        return {u: [v for v in view if v != u] for u in view}
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    key = {u: int.from_bytes(ecb.update(struct.pack("<Q", u) + bytes(8))[:8], "little") for u in view}
    ring = sorted(view, key=lambda u: (key[u], u))
    n, h = len(ring), k // 2
    return {u: sorted(ring[(i + o) % n] for o in list(range(-h, 0)) + list(range(1, h + 1))) for i, u in enumerate(ring)}


# -- section 5 ------------------------------------------------------------------------------------------
def chain_step(x: bytes) -> bytes:
    return H(L + b"seed-chain" + x)


def pair_key(sk: bytes, pk: bytes, round_id: bytes, u: int, v: int, purpose: bytes) -> bytes:
    a, b = min(u, v), max(u, v)
    return hkdf(x25519(sk, pk), round_id, L + purpose + u32(a) + u32(b))


class Client:
    """What client u sends, from its stream alone (section 10.3 order)."""

    def __init__(self, seed: str, u: int) -> None:
        self.u, self.rand = u, Stream(f"{seed}/client/{u}")
        self.enc_sk, self.mask_sk, self.b = self.rand(32), self.rand(32), self.rand(32)
        top = self.rand(32)
        chain = [top]
        for _ in range(G - 1):
            chain.append(chain_step(chain[-1]))
        self.chain = chain[::-1]  # r[0], ..., r[G-1]
        self.seed_commit = chain_step(self.chain[0])
        self.enc_pk, self.mask_pk = x25519_pub(self.enc_sk), x25519_pub(self.mask_sk)
        self.identity = Ed25519PrivateKey.from_private_bytes(Stream(f"{seed}/identity/{u}")(32))


def rederive(case: dict) -> None:
    inp, exp = case["input"], case["expected"]
    seed, stages, derived = inp["seed"], exp["stages"], exp["derived"]
    vectors = {int(u): x for u, x in inp["vectors"].items()}
    cfg = bytes.fromhex(exp["config_message"])

    # Section 8.1: the RoundConfig field by field.
    hdr, body, sig = cfg[:26], cfg[26:-64], cfg[-64:]
    version, mtype, round_id, sender, recipient = struct.unpack("<BB16sII", hdr)
    assert (version, mtype, sender, recipient) == (4, T_CONFIG, SERVER, SERVER)
    d, bits, stochastic, scale, clip, graph, k, t, active = struct.unpack_from("<IBBddBIIB", body, 0)
    server_pk, sign_pk = body[32:64], body[64:96]
    (n,) = struct.unpack_from("<I", body, 96)
    roster = list(struct.unpack_from(f"<{n}I", body, 100))
    assert len(body) == 100 + 4 * n and len(cfg) == 190 + 4 * n
    assert roster == sorted(vectors) and d == len(vectors[roster[0]]) and stochastic == 0
    assert (bits, clip, k, t, bool(active), graph) == (inp["bits"], inp["clip"], inp["k"], inp["t"], inp["active"],
                                                       0 if inp["graph"] == "complete" else 1)
    # Section 4: the largest power of two scale meeting the capacity rule, with clip * scale >= 1.
    assert math.log2(scale).is_integer() and n * math.ceil(clip * scale) <= 2 ** (bits - 1) - 1
    assert n * math.ceil(clip * scale * 2) > 2 ** (bits - 1) - 1 and scale == exp["scale"]
    signing = Ed25519PrivateKey.from_private_bytes(Stream(f"{seed}/server-signing")(32))
    assert signing.public_key().public_bytes_raw() == sign_pk
    Ed25519PublicKey.from_public_bytes(sign_pk).verify(sig, L + b"config" + hdr + body)
    srand = Stream(f"{seed}/server")
    assert srand(16) == round_id
    server_sk = srand(32)
    assert x25519_pub(server_sk) == server_pk
    cfg_hash = H(cfg)
    assert cfg_hash.hex() == derived["config_hash"]

    clients = {u: Client(seed, u) for u in roster}
    cheaters = {int(u): what for u, what in inp.get("cheaters", {}).items()}
    garbled = {int(u) for u in inp.get("garbled", [])}  # section 11.1: their ciphertexts' last byte XOR 1

    def replies(i: int) -> dict[int, bytes]:
        return {int(u): bytes.fromhex(h) for u, h in stages[i]["clients_to_server"].items()}

    def sent(i: int) -> dict[int, bytes]:
        return {int(u): bytes.fromhex(h) for u, h in stages[i]["server_to_clients"].items()}

    # advertise_keys
    assert stages[0]["stage"] == "advertise_keys" and sent(0) == {u: cfg for u in roster}
    keys_of, records = {}, {}
    for u, msg in replies(0).items():
        c = clients[u]
        commit = H(L + b"self-mask-commitment" + round_id + u32(u) + c.b)
        signature = bytes(64)
        if active:
            signature = c.identity.sign(L + b"advertise" + cfg_hash + u32(u) + c.enc_pk + c.mask_pk + commit
                                        + c.seed_commit)
        records[u] = c.enc_pk + c.mask_pk + commit + c.seed_commit + signature
        keys_of[u] = hkdf(x25519(c.enc_sk, server_pk), cfg_hash, L + b"client-server" + u32(u))
        assert msg == sealed(header(T_ADV, round_id, u, SERVER), records[u], keys_of[u], c.rand(12)), u
        c.commit, c.dealt_b, c.dealt_mask_sk = commit, c.b, c.mask_sk
        if cheaters.get(u) == "self_mask":  # section 11.2: 32 more bytes of its stream replace its secret
            c.dealt_b = c.rand(32)
        elif cheaters.get(u) == "mask_key":
            c.dealt_mask_sk = c.rand(32)
    assert {str(u): key.hex() for u, key in keys_of.items()} == derived["client_server_keys"]

    # seed_reveal, one entry per draw
    view, i, attempt = sorted(replies(0)), 1, 0
    while stages[i]["stage"] == "seed_reveal":
        body = u8(attempt) + idlist(view) + (b"".join(records[u] for u in view) if attempt == 0 else b"")
        want = broadcast(header(T_COMMITS, round_id, SERVER, SERVER), body, signing)
        assert sent(i) == {u: want for u in view}
        got = replies(i)
        for u, msg in got.items():
            c = clients[u]
            # the reveal opens the commitment after attempt + 1 chain steps
            x = c.chain[attempt]
            for _ in range(attempt + 1):
                x = chain_step(x)
            assert x == c.seed_commit
            assert msg == sealed(header(T_REVEAL, round_id, u, SERVER), u8(attempt) + c.chain[attempt], keys_of[u],
                                 c.rand(12))
        if sorted(got) == view:
            break
        view, i, attempt = sorted(got), i + 1, attempt + 1
    assert attempt == derived["graph_attempt"] and view == derived["graph_view"]
    reveals = b"".join(clients[u].chain[attempt] for u in view)
    graph_seed = H(L + b"graph-seed" + cfg_hash + u8(attempt) + u32(len(view)) + b"".join(u32(u) for u in view)
                   + reveals)
    assert graph_seed.hex() == derived["graph_seed"]
    nbrs = neighbours(graph, view, k, graph_seed)
    assert {str(u): nb for u, nb in nbrs.items()} == derived["neighbours"]

    # share_keys: SeedReveals, then each client's Shamir shares under AES-GCM
    i += 1
    assert stages[i]["stage"] == "share_keys"
    want = broadcast(header(T_REVEALS, round_id, SERVER, SERVER), u8(attempt) + u32(len(view)) + reveals, signing)
    assert sent(i) == {u: want for u in view}
    cts: dict[tuple[int, int], bytes] = {}
    shares: dict[tuple[int, int], tuple[bytes, bytes]] = {}  # (owner, holder) -> (mask-key share, seed share)
    dealer_sig: dict[tuple[int, int], bytes] = {}  # (owner, holder) -> the owner's signature (zeros unless active)
    for u, msg in replies(i).items():
        c = clients[u]
        s_sh, b_sh = shamir_shares([c.dealt_mask_sk, c.dealt_b], [v + 1 for v in nbrs[u]], t, c.rand)
        body = idlist(nbrs[u])
        for v in nbrs[u]:
            shares[u, v] = (s_sh[v + 1], b_sh[v + 1])
            dealer_sig[u, v] = bytes(64)
            if active:  # section 5: dealt-share signature over both share digests
                dealer_sig[u, v] = c.identity.sign(
                    L + b"dealt-share" + cfg_hash + u32(u) + u32(v) + c.commit + c.mask_pk
                    + H(L + b"self-mask-share" + b_sh[v + 1]) + H(L + b"mask-key-share" + s_sh[v + 1]))
            key = pair_key(c.enc_sk, clients[v].enc_pk, round_id, u, v, b"share-encryption")
            pt = u32(u) + u32(v) + s_sh[v + 1] + b_sh[v + 1] + dealer_sig[u, v]
            cts[u, v] = AESGCM(key).encrypt(u32(u) + bytes(8), pt, L + b"share" + round_id + u32(u) + u32(v))
            if u in garbled:
                cts[u, v] = cts[u, v][:-1] + bytes([cts[u, v][-1] ^ 1])
        body += b"".join(cts[u, v] for v in nbrs[u])
        assert msg == sealed(header(T_SHARES, round_id, u, SERVER), body, keys_of[u], c.rand(12)), u
    u2 = sorted(replies(i))

    # masked_input: ForwardedShares, then the masked vectors
    i += 1
    assert stages[i]["stage"] == "masked_input"
    fwd = {v: [u for u in nbrs[v] if u in u2] for v in u2}
    assert sent(i) == {v: sealed(header(T_FWD, round_id, SERVER, v), idlist(fwd[v]) + b"".join(cts[u, v] for u in fwd[v]),
                                 keys_of[v], srand(12)) for v in u2}
    edges = {f"{u}-{v}": None for u in view for v in nbrs[u] if u < v}
    seeds = {e: pair_key(clients[int(e.split("-")[0])].mask_sk, clients[int(e.split("-")[1])].mask_pk, round_id,
                         int(e.split("-")[0]), int(e.split("-")[1]), b"pairwise-mask") for e in edges}
    assert {e: s.hex() for e, s in seeds.items()} == derived["pairwise_mask_seeds"]
    assert {e: prg(s, min(4, d), bits) for e, s in seeds.items()} == derived["pairwise_mask_words_head"]
    # section 9 step 5: the complaints, from the recipient's own decryption and checks of each ciphertext
    complaints: dict[int, list[int]] = {}
    for v in u2:
        complaints[v] = []
        for u in fwd[v]:
            key = pair_key(clients[v].enc_sk, clients[u].enc_pk, round_id, u, v, b"share-encryption")
            try:
                pt = AESGCM(key).decrypt(u32(u) + bytes(8), cts[u, v], L + b"share" + round_id + u32(u) + u32(v))
                assert pt[:8] == u32(u) + u32(v)
                if active:
                    Ed25519PublicKey.from_public_bytes(clients[u].identity.public_key().public_bytes_raw()).verify(
                        pt[80:], L + b"dealt-share" + cfg_hash + u32(u) + u32(v) + clients[u].commit
                        + clients[u].mask_pk + H(L + b"self-mask-share" + pt[44:80]) + H(L + b"mask-key-share" + pt[8:44]))
                else:
                    assert pt[80:] == bytes(64)
            except Exception:  # noqa: BLE001 -- any failure: the share is unusable, its dealer is a complaint
                complaints[v].append(u)
    encoded = {}
    for u, msg in replies(i).items():
        c = clients[u]
        encoded[u] = encode(vectors[u], scale, clip, bits)
        assert str(u) in derived["encoded"] and encoded[u] == derived["encoded"][str(u)]
        y = [a + b for a, b in zip(encoded[u], prg(c.dealt_b, d, bits))]
        for v in fwd[u]:
            mask = prg(pair_key(c.dealt_mask_sk, clients[v].mask_pk, round_id, u, v, b"pairwise-mask"), d, bits)
            y = [a + (m if u < v else -m) for a, m in zip(y, mask)]
        packed = pack([a % 2**bits for a in y], bits)
        pad = 8 * len(packed) - d * bits
        assert not pad or packed[-1] >> (8 - pad) == 0
        body = idlist(complaints[u]) + packed
        assert msg == sealed(header(T_MASKED, round_id, u, SERVER), body, keys_of[u], c.rand(12)), u
    u3 = sorted(replies(i))
    surv = {u: [v for v in fwd[u] if v in u3] for u in u3}
    # unusable dealers: needed (in U3, or dropped with a neighbour in U3) and usable by fewer than t of them
    unusable = set()
    for D in u2:
        nb = [j for j in fwd[D] if j in u3]
        if (D in u3 or nb) and sum(D not in complaints[j] for j in nb) < t:
            unusable.add(D)
    withheld = {u: [v for v in fwd[u] if v in unusable] for u in u3}
    assert unusable == garbled & set(u2)

    # consistency_check (active)
    sigs: dict[int, bytes] = {}
    asked = u3
    if active:
        i += 1
        assert stages[i]["stage"] == "consistency_check"
        body = idlist(u3)
        assert sent(i) == {u: sealed(header(T_CREQ, round_id, SERVER, u), body, keys_of[u], srand(12)) for u in u3}
        payload = L + b"consistency" + cfg_hash + H(b"".join(u32(u) for u in u3))  # no count prefix
        for u, msg in replies(i).items():
            sigs[u] = clients[u].identity.sign(payload)
            assert msg == sealed(header(T_CSIG, round_id, u, SERVER), sigs[u], keys_of[u], clients[u].rand(12))
        asked = sorted(sigs)

    # unmasking: requests to the asked clients, responses with one share per peer (and its proof if active)
    i += 1
    assert stages[i]["stage"] == "unmasking"
    want = {}
    for u in asked:
        records_ = [(v, sigs[v]) for v in fwd[u] if v in sigs]
        body = idlist(surv[u]) + idlist(withheld[u]) + u32(len(records_)) + b"".join(u32(v) + s for v, s in records_)
        want[u] = sealed(header(T_UREQ, round_id, SERVER, u), body, keys_of[u], srand(12))
    assert sent(i) == want
    b_shares: dict[int, dict[int, bytes]] = {}
    s_shares: dict[int, dict[int, bytes]] = {}
    for u, msg in replies(i).items():
        held = [v for v in fwd[u] if v not in complaints[u] and v not in withheld[u]]
        b_ids = [v for v in surv[u] if v in held]
        s_ids = [v for v in held if v not in surv[u]]
        b_proofs = s_proofs = b""
        if active:
            b_proofs = b"".join(H(L + b"mask-key-share" + shares[v, u][0]) + dealer_sig[v, u] for v in b_ids)
            s_proofs = b"".join(H(L + b"self-mask-share" + shares[v, u][1]) + dealer_sig[v, u] for v in s_ids)
        body = (idlist(b_ids) + b"".join(shares[v, u][1] for v in b_ids) + b_proofs
                + idlist(s_ids) + b"".join(shares[v, u][0] for v in s_ids) + s_proofs)
        assert msg == sealed(header(T_URESP, round_id, u, SERVER), body, keys_of[u], clients[u].rand(12)), u
        for v in b_ids:
            b_shares.setdefault(v, {})[u] = shares[v, u][1]
        for v in s_ids:
            s_shares.setdefault(v, {})[u] = shares[v, u][0]

    # t shares (the first t revealers by id) rebuild each public value, or prove their dealer cheated
    accused: dict[int, tuple[int, list[int]]] = {}  # dealer -> (kind, revealers)
    for u in u3:
        if u in unusable:  # no share of it was asked for
            assert u not in b_shares
            continue
        ws = sorted(b_shares[u])[:t]
        if H(L + b"self-mask-commitment" + round_id + u32(u) + interpolate({w + 1: b_shares[u][w] for w in ws})) \
                != clients[u].commit:
            accused[u] = (0, ws)
        else:
            assert clients[u].b == bytes.fromhex(derived["self_mask_seeds"][str(u)])
    for v in u2:
        if v not in u3 and v not in unusable and any(w in u3 for w in fwd[v]):
            ws = sorted(s_shares[v])[:t]
            if x25519_pub(interpolate({w + 1: s_shares[v][w] for w in ws})) != clients[v].mask_pk:
                accused[v] = (1, ws)
    assert set(accused) == set(cheaters) and sorted(set(u3) - set(accused) - unusable) == exp["included"]

    # exclusion (after an accusation, or with an unusable dealer): the proofs (kind 2 and no entries for an
    # unusable dealer) to each neighbour in the sum, its seeds back
    out_of_sum = set(accused) | unusable
    if out_of_sum:
        i += 1
        assert stages[i]["stage"] == "exclusion"
        want, asked_ex = {}, {}
        for j in u3:
            ds = [D for D in fwd[j] if D in out_of_sum and j not in out_of_sum]
            if not ds:
                continue
            asked_ex[j] = ds
            body = u32(len(ds))
            for D in ds:
                if D in unusable:
                    body += u32(D) + u8(2) + u32(0)
                    continue
                kind, ws = accused[D]
                body += u32(D) + u8(kind) + u32(len(ws))
                for w in ws:
                    s_share, b_share = shares[D, w]
                    share, other = (b_share, H(L + b"mask-key-share" + s_share)) if kind == 0 else \
                        (s_share, H(L + b"self-mask-share" + b_share))
                    body += u32(w) + share + other + dealer_sig[D, w]
            want[j] = sealed(header(T_EREQ, round_id, SERVER, j), body, keys_of[j], srand(12))
        assert sent(i) == want
        got = replies(i)
        assert sorted(got) == sorted(asked_ex)
        for j, msg in got.items():
            seeds_j = b"".join(pair_key(clients[j].mask_sk, clients[D].mask_pk, round_id, j, D, b"pairwise-mask")
                               for D in asked_ex[j])
            assert msg == sealed(header(T_ERESP, round_id, j, SERVER), idlist(asked_ex[j]) + seeds_j, keys_of[j],
                                 clients[j].rand(12))
    assert i == len(stages) - 1

    # output: the ring sum is the sum of the encodings of the included clients
    ring_sum = [sum(encoded[u][j] for u in exp["included"]) % 2**bits for j in range(d)]
    assert ring_sum == exp["ring_sum"]
    half = 2 ** (bits - 1)
    assert exp["sum"] == [(s - 2**bits if s >= half else s) / scale for s in ring_sum]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_transcript_rederived_from_the_spec_alone(case):
    rederive(case)


def v3_messages(seed: str) -> tuple[bytes, bytes]:
    """The v3 RoundConfig and client 0's v3 AdvertiseKeys of section 11.3: the v4 layout with version 3 and
    labels fedsecure/secagg/v3/."""
    L3, roster = b"fedsecure/secagg/v3/", [0, 1, 2, 3]
    srand = Stream(f"{seed}/v3-server")
    round_id, server_sk = srand(16), srand(32)
    signing = Ed25519PrivateKey.from_private_bytes(srand(32))
    body = (struct.pack("<IBBddBIIB", 4, 32, 0, 2.0**20, 1.0, 0, 3, 2, 0) + x25519_pub(server_sk)
            + signing.public_key().public_bytes_raw() + idlist(roster))
    msg = struct.pack("<BB16sII", 3, T_CONFIG, round_id, SERVER, SERVER) + body
    config = msg + signing.sign(L3 + b"config" + msg)
    crand = Stream(f"{seed}/v3-client/0")
    enc_sk, mask_sk, b, x = crand(32), crand(32), crand(32), crand(32)
    for _ in range(3):
        x = H(L3 + b"seed-chain" + x)
    commit = H(L3 + b"self-mask-commitment" + round_id + u32(0) + b)
    k_u = hkdf(x25519(enc_sk, x25519_pub(server_sk)), H(config), L3 + b"client-server" + u32(0))
    adv = sealed(struct.pack("<BB16sII", 3, T_ADV, round_id, 0, SERVER),
                 x25519_pub(enc_sk) + x25519_pub(mask_sk) + commit + x + bytes(64), k_u, crand(12))
    return config, adv


def test_refusals_are_genuine_version_3_messages():
    for case in VECTORS["refusals"]:
        config, adv = v3_messages(case["input"]["seed"])
        assert (len(config), len(adv)) == (206, 246)
        msg = bytes.fromhex(case["expected"]["message"])
        assert msg == (config if case["input"]["receiver"] == "client" else adv)
        assert case["expected"]["error"] == "MessageRejected"
        assert "unsupported version 3 (this implementation speaks version 4)" in case["expected"]["reason"]


def test_numpy_packing_agrees_with_the_integer_definition():
    """Section 4: the bit-string view (bit j of the stream is bit j mod 8 of byte j // 8) is the integer view."""
    r, bits = [8191, 0, 4097, 1, 5000], 13
    stream = np.array([(v >> b) & 1 for v in r for b in range(bits)], dtype=np.uint8)
    assert np.packbits(stream, bitorder="little").tobytes() == pack(r, bits)
