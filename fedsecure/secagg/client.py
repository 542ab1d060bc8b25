"""The client of one secure-aggregation round, as a sans-IO state machine.

``SecAggClient(client_id, vector, policy=...).receive(message_bytes)`` consumes
one message from the server and returns the messages to send back (bytes).
Stages, in order (``stage`` tells which message is awaited)::

    config -> commitments -> reveals -> shares -> [consistency] -> unmask -> [exclusion] -> done

(``reveals`` also accepts the server's next seed attempt, up to
``GRAPH_DRAWS`` in all.) The client enforces its own
:class:`~fedsecure.secagg.policy.ClientPolicy` on every public fact of the
round: a configuration that is unsigned by the pinned server key, weaker than
the policy (threat model, k, t, sizes, ring) or a view too small is refused
with :class:`PolicyViolation`. The SecAgg+ graph is drawn from a seed that
contains this client's own fresh reveal, committed before it saw any other
client's, so no server can steer its neighbourhood.

Any message that does not parse, fails its tag or signature, comes from the
wrong party or round, arrives out of stage, or carries well-formed but
inadmissible content raises an error of the :class:`SecAggError` family
(never a bare ``ValueError``) and changes nothing, so the right message can
still follow. The double-masking rule is
structural: the client answers exactly one unmask request, and for each peer
it reveals the share of the self-mask seed (peer survived) *or* of the
masking key (peer dropped), never both; in active mode the survivor list it
acts on is the one it signed, endorsed by at least ``t`` neighbours.

More generally, for each peer ``D`` the client reveals at most one of {a
share of ``D``'s self-mask seed, a share of ``D``'s masking key, its pairwise
seed with ``D``} (``revealed`` records which), except the pairwise seed with
a peer proven, by a proof it checks itself, to have dealt inconsistent
shares. Its MaskedInput carries its *complaints* (the dealers whose shares it
could not use); a dealer the server finds unusable (fewer than ``t`` usable
holders) is *withheld* in the unmask request (no share of it is revealed) and
at ``exclusion`` the client reveals its pairwise seed with it, without proof,
only under that rule (``PolicyViolation`` otherwise). Semi-honest clients
wait in ``exclusion`` only when the unmask request withheld someone; active
ones always (an accusation may follow).

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
from .errors import ConfigurationError, MessageRejected, PolicyViolation, SecAggError, StageError, TooFewSurvivors
from .graph import neighbours_of
from .params import GRAPH_DRAWS
from .policy import ClientPolicy
from .prg import MaskExpander, apply_masks

STAGES = ("config", "commitments", "reveals", "shares", "consistency", "unmask", "exclusion", "done")


def _x25519_from(randbytes: Callable[[int], bytes]) -> X25519PrivateKey:
    # Equivalent to X25519PrivateKey.generate() (RFC 7748 clamps any 32 bytes) but lets the
    # test-vector path inject its randomness explicitly.
    return X25519PrivateKey.from_private_bytes(randbytes(32))


class SecAggClient:
    """One client's side of a round (see module docstring)."""

    def __init__(
        self,
        client_id: int,
        vector: np.ndarray | None,
        *,
        policy: ClientPolicy | None = None,
        identity_key: Ed25519PrivateKey | None = None,
        identity_keys: Mapping[int, Ed25519PublicKey] | None = None,
        noise: IntegerNoise | None = None,
        _unsafe_randbytes_for_test_vectors: Callable[[int], bytes] | None = None,
    ) -> None:
        if not (0 <= int(client_id) <= m.MAX_CLIENT_ID):
            raise ConfigurationError(f"client id must be in [0, {m.MAX_CLIENT_ID}], got {client_id}")
        self.id = int(client_id)
        # No float64 copy (that alone cost ~a tenth of a 100k-coordinate round): the encoder reads
        # float32 or float64 as given, when the round configuration arrives. ``vector=None``: the input
        # comes later, through :meth:`set_input`, before the forwarded shares.
        self._vector = None if vector is None else self._as_input(vector)
        self._encoded: np.ndarray | None = None
        self.policy = policy if policy is not None else ClientPolicy()
        if not isinstance(self.policy, ClientPolicy):
            raise ConfigurationError("policy must be a ClientPolicy")
        if self.policy.active and (identity_key is None or not identity_keys):
            raise ConfigurationError("an active-security policy needs this client's identity key and the peers' keys",
                                     sender=self.id)
        self._identity_key = identity_key
        self._identity_keys = dict(identity_keys or {})
        self._known = np.array(sorted(self._identity_keys), dtype=np.int64)
        self._noise = noise
        self._rand = _unsafe_randbytes_for_test_vectors or os.urandom
        self.stage = "config"
        # peer -> "self_mask" | "mask_key" (| "+pairwise_seed" after a verified exclusion proof): what it disclosed
        self.revealed: dict[int, str] = {}
        self.round_bounds = None  # the SecAggParams this client computed for the round's view

    def _as_input(self, vector) -> np.ndarray:
        x = np.asarray(vector)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        if x.ndim != 1:
            raise ConfigurationError(f"input must be a 1-D vector, got shape {x.shape}", sender=self.id)
        return x

    def _encode(self, enc: FixedPointEncoding, x: np.ndarray) -> np.ndarray:
        noise = None if self._noise is None else self._noise.sample(x.size, enc.scale)
        return enc.encode(x, noise)

    def set_input(self, vector: np.ndarray) -> None:
        """Give the input of a client built with ``vector=None`` (as Flower's SecAgg+ does, an app may train
        after the keys are exchanged): any time after the round configuration and before the forwarded
        shares arrive (stages ``commitments``, ``reveals``, ``shares``), once. Its length must be the
        round's ``vector_length``. Raises :class:`ConfigurationError` (and changes nothing) otherwise."""
        if self.stage not in ("commitments", "reveals", "shares"):
            raise StageError(f"client {self.id} takes its input between the configuration and the forwarded shares, "
                             f"not in stage {self.stage!r}", sender=self.id)
        if self._encoded is not None:
            raise ConfigurationError(f"client {self.id} already holds its input for this round", sender=self.id)
        x = self._as_input(vector)
        if x.size != self._config.vector_length:
            raise ConfigurationError(f"round expects vectors of length {self._config.vector_length}, client "
                                     f"{self.id} was given {x.size}", sender=self.id)
        try:
            self._encoded = self._encode(self._encoding, x)
        except (ConfigurationError, ValueError, OverflowError) as e:
            raise ConfigurationError(f"client {self.id} cannot encode its input: {e}", sender=self.id) from None

    # -- plumbing ----------------------------------------------------------
    def _reject(self, reason: str) -> MessageRejected:
        return MessageRejected(f"client {self.id} rejects a message: {reason}", sender="server")

    def _violation(self, reason: str) -> PolicyViolation:
        return PolicyViolation(f"client {self.id} refuses the round: {reason}", sender="server")

    def _check_policy(self, cfg: m.RoundConfig, view: int | None = None):
        """The policy's bounds for the round (or the view); a refusal names this client and the server."""
        try:
            return self.policy.check_round(cfg.roster.size, cfg.graph, cfg.k, cfg.t, cfg.active, view=view)
        except PolicyViolation as e:
            raise self._violation(e.reason) from None

    def _check_header(self, header: m.Header, expected: type, *, broadcast: bool) -> None:
        if header.round_id != self._round_id:
            raise self._reject("message belongs to another round")
        recipient = m.SERVER if broadcast else self.id
        if header.sender != m.SERVER or header.recipient != recipient:
            raise self._reject(f"message from {header.sender} to {header.recipient}, expected server to "
                               f"{'all' if broadcast else self.id}")
        if header.type != expected.TYPE:
            name = m.MESSAGE_TYPES[header.type].__name__
            raise StageError(f"client {self.id} in stage {self.stage!r} cannot accept {name}", sender="server")

    def _open(self, data: bytes, expected: type) -> bytes:
        try:
            header, body = m.open_sealed(data, self._key)
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        self._check_header(header, expected, broadcast=False)
        return body

    def _open_broadcast(self, data: bytes, *expected: type) -> tuple[type, memoryview]:
        try:
            header, body = m.open_broadcast(data, self._server_key)
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        kind = m.MESSAGE_TYPES[header.type]
        self._check_header(header, kind if kind in expected else expected[0], broadcast=True)
        return kind, body

    def _seal(self, msg) -> bytes:
        return m.seal(m.Header(msg.TYPE, self._round_id, self.id, m.SERVER), msg.body(), self._key,
                      self._rand(m.NONCE_BYTES))

    # -- the state machine ---------------------------------------------------
    def receive(self, data: bytes) -> list[bytes]:
        """Consume one server message; return the messages to send to the server.

        Raises an error of the :class:`SecAggError` family (and changes nothing) for any message it
        does not accept, whatever its bytes.
        """
        handler = {
            "config": self._on_config,
            "commitments": self._on_commitments,
            "reveals": self._on_reveals,
            "shares": self._on_shares,
            "consistency": self._on_consistency,
            "unmask": self._on_unmask,
            "exclusion": self._on_exclusion,
        }.get(self.stage)
        if handler is None:
            raise StageError(f"client {self.id} has finished the round and accepts no message", sender="server")
        try:
            return handler(bytes(data))
        except SecAggError:
            raise
        except m.ParseError as e:
            raise self._reject(str(e)) from None
        except Exception as e:  # noqa: BLE001 -- whatever the bytes, an honest client answers in the protocol's errors
            raise self._reject(f"inadmissible message ({type(e).__name__}: {e})") from None

    def _on_config(self, data: bytes) -> list[bytes]:
        header = m.parse_header(data)
        if header.type != m.RoundConfig.TYPE:
            raise StageError(f"client {self.id} awaits the round configuration, got type {header.type}", sender="server")
        if header.sender != m.SERVER or header.recipient != m.SERVER:
            raise m.ParseError("configuration must come from the server, to all")
        if len(data) < m.HEADER.size + m.SIG_BYTES:
            raise m.ParseError("configuration too short to carry the server's signature")
        cfg = m.RoundConfig.parse(data[m.HEADER.size : -m.SIG_BYTES])
        pinned = self.policy.server_key
        if pinned is not None and cfg.server_sign_pk != pinned.public_bytes_raw():
            raise self._violation("the configuration names a server signing key other than the pinned one")
        server_key = pinned or Ed25519PublicKey.from_public_bytes(cfg.server_sign_pk)
        m.open_broadcast(data, server_key, config=True)
        if not m.sorted_contains(cfg.roster, np.array([self.id])):
            raise self._reject(f"client {self.id} is not on the round's roster")
        bounds = self._check_policy(cfg)
        if cfg.active and (self._identity_key is None or not self._identity_keys):
            raise self._violation("an active-security round needs this client's identity key and the peers' keys")
        if cfg.active and not m.sorted_contains(self._known, cfg.roster):
            raise self._violation("the roster names clients without a known identity key")
        if self._vector is not None and cfg.vector_length != self._vector.size:
            raise self._violation(f"round expects vectors of length {cfg.vector_length}, this client holds "
                                  f"{self._vector.size}")
        try:
            enc = FixedPointEncoding(bits=cfg.bits, scale=cfg.scale, clip=cfg.clip, stochastic=cfg.stochastic,
                                     modular=cfg.modular)
            # never help build a sum that can wrap (a modular ring: a scale outside the range its bounds allow)
            enc.check_capacity(cfg.roster.size, self._noise, length=cfg.vector_length)
            encoded = None if self._vector is None else self._encode(enc, self._vector)
        except (ConfigurationError, ValueError) as e:
            raise self._violation(str(e)) from None
        except OverflowError:
            raise self._violation(f"scale {cfg.scale} x clip {cfg.clip} overflows: the sum could wrap any ring") from None
        round_id = header.round_id
        cfg_hash = keys.config_hash(data)
        enc_sk, mask_sk = _x25519_from(self._rand), _x25519_from(self._rand)
        self_seed = self._rand(32)
        chain, seed_commit = keys.seed_chain(self._rand(32), GRAPH_DRAWS)
        enc_pk = enc_sk.public_key().public_bytes_raw()
        mask_pk = mask_sk.public_key().public_bytes_raw()
        commit = keys.commitment(round_id, self.id, self_seed)
        shared = enc_sk.exchange(X25519PublicKey.from_public_bytes(cfg.server_pk))
        sig = m.NO_SIGNATURE
        if cfg.active:
            sig = self._identity_key.sign(keys.advertise_payload(cfg_hash, self.id, enc_pk, mask_pk, commit, seed_commit))
        # Everything checked: commit the new state at once.
        self._encoded, self._vector = encoded, None
        self._config, self._encoding, self._round_id, self._cfg_hash = cfg, enc, round_id, cfg_hash
        self._server_key = server_key
        self._enc_sk, self._mask_sk, self._self_seed, self._chain = enc_sk, mask_sk, self_seed, chain
        self._key = keys.client_server_key(shared, cfg_hash, self.id)
        self.round_bounds = bounds
        self._advertised = m.AdvertiseKeys(enc_pk, mask_pk, commit, seed_commit, sig)
        self.stage = "commitments"
        return [self._seal(self._advertised)]

    def _reveal(self, attempt: int, view: np.ndarray) -> list[bytes]:
        """Fix the view of this attempt, then (only then) disclose this attempt's chain value."""
        if not m.sorted_contains(view, np.array([self.id])):
            raise self._reject("the view of the graph draw does not contain this client")
        if not m.sorted_contains(self._config.roster, view):
            raise self._reject("the view of the graph draw names clients outside the roster")
        cfg = self._config
        self._check_policy(cfg, view=view.size)
        self._view, self._attempt = view, attempt
        return [self._seal(m.SeedReveal(attempt, self._chain[attempt]))]

    def _on_commitments(self, data: bytes) -> list[bytes]:
        _, body = self._open_broadcast(data, m.SeedCommitments)
        msg = m.SeedCommitments.parse(body)
        if msg.attempt != 0:
            raise self._reject(f"the first graph draw must be attempt 0, got {msg.attempt}")
        j = int(np.searchsorted(msg.ids, self.id))
        if j >= msg.ids.size or msg.ids[j] != self.id:
            raise self._reject("the view of the graph draw does not contain this client")
        R = m.KEY_RECORD_BYTES
        if bytes(msg.records[j * R : (j + 1) * R]) != self._advertised.body():
            raise self._reject("the view carries keys for this client other than the ones it advertised")
        out = self._reveal(0, msg.ids)
        self._view0, self._records = msg.ids, msg.records
        self.stage = "reveals"
        return out

    def _on_reveals(self, data: bytes) -> list[bytes]:
        kind, body = self._open_broadcast(data, m.SeedReveals, m.SeedCommitments)
        if kind is m.SeedCommitments:  # the server starts the next draw without the clients that did not reveal
            msg = m.SeedCommitments.parse(body)
            if msg.attempt != self._attempt + 1 or msg.attempt >= GRAPH_DRAWS:
                raise self._reject(f"graph draw {msg.attempt} after draw {self._attempt} (at most {GRAPH_DRAWS} draws, "
                                   "in order)")
            if not m.sorted_contains(self._view, msg.ids):
                raise self._reject("a later graph draw may only drop clients from the view")
            return self._reveal(msg.attempt, msg.ids)
        msg = m.SeedReveals.parse(body)
        cfg, view, attempt = self._config, self._view, self._attempt
        if msg.attempt != attempt or len(msg.reveals) != view.size * m.SEED_BYTES:
            raise self._reject(f"reveals for draw {msg.attempt} of {len(msg.reveals) // m.SEED_BYTES} clients; "
                               f"expected draw {attempt} of {view.size}")
        # Every reveal must open the commitment fixed before this client disclosed its own.
        R = m.KEY_RECORD_BYTES
        rows = np.searchsorted(self._view0, view)
        table = np.frombuffer(self._records, dtype=np.uint8).reshape(-1, R)
        commits = table[rows, 4 * m.KEY_BYTES - 32 : 4 * m.KEY_BYTES].tobytes()  # seed commitments, view order
        bad = keys.reveals_mismatch(msg.reveals, attempt, commits)
        if bad >= 0:
            raise self._reject(f"the graph-seed reveal of client {int(view[bad])} does not open its commitment")
        seed = keys.graph_seed(self._cfg_hash, attempt, view, msg.reveals)
        ids = neighbours_of(cfg.graph, view, cfg.k, seed, self.id)
        if ids.size < cfg.t:
            raise TooFewSurvivors(f"client {self.id} has {ids.size} neighbours < t={cfg.t}", sender=self.id)
        records = {}
        for v, row in zip(ids.tolist(), np.searchsorted(self._view0, ids).tolist()):
            a = m.AdvertiseKeys.parse(bytes(self._records[row * R : (row + 1) * R]))
            if cfg.active:
                pk = self._identity_keys.get(v)
                payload = keys.advertise_payload(self._cfg_hash, v, a.enc_pk, a.mask_pk, a.commitment, a.seed_commitment)
                try:
                    if pk is None:
                        raise InvalidSignature
                    pk.verify(a.signature, payload)
                except InvalidSignature:
                    raise self._reject(f"advertised keys of client {v} carry no valid identity signature") from None
            records[v] = a
        peers = {v: (X25519PublicKey.from_public_bytes(a.enc_pk), X25519PublicKey.from_public_bytes(a.mask_pk))
                 for v, a in records.items()}
        # Shares at x = id + 1 for every neighbour, both secrets in one vectorised Horner pass each.
        xs = ids + 1
        s_sh, b_sh = shamir.split_many([self._mask_sk.private_bytes_raw(), self._self_seed], xs, cfg.t, self._rand)
        # Plaintexts for all neighbours at once: u32(u) | u32(v) | share of mask key | share of seed | signature.
        L2 = 2 + 2 * shamir.LIMBS
        pts = np.zeros((ids.size, L2 + m.SIG_BYTES // 4), dtype="<u4")
        pts[:, 0], pts[:, 1] = self.id, ids
        pts[:, 2 : 2 + shamir.LIMBS], pts[:, 2 + shamir.LIMBS : L2] = s_sh, b_sh
        if cfg.active:  # the dealer signs each pair of shares, so a revealed share can be traced to its dealer
            adv = self._advertised
            for j, v in enumerate(ids.tolist()):
                row = pts[j]
                payload = keys.dealt_share_payload(
                    self._cfg_hash, self.id, v, adv.commitment, adv.mask_pk,
                    keys.share_digest(0, row[2 + shamir.LIMBS : L2].tobytes()),
                    keys.share_digest(1, row[2 : 2 + shamir.LIMBS].tobytes()))
                row[L2:] = np.frombuffer(self._identity_key.sign(payload), dtype="<u4")
        rows_bytes = pts.tobytes()
        width = pts.shape[1] * 4
        nonce = keys.share_nonce(self.id)
        share_keys: dict[int, bytes] = {}
        cts = []
        for j, v in enumerate(ids.tolist()):
            ck = keys.pair_key(self._enc_sk.exchange(peers[v][0]), self._round_id, self.id, v, keys.ENC)
            share_keys[v] = ck
            pt = rows_bytes[j * width : (j + 1) * width]
            cts.append(AESGCM(ck).encrypt(nonce, pt, keys.share_ad(self._round_id, self.id, v)))
        self._share_keys, self._peers, self._peer_records = share_keys, peers, records
        self._neighbours, self._neighbour_set = ids, set(ids.tolist())
        del self._records, self._view0  # the n key records are not needed any more
        self.stage = "shares"
        return [self._seal(m.ShareKeys(ids, b"".join(cts)))]

    def _on_shares(self, data: bytes) -> list[bytes]:
        if self._encoded is None:
            raise StageError(f"client {self.id} has no input yet: set_input comes before the forwarded shares",
                             sender=self.id)
        msg = m.ForwardedShares.parse(self._open(data, m.ForwardedShares))
        cfg = self._config
        if not set(msg.ids.tolist()) <= self._neighbour_set:
            raise self._reject("forwarded shares come from clients that are not neighbours")
        if msg.ids.size < cfg.t:
            raise TooFewSurvivors(f"client {self.id} received shares from {msg.ids.size} neighbours < t={cfg.t}", sender=self.id)
        held: dict[int, tuple[bytes, bytes]] = {}
        undecryptable: list[int] = []
        for j, v in enumerate(msg.ids.tolist()):
            try:
                pt = AESGCM(self._share_keys[v]).decrypt(
                    keys.share_nonce(v), msg.ciphertext(j), keys.share_ad(self._round_id, v, self.id)
                )
                if pt[:8] != struct.pack("<II", v, self.id):
                    raise InvalidTag
                # Share values are range-checked by the server, which is the party that interpolates.
                s_share, b_share = pt[8 : 8 + shamir.SHARE_BYTES], pt[8 + shamir.SHARE_BYTES : 8 + 2 * shamir.SHARE_BYTES]
                sig = pt[8 + 2 * shamir.SHARE_BYTES :]
                if cfg.active:  # a share its dealer did not sign is as unusable as one that does not decrypt
                    a = self._peer_records[v]
                    self._identity_keys[v].verify(sig, keys.dealt_share_payload(
                        self._cfg_hash, v, self.id, a.commitment, a.mask_pk, keys.share_digest(0, b_share),
                        keys.share_digest(1, s_share)))
                elif sig != m.NO_SIGNATURE:
                    raise InvalidTag
                held[v] = (s_share, b_share, sig)
            except (InvalidTag, InvalidSignature):
                # v's shares are unusable, but v is in U2 and masks with us, so we still mask with v.
                undecryptable.append(v)
        # y = x + PRG(b) + sum_v sign(u, v) PRG(s_uv)   (word ring, reduced mod 2^bits once)
        plus, minus = [self._self_seed], []
        for v in msg.ids.tolist():
            seed = keys.pair_key(self._mask_sk.exchange(self._peers[v][1]), self._round_id, self.id, v, keys.MASK)
            (plus if self.id < v else minus).append(seed)
        y = apply_masks(self._encoded, plus, minus, MaskExpander(cfg.vector_length, cfg.bits))
        self._held, self._u2, self.undecryptable = held, msg.ids, undecryptable
        self._encoded = None
        self.stage = "consistency" if cfg.active else "unmask"
        # The complaint: the dealers whose shares this client cannot use, so the server never counts on them.
        return [self._seal(m.MaskedInput(pack(y, cfg.bits), np.array(undecryptable, dtype=np.int64)))]

    def _on_consistency(self, data: bytes) -> list[bytes]:
        msg = m.ConsistencyRequest.parse(self._open(data, m.ConsistencyRequest))
        if not m.sorted_contains(msg.survivors, np.array([self.id])) or not m.sorted_contains(self._view, msg.survivors):
            raise self._reject("survivor list must contain this client and only clients of the view")
        need = max(self.policy.min_survivors, self._config.t)
        if msg.survivors.size < need:
            raise self._violation(f"the survivor list has {msg.survivors.size} clients; this client unmasks only "
                                  f"sums of at least {need}")
        if np.intersect1d(msg.survivors, self._u2).size < self._config.t:
            raise TooFewSurvivors(f"client {self.id}: fewer than t={self._config.t} neighbours survived", sender=self.id)
        sig = self._identity_key.sign(keys.consistency_payload(self._cfg_hash, msg.survivors))
        self._signed_survivors = msg.survivors
        self.stage = "unmask"
        return [self._seal(m.ConsistencySignature(sig))]

    def _on_unmask(self, data: bytes) -> list[bytes]:
        msg = m.UnmaskRequest.parse(self._open(data, m.UnmaskRequest))
        cfg = self._config
        survivors = msg.survivors
        if not set(survivors.tolist()) <= set(self._u2.tolist()):
            raise self._reject("survivor list names peers that never sent this client shares")
        if cfg.active:
            expected = np.intersect1d(self._signed_survivors, self._u2)
            if not np.array_equal(survivors, expected):
                raise self._reject("unmask request disagrees with the survivor list this client signed")
            payload = keys.consistency_payload(self._cfg_hash, self._signed_survivors)
            good, u2 = 0, set(self._u2.tolist())
            for v, sig in msg.signatures:
                pk = self._identity_keys.get(v)
                if v == self.id or v not in u2 or pk is None:
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
        if not set(msg.withheld.tolist()) <= set(self._u2.tolist()):
            raise self._reject("the withheld list names peers that never sent this client shares")
        surv, withheld = set(survivors.tolist()), set(msg.withheld.tolist())
        b_ids = [v for v in survivors.tolist() if v in self._held and v not in withheld]
        s_ids = [v for v in self._u2.tolist() if v not in surv and v in self._held and v not in withheld]
        for v in b_ids + s_ids:  # the invariant, whatever the stage order: one disclosure per peer
            self._may_disclose(v, "share")
        b_pr = s_pr = b""
        if cfg.active:  # beside each share: the digest of the other share of its pair and the dealer's signature
            b_pr = b"".join(keys.share_digest(1, self._held[v][0]) + self._held[v][2] for v in b_ids)
            s_pr = b"".join(keys.share_digest(0, self._held[v][1]) + self._held[v][2] for v in s_ids)
        for v in b_ids:
            self.revealed[v] = "self_mask"
        for v in s_ids:
            self.revealed[v] = "mask_key"
        # A withheld peer is one this client promises never to reveal a share of: the server will ask for the
        # pairwise seed with it instead (active rounds also wait here for a possible accusation).
        self._withheld = withheld
        self.stage = "exclusion" if cfg.active or withheld else "done"
        return [self._seal(m.UnmaskResponse(
            np.array(b_ids, dtype=np.int64), b"".join(self._held[v][1] for v in b_ids),
            np.array(s_ids, dtype=np.int64), b"".join(self._held[v][0] for v in s_ids), b_pr, s_pr,
        ))]

    def _may_disclose(self, peer: int, what: str, proven: bool = False) -> None:
        """The client's invariant: for each peer it reveals at most one of {a share of its self-mask seed, a share
        of its masking key, its pairwise-mask seed with it}; the only exception is the pairwise seed with a peer
        proven (by a proof this client checked) to have dealt inconsistent shares. PolicyViolation otherwise."""
        done = self.revealed.get(peer)
        if done is None or (proven and what == "pairwise_seed" and "pairwise_seed" not in done):
            return
        if what == "pairwise_seed":
            raise self._violation(f"it already revealed a {done.replace('_', '-')} share of client {peer}; it "
                                  f"reveals its pairwise-mask seed with client {peer} only against a proof that "
                                  f"{peer} dealt inconsistent shares")
        raise self._violation(f"it already revealed its {done.replace('_', '-')} with client {peer}; it never "
                              f"reveals a share of client {peer} after that")

    def _check_unusable(self, acc: m.Accusation) -> None:
        """An exclusion without proof (the dealer's shares are unusable): allowed only for a peer this client
        masked with and of which it revealed no share (and never will: the stage is past unmasking)."""
        D = acc.dealer
        if D == self.id or D not in self._peers or not m.sorted_contains(self._u2, np.array([D])):
            raise self._violation(f"an exclusion of client {D}, which did not deal shares to this client")
        self._may_disclose(D, "pairwise_seed")

    def _check_proof(self, acc: m.Accusation) -> None:
        """Raise PolicyViolation unless ``acc`` proves, from this client's own records alone, that its dealer
        dealt inconsistent shares: ``t`` shares the dealer signed (identity key pinned, commitment and
        masking key from the advertised record this client verified) that do not rebuild its public value."""
        cfg, D = self._config, acc.dealer
        a = self._peer_records.get(D)
        if a is None or D == self.id or not m.sorted_contains(self._u2, np.array([D])):
            raise self._violation(f"an exclusion proof about client {D}, which did not deal shares to this client")
        if len(acc.entries) != cfg.t:
            raise self._violation(f"the exclusion proof about client {D} has {len(acc.entries)} shares; "
                                  f"exactly t={cfg.t} are needed")
        pk = self._identity_keys[D]
        for w, share, other, sig in acc.entries:
            try:
                pk.verify(sig, keys.revealed_share_payload(self._cfg_hash, D, w, a.commitment, a.mask_pk, acc.kind,
                                                           share, other))
            except InvalidSignature:
                raise self._violation(f"the exclusion proof about client {D} holds a share for client {w} that "
                                      f"client {D} did not sign in this round") from None
        ys = np.frombuffer(b"".join(sh for _, sh, _, _ in acc.entries), dtype="<u4").astype(np.int64)
        if ys.max(initial=0) >= shamir.PRIME:
            raise self._violation(f"the exclusion proof about client {D} holds a value that is not a field element")
        try:
            secret = shamir.reconstruct([w + 1 for w, *_ in acc.entries], ys.reshape(cfg.t, shamir.LIMBS))
        except ValueError:
            return  # distinct points, field elements: no honest dealer's t shares decode to no 32-byte value
        if acc.kind == 0:
            consistent = keys.commitment(self._round_id, D, secret) == a.commitment
        else:
            canon = (int.from_bytes(a.mask_pk, "little") & ((1 << 255) - 1)) % (2**255 - 19)
            consistent = (X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
                          == canon.to_bytes(32, "little"))
        if consistent:
            raise self._violation(f"the exclusion proof about client {D} rebuilds its public value: no cheating shown")

    def _on_exclusion(self, data: bytes) -> list[bytes]:
        msg = m.ExclusionRequest.parse(self._open(data, m.ExclusionRequest))
        if not msg.accusations:
            raise self._reject("an exclusion request accuses nobody")
        for acc in msg.accusations:  # every proof (or the no-share rule), before any seed leaves this client
            if acc.kind == m.UNUSABLE:
                self._check_unusable(acc)
            elif not self._config.active:
                raise self._violation(f"an exclusion proof about client {acc.dealer} in a semi-honest round (no "
                                      "dealer signatures to check it against)")
            else:
                self._check_proof(acc)
                self._may_disclose(acc.dealer, "pairwise_seed", proven=True)
        dealers = [acc.dealer for acc in msg.accusations]
        seeds = b"".join(
            keys.pair_key(self._mask_sk.exchange(self._peers[D][1]), self._round_id, self.id, D, keys.MASK)
            for D in dealers)
        for D in dealers:
            self.revealed[D] = (self.revealed[D] + "+" if D in self.revealed else "") + "pairwise_seed"
        self.stage = "done"
        return [self._seal(m.ExclusionResponse(np.array(dealers, dtype=np.int64), seeds))]
