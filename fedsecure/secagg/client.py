"""The client of one secure-aggregation round, as a sans-IO state machine.

``SecAggClient(client_id, vector).receive(message_bytes)`` consumes one message
from the server and returns the messages to send back (bytes). Stages, in
order (``stage`` tells which message is awaited)::

    config -> neighbours -> shares -> [consistency] -> unmask -> done

A message that does not parse, fails its tag, comes from the wrong party or
round, or arrives out of stage raises :class:`MessageRejected` and changes
nothing, so the right message can still follow. The double-masking rule is
structural: the client answers exactly one unmask request, and for each peer
it reveals the share of the self-mask seed (peer survived) *or* of the
masking key (peer dropped), never both; in active mode the survivor list it
acts on is the one it signed, endorsed by at least ``t`` neighbours.

Masked input of client ``u`` (mod 2^bits), with ``U2_u`` the neighbours whose
shares reached it::

    y_u = encode(x_u) + noise_u + PRG(b_u) + sum_{v in U2_u} sign(u, v) PRG(s_uv),
    sign(u, v) = +1 if u < v else -1.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import keys, messages as m, shamir
from .encoding import FixedPointEncoding, IntegerNoise, pack
from .errors import ConfigurationError, MessageRejected, StageError, TooFewSurvivors
from .graph import build_graph
from .prg import MaskExpander, apply_masks

STAGES = ("config", "neighbours", "shares", "consistency", "unmask", "done")


def _x25519_from(randbytes: Callable[[int], bytes]) -> X25519PrivateKey:
    # Equivalent to X25519PrivateKey.generate() (RFC 7748 clamps any 32 bytes) but lets the
    # test-vector path inject its randomness explicitly.
    return X25519PrivateKey.from_private_bytes(randbytes(32))


def _sorted_contains(sorted_ids: np.ndarray, ids: np.ndarray) -> bool:
    """Whether every id is in the strictly increasing ``sorted_ids`` (O(len(ids) log n), no copy of it)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return True
    if sorted_ids.size == 0:
        return False
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return bool(np.all(sorted_ids[pos] == ids))


class SecAggClient:
    """One client's side of a round (see module docstring)."""

    def __init__(
        self,
        client_id: int,
        vector: np.ndarray,
        *,
        identity_key: Ed25519PrivateKey | None = None,
        identity_keys: Mapping[int, Ed25519PublicKey] | None = None,
        noise: IntegerNoise | None = None,
        _unsafe_randbytes_for_test_vectors: Callable[[int], bytes] | None = None,
    ) -> None:
        if not (0 <= int(client_id) <= m.MAX_CLIENT_ID):
            raise ConfigurationError(f"client id must be in [0, {m.MAX_CLIENT_ID}], got {client_id}")
        self.id = int(client_id)
        # No float64 copy (that alone cost ~a tenth of a 100k-coordinate round): the encoder reads
        # float32 or float64 as given, when the round configuration arrives.
        self._vector = np.asarray(vector)
        if self._vector.dtype.kind != "f":
            self._vector = self._vector.astype(np.float64)
        if self._vector.ndim != 1:
            raise ConfigurationError(f"input must be a 1-D vector, got shape {self._vector.shape}", sender=self.id)
        self._identity_key = identity_key
        self._identity_keys = dict(identity_keys or {})
        self._noise = noise
        self._rand = _unsafe_randbytes_for_test_vectors or os.urandom
        self.stage = "config"
        self.revealed: dict[int, str] = {}  # peer -> "self_mask" | "mask_key": what this client disclosed

    # -- plumbing ----------------------------------------------------------
    def _reject(self, reason: str) -> MessageRejected:
        return MessageRejected(f"client {self.id} rejects a message: {reason}", sender="server")

    def _open(self, data: bytes, expected: type) -> bytes:
        try:
            header, body = m.open_sealed(bytes(data), self._key)
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        if header.round_id != self._round_id:
            raise self._reject("message belongs to another round")
        if header.sender != m.SERVER or header.recipient != self.id:
            raise self._reject(f"message from {header.sender} to {header.recipient}, expected server to {self.id}")
        if header.type != expected.TYPE:
            name = m.MESSAGE_TYPES[header.type].__name__
            raise StageError(f"client {self.id} in stage {self.stage!r} cannot accept {name}", sender="server")
        return body

    def _seal(self, msg) -> bytes:
        return m.seal(m.Header(msg.TYPE, self._round_id, self.id, m.SERVER), msg.body(), self._key,
                      self._rand(m.NONCE_BYTES))

    # -- the state machine ---------------------------------------------------
    def receive(self, data: bytes) -> list[bytes]:
        """Consume one server message; return the messages to send to the server."""
        handler = {
            "config": self._on_config,
            "neighbours": self._on_neighbours,
            "shares": self._on_shares,
            "consistency": self._on_consistency,
            "unmask": self._on_unmask,
        }.get(self.stage)
        if handler is None:
            raise StageError(f"client {self.id} has finished the round and accepts no message", sender="server")
        return handler(bytes(data))

    def _on_config(self, data: bytes) -> list[bytes]:
        try:
            header = m.parse_header(data)
            if header.type != m.RoundConfig.TYPE:
                raise StageError(f"client {self.id} awaits the round configuration, got type {header.type}", sender="server")
            if header.sender != m.SERVER:
                raise m.ParseError("configuration must come from the server")
            cfg = m.RoundConfig.parse(data[m.HEADER.size :])
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        if not _sorted_contains(cfg.roster, np.array([self.id])):
            raise self._reject(f"client {self.id} is not on the round's roster")
        if cfg.vector_length != self._vector.size:
            raise ConfigurationError(
                f"round expects vectors of length {cfg.vector_length}, this client holds {self._vector.size}", sender=self.id
            )
        if cfg.active and (self._identity_key is None or not self._identity_keys):
            raise ConfigurationError("an active-security round needs this client's identity key and the peers' keys", sender=self.id)
        enc = FixedPointEncoding(bits=cfg.bits, scale=cfg.scale, clip=cfg.clip, stochastic=cfg.stochastic)
        enc.check_capacity(cfg.roster.size, self._noise)  # never help build a sum that can wrap
        noise = None if self._noise is None else self._noise.sample(self._vector.size, enc.scale)
        try:
            self._encoded = enc.encode(self._vector, noise)
        except ValueError as e:
            raise ConfigurationError(str(e), sender=self.id) from None
        del self._vector  # only the encoding is needed from here on
        self._config, self._encoding, self._round_id = cfg, enc, header.round_id
        self._cfg_hash = keys.config_hash(data)
        self._enc_sk = _x25519_from(self._rand)
        self._mask_sk = _x25519_from(self._rand)
        self._self_seed = self._rand(32)
        enc_pk = self._enc_sk.public_key().public_bytes_raw()
        mask_pk = self._mask_sk.public_key().public_bytes_raw()
        commit = keys.commitment(self._round_id, self.id, self._self_seed)
        shared = self._enc_sk.exchange(X25519PublicKey.from_public_bytes(cfg.server_pk))
        self._key = keys.client_server_key(shared, self._cfg_hash, self.id)
        sig = m.NO_SIGNATURE
        if cfg.active:
            sig = self._identity_key.sign(keys.advertise_payload(self._cfg_hash, self.id, enc_pk, mask_pk, commit))
        self.stage = "neighbours"
        return [self._seal(m.AdvertiseKeys(enc_pk, mask_pk, commit, sig))]

    def _on_neighbours(self, data: bytes) -> list[bytes]:
        try:
            msg = m.Neighbours.parse(self._open(data, m.Neighbours))
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        cfg = self._config
        ids = msg.ids
        if self.id in ids:
            raise self._reject("neighbour list contains the client itself")
        if ids.size > cfg.k:
            raise self._reject(f"{ids.size} neighbours exceed k={cfg.k}")
        if ids.size < cfg.t:
            raise TooFewSurvivors(f"client {self.id} got {ids.size} neighbours < t={cfg.t}", sender=self.id)
        if not _sorted_contains(cfg.roster, ids):
            raise self._reject("neighbour list names clients outside the roster")
        if cfg.active:
            # An active server must not pick our neighbours: they follow from the public seed.
            allowed = build_graph(cfg.graph, cfg.roster.tolist(), cfg.k, cfg.graph_seed)[self.id]
            if not np.isin(ids, allowed).all():
                raise self._reject("neighbour list does not match the round's public graph")
            for v, a in zip(ids.tolist(), msg.keys):
                pk = self._identity_keys.get(v)
                payload = keys.advertise_payload(self._cfg_hash, v, a.enc_pk, a.mask_pk, a.commitment)
                try:
                    if pk is None:
                        raise InvalidSignature
                    pk.verify(a.signature, payload)
                except InvalidSignature:
                    raise self._reject(f"advertised keys of client {v} carry no valid identity signature") from None
        elif any(a.signature != m.NO_SIGNATURE for a in msg.keys):
            raise self._reject("signatures present in a semi-honest round")
        try:
            peers = {v: (X25519PublicKey.from_public_bytes(a.enc_pk), X25519PublicKey.from_public_bytes(a.mask_pk))
                     for v, a in zip(ids.tolist(), msg.keys)}
        except ValueError as e:
            raise self._reject(f"invalid public key: {e}") from None
        # Shares at x = id + 1 for every neighbour, both secrets in one vectorised Horner pass each.
        xs = ids + 1
        s_sh, b_sh = shamir.split_many([self._mask_sk.private_bytes_raw(), self._self_seed], xs, cfg.t, self._rand)
        # Plaintexts for all neighbours at once: u32(u) | u32(v) | share of mask key | share of seed.
        pts = np.empty((ids.size, 2 + 2 * shamir.LIMBS), dtype="<u4")
        pts[:, 0], pts[:, 1] = self.id, ids
        pts[:, 2 : 2 + shamir.LIMBS], pts[:, 2 + shamir.LIMBS :] = s_sh, b_sh
        rows = pts.tobytes()
        width = pts.shape[1] * 4
        nonce = keys.share_nonce(self.id)
        self._share_keys: dict[int, bytes] = {}
        cts = []
        for j, v in enumerate(ids.tolist()):
            ck = keys.pair_key(self._enc_sk.exchange(peers[v][0]), self._round_id, self.id, v, keys.ENC)
            self._share_keys[v] = ck
            pt = rows[j * width : (j + 1) * width]
            cts.append(AESGCM(ck).encrypt(nonce, pt, keys.share_ad(self._round_id, self.id, v)))
        self._peers = peers
        self._neighbours = ids
        self._neighbour_set = set(ids.tolist())
        self.stage = "shares"
        return [self._seal(m.ShareKeys(ids, b"".join(cts)))]

    def _on_shares(self, data: bytes) -> list[bytes]:
        try:
            msg = m.ForwardedShares.parse(self._open(data, m.ForwardedShares))
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        cfg = self._config
        if not set(msg.ids.tolist()) <= self._neighbour_set:
            raise self._reject("forwarded shares come from clients that are not neighbours")
        if msg.ids.size < cfg.t:
            raise TooFewSurvivors(f"client {self.id} received shares from {msg.ids.size} neighbours < t={cfg.t}", sender=self.id)
        held: dict[int, tuple[bytes, bytes]] = {}
        self.undecryptable: list[int] = []
        for j, v in enumerate(msg.ids.tolist()):
            try:
                pt = AESGCM(self._share_keys[v]).decrypt(
                    keys.share_nonce(v), msg.ciphertext(j), keys.share_ad(self._round_id, v, self.id)
                )
                if pt[:8] != struct.pack("<II", v, self.id):
                    raise InvalidTag
                # Share values are range-checked by the server, which is the party that interpolates.
                held[v] = (pt[8 : 8 + shamir.SHARE_BYTES], pt[8 + shamir.SHARE_BYTES :])
            except InvalidTag:
                # v's shares are unusable, but v is in U2 and masks with us, so we still mask with v.
                held.pop(v, None)
                self.undecryptable.append(v)
        self._held, self._u2 = held, msg.ids
        # y = x + PRG(b) + sum_v sign(u, v) PRG(s_uv)   (word ring, reduced mod 2^bits once)
        plus, minus = [self._self_seed], []
        for v in msg.ids.tolist():
            seed = keys.pair_key(self._mask_sk.exchange(self._peers[v][1]), self._round_id, self.id, v, keys.MASK)
            (plus if self.id < v else minus).append(seed)
        y = apply_masks(self._encoded, plus, minus, MaskExpander(cfg.vector_length, cfg.bits))
        del self._encoded
        self.stage = "consistency" if cfg.active else "unmask"
        return [self._seal(m.MaskedInput(pack(y, cfg.bits)))]

    def _on_consistency(self, data: bytes) -> list[bytes]:
        try:
            msg = m.ConsistencyRequest.parse(self._open(data, m.ConsistencyRequest))
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        if not _sorted_contains(msg.survivors, np.array([self.id])) or not _sorted_contains(self._config.roster, msg.survivors):
            raise self._reject("survivor list must contain this client and only roster clients")
        if np.intersect1d(msg.survivors, self._u2).size < self._config.t:
            raise TooFewSurvivors(f"client {self.id}: fewer than t={self._config.t} neighbours survived", sender=self.id)
        self._signed_survivors = msg.survivors
        sig = self._identity_key.sign(keys.consistency_payload(self._cfg_hash, msg.survivors))
        self.stage = "unmask"
        return [self._seal(m.ConsistencySignature(sig))]

    def _on_unmask(self, data: bytes) -> list[bytes]:
        try:
            msg = m.UnmaskRequest.parse(self._open(data, m.UnmaskRequest))
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        cfg = self._config
        survivors = msg.survivors
        if not set(survivors.tolist()) <= set(self._u2.tolist()):
            raise self._reject("survivor list names peers that never sent this client shares")
        if cfg.active:
            expected = np.intersect1d(self._signed_survivors, self._u2)
            if not np.array_equal(survivors, expected):
                raise self._reject("unmask request disagrees with the survivor list this client signed")
            payload = keys.consistency_payload(self._cfg_hash, self._signed_survivors)
            good = 0
            for v, sig in msg.signatures:
                pk = self._identity_keys.get(v)
                if v == self.id or v not in self._u2 or pk is None:
                    continue
                try:
                    pk.verify(sig, payload)
                    good += 1
                except InvalidSignature:
                    raise self._reject(f"consistency signature of client {v} does not verify") from None
            if good < cfg.t:
                raise TooFewSurvivors(
                    f"client {self.id}: only {good} neighbours endorsed the survivor list, need t={cfg.t}", sender=self.id
                )
        elif msg.signatures:
            raise self._reject("signatures present in a semi-honest round")
        if survivors.size < cfg.t:
            raise TooFewSurvivors(
                f"client {self.id}: {survivors.size} surviving neighbours < t={cfg.t}; refusing to unmask", sender=self.id
            )
        surv = set(survivors.tolist())
        b_ids = [v for v in survivors.tolist() if v in self._held]
        s_ids = [v for v in self._u2.tolist() if v not in surv and v in self._held]
        for v in b_ids:
            self.revealed[v] = "self_mask"
        for v in s_ids:
            self.revealed[v] = "mask_key"
        self.stage = "done"
        return [self._seal(m.UnmaskResponse(
            np.array(b_ids, dtype=np.int64), b"".join(self._held[v][1] for v in b_ids),
            np.array(s_ids, dtype=np.int64), b"".join(self._held[v][0] for v in s_ids),
        ))]
