"""The server of one secure-aggregation round, as a sans-IO state machine.

``config_message`` is the first broadcast (signed by the server's long-term
key, ``signing_key``, which clients pin). ``receive(sender, data)`` takes one
client message (``sender`` is the id the transport authenticated);
``advance()`` closes the current stage and returns ``{client_id:
message_bytes}`` for the next (broadcasts are the same bytes object for every
recipient). Stages, in order::

    advertise_keys -> seed_reveal (1 to GRAPH_DRAWS times) -> share_keys -> masked_input
        -> [consistency_check] -> unmasking -> [exclusion] -> done

(``exclusion``: only when some dealer is excluded: proven to have dealt inconsistent shares, active rounds,
or, in both modes, *unusable*: fewer than ``t`` of its neighbours in the sum could use its shares.)

The graph seed is drawn by commit and reveal: clients commit to a hash chain
in their advertised keys, the server broadcasts the view (the advertisers and
their keys), each client reveals its chain value, and the seed hashes all
reveals of the view. A client silent at ``seed_reveal`` is left out of a new
draw over the others (at most ``GRAPH_DRAWS`` draws), so dropouts there do not
abort the round.

Any message, whatever its bytes, is either accepted or rejected with
:class:`MessageRejected` naming the sender and the reason, and a rejection
changes nothing already accepted; a client without an accepted message when a
stage closes is treated as dropped at that stage (its reason recorded in
``excluded``), so one bad client never aborts the round for the others.
``advance()`` raises :class:`TooFewSurvivors` instead of ever producing a
wrong sum.

Unmasking (``U2`` sent shares, ``U3`` sent masked inputs, word-ring arithmetic)::

    total = sum_{u in U3} y_u - sum_{u in U3} PRG(b_u)
            - sum_{v in U2 \\ U3} sum_{u in N(v) & U3} sign(u, v) PRG(s_uv)

Every rebuilt secret is checked against its public value (the masking key
against its advertised public key, the self-mask seed against its
commitment) so a bad share can never cause a wrong sum. In a semi-honest round
a dealer whose shares rebuild no consistent value aborts the round
(:class:`ReconstructionError` naming it). In an active round every share
carries its dealer's signature: shares whose signature fails are blamed on
their revealer (``blamed``) and dropped; ``t`` validly signed shares that
still miss the public value prove the dealer cheated, and at ``exclusion`` the
server sends that proof to the dealer's neighbours in the sum, which check it
themselves and reveal the pairwise-mask seed they share with it, so the
server takes the dealer's input and every term masking with it out of the
sum, lists it in ``excluded``, and returns the exact sum of the others.

Each MaskedInput carries its sender's *complaints*: the dealers whose shares
it could not use (undecryptable, or unsigned in active rounds). At the close
of ``masked_input`` a dealer the unmasking needs (in ``U3``, or dropped with
a neighbour in ``U3``) that fewer than ``t`` of its neighbours in ``U3`` can
use is *unusable* (``unusable``): the unmask requests *withhold* it (nobody is
asked for a share of it) and at ``exclusion`` every neighbour in the sum that
masked with it is asked, without proof, for its pairwise seed with it; an
honest client reveals that seed only if it revealed no share of the dealer
(``protocols/secagg.md`` section 9 argues why this keeps every honest input
hidden). The server takes the dealer's masked input (if it sent one) and every
mask term with it out of the sum and lists it in ``excluded``, naming the
complaints: a dealer whose shares nobody can use never aborts the round.
To take an excluded dealer's input back out, the server writes masked inputs
to a temporary file as they arrive (disk at most ``n * d * bits / 8``, deleted
when the round ends) and reads back only an excluded dealer's: its memory
stays one running sum. An active server keeps every input (any dealer may be
proven to cheat); a semi-honest one only the inputs of senders that, when
their input arrives, have fewer than ``t`` usable holders among the inputs
already received (only those can turn out unusable).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import keys, messages as m, shamir
from .encoding import FixedPointEncoding, unpack
from .errors import ConfigurationError, MessageRejected, ReconstructionError, SecAggError, StageError, TooFewSurvivors
from .graph import build_graph
from .params import GRAPH_DRAWS, SecAggParams
from .prg import MaskExpander

#: extra t-subsets tried when a rebuilt secret fails its check (bad shares from some client)
RECONSTRUCTION_ATTEMPTS = 16


def _canonical_x25519(raw: bytes) -> bytes:
    """The canonical encoding of an X25519 public key: RFC 7748 ignores bit 255 and reduces mod p, so a
    key advertised with the high bit set (or as u + p) is the same key as its canonical form."""
    u = (int.from_bytes(bytes(raw), "little") & ((1 << 255) - 1)) % (2**255 - 19)
    return u.to_bytes(32, "little")


def _in_sorted(sorted_ids: np.ndarray, u: int) -> bool:
    j = int(np.searchsorted(sorted_ids, u))
    return j < sorted_ids.size and int(sorted_ids[j]) == u


@dataclass
class ServerResult:
    """The sum in the ring and who is in it."""

    ring_sum: np.ndarray
    included: tuple[int, ...]
    excluded: dict[int, str] = field(default_factory=dict)
    #: revealers of shares their dealer did not sign (active mode): each share was discarded
    blamed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Accused:
    """A dealer proven to have dealt inconsistent shares, with the proof."""

    proof: m.Accusation
    what: str


class SecAggServer:
    """The server's side of a round (see module docstring)."""

    def __init__(
        self,
        roster: Iterable[int],
        vector_length: int,
        params: SecAggParams,
        encoding: FixedPointEncoding,
        *,
        active: bool = False,
        identity_keys: Mapping[int, Ed25519PublicKey] | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        _unsafe_randbytes_for_test_vectors: Callable[[int], bytes] | None = None,
    ) -> None:
        ids = np.array(sorted(set(int(i) for i in roster)), dtype=np.int64)
        if ids.size != params.n:
            raise ConfigurationError(f"roster has {ids.size} clients but the parameters were chosen for n={params.n}")
        if ids.size and (ids.min() < 0 or ids.max() > m.MAX_CLIENT_ID):
            raise ConfigurationError(f"client ids must be in [0, {m.MAX_CLIENT_ID}]")
        if active and (not identity_keys or not set(ids.tolist()) <= set(identity_keys)):
            raise ConfigurationError("active security needs an identity public key for every client on the roster")
        if active and params.threat_model != "active":
            raise ConfigurationError(
                "an active-security round needs parameters chosen for an active server (threat_model='active': "
                f"2t > k + c); these were chosen for {params.threat_model!r} (k={params.k}, t={params.t})"
            )
        encoding.check_capacity(ids.size, length=int(vector_length))
        if signing_key is not None and not isinstance(signing_key, Ed25519PrivateKey):
            raise ConfigurationError("signing_key must be an Ed25519PrivateKey (the server's long-term key)")
        rand = self._rand = _unsafe_randbytes_for_test_vectors or os.urandom
        self.params, self.encoding, self.active = params, encoding, active
        self._identity_keys = dict(identity_keys or {})
        # Without a long-term key the configuration is still signed (one format), by a key nobody
        # can have pinned: only semi-honest clients that pin nothing accept such a round.
        self._signing_key = signing_key or Ed25519PrivateKey.from_private_bytes(rand(32))
        self.round_id = rand(16)
        self._server_sk = X25519PrivateKey.from_private_bytes(rand(32))
        self.config = m.RoundConfig(
            int(vector_length), encoding.bits, encoding.stochastic, encoding.scale, encoding.clip, params.graph,
            params.k, params.t, active, self._server_sk.public_key().public_bytes_raw(),
            self._signing_key.public_key().public_bytes_raw(), ids, encoding.modular,
        )
        header = m.Header(m.RoundConfig.TYPE, self.round_id, m.SERVER, m.SERVER)
        self.config_message = m.sign_broadcast(header, self.config.body(), self._signing_key, config=True)
        try:  # the clients parse it with these rules: refuse here what every honest client would refuse
            m.RoundConfig.parse(self.config.body())
        except m.ParseError as e:
            raise ConfigurationError(f"the round configuration would be refused by every client: {e}") from None
        self._cfg_hash = keys.config_hash(self.config_message)
        self.roster = ids
        self._roster_set = set(ids.tolist())
        self.graph: dict[int, np.ndarray] = {}  # drawn at the close of seed_reveal
        self.stages = ("advertise_keys", "seed_reveal", "share_keys", "masked_input") + (
            ("consistency_check",) if active else ()) + ("unmasking", "exclusion")
        self.stage = self.stages[0]
        self.graph_attempt = 0
        self._view = np.zeros(0, dtype=np.int64)
        self._reveals: dict[int, bytes] = {}
        self._repeat = False
        self.excluded: dict[int, str] = {}
        self.rejections: dict[int, str] = {}
        self.silent_at_unmasking: dict[int, str] = {}
        self._keys: dict[int, bytes] = {}
        self._adv: dict[int, m.AdvertiseKeys] = {}
        self._nbrs: dict[int, np.ndarray] = {}
        self._shares: dict[int, m.ShareKeys] = {}
        self._u3: set[int] = set()
        self._total = np.zeros(int(vector_length), dtype=encoding.dtype)
        self._sigs: dict[int, bytes] = {}
        self._responses: dict[int, m.UnmaskResponse] = {}
        # each masked input spilled to a temporary file as it arrives (RAM stays one vector), read back only to
        # take an excluded dealer's out of the sum (a proven cheater, or one whose shares are unusable);
        # sender -> (offset, length)
        self._spill = tempfile.TemporaryFile(prefix="fedsecure-secagg-")
        self._spilled: dict[int, tuple[int, int]] = {}
        self._holders_so_far: dict[int, int] = {}  # dealer -> senders in U3 so far that hold a usable share of it
        self.blamed: dict[int, str] = {}
        self.accused: dict[int, str] = {}
        #: sender -> the dealers whose shares it could not use (its MaskedInput's complaints)
        self.complaints: dict[int, frozenset[int]] = {}
        #: dealers whose shares fewer than t of their neighbours in the sum can use (id -> why), set at the close
        #: of masked_input; no share of theirs is ever requested, they are excluded through pairwise seeds
        self.unusable: dict[int, str] = {}
        self._excl_asked: dict[int, list[int]] = {}
        self._excl_seeds: dict[int, bytes] = {}
        self._withheld_of: dict[int, np.ndarray] = {}
        self.bytes_received = 0
        self.bytes_received_by_stage: dict[str, int] = {}
        self.bytes_sent = 0
        self.result: ServerResult | None = None

    # -- receiving ---------------------------------------------------------
    def _reject(self, sender: int, reason: str) -> MessageRejected:
        self.rejections[sender] = reason
        return MessageRejected(reason, sender=sender)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The server's long-term signing key, for clients to pin (``ClientPolicy(server_key=...)``)."""
        return self._signing_key.public_key()

    def receive(self, sender: int, data: bytes) -> None:
        """Accept one message from client ``sender`` or raise :class:`MessageRejected` naming it.

        Whatever ``data`` holds, nothing but an error of the :class:`SecAggError` family escapes, and a
        rejected message changes nothing already accepted.
        """
        try:
            if sender not in self._roster_set:
                raise MessageRejected("not on this round's roster", sender=sender)
            data = bytes(data)
        except SecAggError:
            raise
        except Exception as e:  # noqa: BLE001 -- an unhashable sender id or non-bytes data
            raise MessageRejected(f"unusable sender or data ({type(e).__name__}: {e})", sender=None) from None
        try:
            self._receive(sender, data)
        except SecAggError:
            raise
        except m.ParseError as e:
            raise self._reject(sender, str(e)) from None
        except Exception as e:  # noqa: BLE001 -- whatever the bytes, the sender is rejected, the round goes on
            raise self._reject(sender, f"inadmissible message ({type(e).__name__}: {e})") from None

    def _receive(self, sender: int, data: bytes) -> None:
        header = m.parse_header(data)
        if header.round_id != self.round_id:
            raise self._reject(sender, "message belongs to another round (replay?)")
        if header.sender != sender or header.recipient != m.SERVER:
            raise self._reject(sender, f"header says {header.sender} -> {header.recipient}, transport says {sender} -> server")
        expected = {
            "advertise_keys": m.AdvertiseKeys, "seed_reveal": m.SeedReveal, "share_keys": m.ShareKeys,
            "masked_input": m.MaskedInput, "consistency_check": m.ConsistencySignature, "unmasking": m.UnmaskResponse,
            "exclusion": m.ExclusionResponse,
        }.get(self.stage)
        if expected is None or header.type != expected.TYPE:
            raise StageError(
                f"{m.MESSAGE_TYPES[header.type].__name__} is not accepted in stage {self.stage!r}", sender=sender
            )
        getattr(self, "_on_" + self.stage)(sender, data)
        self.bytes_received += len(data)
        self.bytes_received_by_stage[self.stage] = self.bytes_received_by_stage.get(self.stage, 0) + len(data)

    def _open(self, sender: int, data: bytes) -> bytes:
        key = self._keys.get(sender)
        if key is None:
            raise m.ParseError("no keys were accepted from this client")
        return m.open_sealed(data, key)[1]

    def _on_advertise_keys(self, sender: int, data: bytes) -> None:
        if sender in self._adv:
            raise m.ParseError("duplicate advertise_keys message")
        if len(data) < m.HEADER.size + m.TAG_BYTES:
            raise m.ParseError("message too short")
        adv = m.AdvertiseKeys.parse(data[m.HEADER.size : -m.TAG_BYTES])  # small-order keys refused here
        shared = self._server_sk.exchange(X25519PublicKey.from_public_bytes(adv.enc_pk))
        key = keys.client_server_key(shared, self._cfg_hash, sender)
        m.open_sealed(data, key)  # the tag covers enc_pk itself, and the config via the key
        if self.active:
            try:
                self._identity_keys[sender].verify(adv.signature, keys.advertise_payload(
                    self._cfg_hash, sender, adv.enc_pk, adv.mask_pk, adv.commitment, adv.seed_commitment))
            except InvalidSignature:
                raise m.ParseError("advertised keys are not signed by the client's identity key") from None
        elif adv.signature != m.NO_SIGNATURE:
            raise m.ParseError("signature field must be zero in a semi-honest round")
        self._keys[sender], self._adv[sender] = key, adv

    def _on_seed_reveal(self, sender: int, data: bytes) -> None:
        if not _in_sorted(self._view, sender):
            raise m.ParseError(f"is not in the view of graph draw {self.graph_attempt}")
        if sender in self._reveals:
            raise m.ParseError("duplicate seed reveal")
        msg = m.SeedReveal.parse(self._open(sender, data))
        if msg.attempt != self.graph_attempt:
            raise m.ParseError(f"reveal for graph draw {msg.attempt}, the current draw is {self.graph_attempt}")
        if not keys.reveal_matches(msg.reveal, msg.attempt, self._adv[sender].seed_commitment):
            raise m.ParseError("graph-seed reveal does not open the client's commitment")
        self._reveals[sender] = msg.reveal

    def _on_share_keys(self, sender: int, data: bytes) -> None:
        if sender not in self._nbrs:
            raise m.ParseError("was not sent a neighbour list (dropped earlier)")
        if sender in self._shares:
            raise m.ParseError("duplicate share_keys message")
        msg = m.ShareKeys.parse(self._open(sender, data))
        if not np.array_equal(msg.ids, self._nbrs[sender]):
            raise m.ParseError("shares are not addressed to exactly the client's neighbours")
        self._shares[sender] = msg

    def _on_masked_input(self, sender: int, data: bytes) -> None:
        if sender not in self._shares:
            raise m.ParseError("sent no shares, so its masked input cannot be unmasked")
        if sender in self._u3:
            raise m.ParseError("duplicate masked_input message")
        msg = m.MaskedInput.parse(self._open(sender, data), self.config.vector_length, self.config.bits)
        if not m.sorted_contains(self._u2_of[sender], msg.complaints):
            raise m.ParseError("complains about clients whose shares were not forwarded to it")
        bits = self.config.bits
        # Whole-word widths need no unpacking: add the message bytes in place (no copy of the vector).
        y = (np.frombuffer(msg.packed, dtype=f"<u{bits // 8}") if bits in (32, 64)
             else unpack(msg.packed, bits, self.config.vector_length))
        # Accumulate on arrival: the server never holds n vectors at once.
        np.add(self._total, y, out=self._total)
        complaints = frozenset(msg.complaints.tolist())
        # Kept to be taken back out if the sender is excluded: any sender in active rounds (it may be proven to
        # cheat); in semi-honest rounds only a sender that does not yet have t usable holders among the masked
        # inputs received so far (that count only grows, so a sender past t can never become unusable).
        if self.active or self._holders_so_far.get(sender, 0) < self.params.t:
            self._spilled[sender] = (self._spill.tell(), len(msg.packed))
            self._spill.write(msg.packed)
        for D in self._u2_of[sender].tolist():
            if D not in complaints:
                self._holders_so_far[D] = self._holders_so_far.get(D, 0) + 1
        self.complaints[sender] = complaints
        self._u3.add(sender)

    def _on_consistency_check(self, sender: int, data: bytes) -> None:
        if sender not in self._u3:
            raise m.ParseError("is not on the survivor list")
        if sender in self._sigs:
            raise m.ParseError("duplicate consistency signature")
        msg = m.ConsistencySignature.parse(self._open(sender, data))
        try:
            self._identity_keys[sender].verify(msg.signature, keys.consistency_payload(self._cfg_hash, self._u3_array))
        except InvalidSignature:
            raise m.ParseError("consistency signature does not verify") from None
        self._sigs[sender] = msg.signature

    def _on_unmasking(self, sender: int, data: bytes) -> None:
        if sender not in self._unmask_asked:
            raise m.ParseError("was not asked to unmask")
        if sender in self._responses:
            raise m.ParseError("duplicate unmask response")
        msg = m.UnmaskResponse.parse(self._open(sender, data), self.active)
        surv = set(self._surv_of[sender].tolist())
        dropped = set(self._u2_of[sender].tolist()) - surv
        withheld = set(self._withheld_of.get(sender, ()))
        if not set(msg.self_mask_ids.tolist()) <= surv - withheld:
            raise m.ParseError("revealed self-mask shares of peers that are not surviving neighbours (or were withheld)")
        if not set(msg.mask_key_ids.tolist()) <= dropped - withheld:
            raise m.ParseError("revealed masking-key shares of peers that did not drop (or were withheld)")
        for raw in (msg.self_mask_shares, msg.mask_key_shares):
            arr = np.frombuffer(raw, dtype="<u4")
            if arr.size and arr.max() >= shamir.PRIME:
                raise m.ParseError("a share value is not a field element")
        self._responses[sender] = msg

    def _on_exclusion(self, sender: int, data: bytes) -> None:
        if sender not in self._excl_asked:
            raise m.ParseError("was not sent an exclusion request")
        if sender in self._excl_seeds:
            raise m.ParseError("duplicate exclusion response")
        msg = m.ExclusionResponse.parse(self._open(sender, data))
        if msg.dealers.tolist() != self._excl_asked[sender]:
            raise m.ParseError("pairwise seeds are not for exactly the excluded dealers it was asked about")
        self._excl_seeds[sender] = bytes(msg.seeds)

    # -- advancing ---------------------------------------------------------
    def _out(self, u: int, msg) -> bytes:
        data = m.seal(m.Header(msg.TYPE, self.round_id, m.SERVER, u), msg.body(), self._keys[u], self._rand(m.NONCE_BYTES))
        self.bytes_sent += len(data)
        return data

    def _drop_missing(self, expected: Iterable[int], got: Iterable[int]) -> None:
        got = set(got)
        for u in expected:
            if u not in got and u not in self.excluded:
                why = self.rejections.get(u)
                self.excluded[u] = f"no valid message at stage {self.stage}" + (f" ({why})" if why else "")

    def _broadcast(self, msg, to: Iterable[int]) -> dict[int, bytes]:
        data = m.sign_broadcast(m.Header(msg.TYPE, self.round_id, m.SERVER, m.SERVER), msg.body(), self._signing_key)
        out = {u: data for u in to}  # one bytes object shared by every recipient
        self.bytes_sent += len(data) * len(out)
        return out

    def advance(self) -> dict[int, bytes]:
        """Close the current stage; return the messages of the next one (empty when done)."""
        if self.stage == "done":
            raise StageError("the round is finished", sender="server")
        out = getattr(self, "_close_" + self.stage)()
        if self._repeat:  # another graph draw: the stage stays open
            self._repeat = False
            return out
        if self.result is not None:  # finished (no exclusion stage needed)
            self.stage = "done"
            return out
        i = self.stages.index(self.stage)
        self.stage = self.stages[i + 1] if i + 1 < len(self.stages) else "done"
        return out

    def _need(self, count: int, what: str) -> None:
        if count < self.params.t:
            raise TooFewSurvivors(f"only {count} clients {what}; the threshold is t={self.params.t}", sender="server")

    def _close_advertise_keys(self) -> dict[int, bytes]:
        self._drop_missing(self.roster.tolist(), self._adv)
        self._need(len(self._adv) - 1, "besides one advertised keys")
        self._view = np.array(sorted(self._adv), dtype=np.int64)
        records = b"".join(self._adv[u].body() for u in self._view.tolist())
        return self._broadcast(m.SeedCommitments(0, self._view, records), self._view.tolist())

    def _close_seed_reveal(self) -> dict[int, bytes]:
        view = self._view.tolist()
        missing = [u for u in view if u not in self._reveals]
        if missing:
            for u in missing:
                why = self.rejections.get(u)
                self.excluded[u] = f"no graph-seed reveal in draw {self.graph_attempt}" + (f" ({why})" if why else "")
            if self.graph_attempt + 1 >= GRAPH_DRAWS:
                raise TooFewSurvivors(f"clients {missing} did not reveal in the last of {GRAPH_DRAWS} graph draws",
                                      sender="server")
            self._view = np.array(sorted(self._reveals), dtype=np.int64)
            self._need(self._view.size - 1, "besides one revealed their graph-seed value")
            self.graph_attempt += 1
            self._reveals = {}
            self._repeat = True
            return self._broadcast(m.SeedCommitments(self.graph_attempt, self._view, b""), self._view.tolist())
        reveals = b"".join(self._reveals[u] for u in view)
        seed = keys.graph_seed(self._cfg_hash, self.graph_attempt, self._view, reveals)
        self.graph = build_graph(self.params.graph, self._view, self.params.k, seed)
        self._nbrs = {u: self.graph[u] for u in view}
        return self._broadcast(m.SeedReveals(self.graph_attempt, reveals), view)

    def _close_share_keys(self) -> dict[int, bytes]:
        self._drop_missing(self._nbrs, self._shares)
        self._need(len(self._shares), "shared their keys")
        # Position of each recipient inside each sender's message, to slice ciphertexts.
        pos = {u: {v: j for j, v in enumerate(msg.ids.tolist())} for u, msg in self._shares.items()}
        self._u2_of: dict[int, np.ndarray] = {}
        out = {}
        for v in sorted(self._shares):
            senders = [u for u in self._nbrs[v].tolist() if u in self._shares]
            self._u2_of[v] = np.array(senders, dtype=np.int64)
            cts = b"".join(self._shares[u].ciphertext(pos[u][v]) for u in senders)
            out[v] = self._out(v, m.ForwardedShares(self._u2_of[v], cts))
        return out

    def _close_masked_input(self) -> dict[int, bytes]:
        self._drop_missing(self._shares, self._u3)
        self._need(len(self._u3), "sent masked inputs")
        self._u3_array = np.array(sorted(self._u3), dtype=np.int64)
        u3 = self._u3  # set membership: O(k) per client, not O(n)
        self._surv_of = {u: np.array([v for v in self._u2_of[u].tolist() if v in u3], dtype=np.int64) for u in u3}
        self._classify_unusable()
        # The released sum covers only the inputs that can be unmasked: at least t of them, as U3 must.
        self._need(len(u3 - set(self.unusable)), "sent masked inputs that can be unmasked (the others are unusable)")
        if self.active:
            req = m.ConsistencyRequest(self._u3_array)
            return {u: self._out(u, req) for u in self._u3_array.tolist()}
        return self._unmask_requests(self._u3_array.tolist(), {})

    def _classify_unusable(self) -> None:
        """A dealer whose secret the unmasking needs (it is in ``U3``, or it dropped with a neighbour in ``U3``)
        is *unusable* when fewer than t of its neighbours in ``U3`` hold a usable share of it (they did not
        complain about it). No share of it will be requested from anyone; it is excluded through its
        neighbours' pairwise seeds instead, so it cannot abort the round."""
        t, u3 = self.params.t, self._u3
        for D in sorted(self._shares):
            nbrs = [j for j in self._u2_of[D].tolist() if j in u3]  # its neighbours in U3 (F is symmetric)
            if D not in u3 and not nbrs:
                continue
            complainers = [j for j in nbrs if D in self.complaints[j]]
            holders = len(nbrs) - len(complainers)
            if holders < t:
                self.unusable[D] = (f"its shares are usable by only {holders} of its {len(nbrs)} neighbours in the "
                                    f"sum, fewer than t={t} (complaints from clients {complainers})")
        unusable = self.unusable
        self._withheld_of = {u: np.array([v for v in self._u2_of[u].tolist() if v in unusable], dtype=np.int64)
                             for u in u3} if unusable else {}

    def _close_consistency_check(self) -> dict[int, bytes]:
        self._need(len(self._sigs), "signed the survivor list")
        return self._unmask_requests(sorted(self._sigs), self._sigs)

    def _unmask_requests(self, ask: list[int], sigs: Mapping[int, bytes]) -> dict[int, bytes]:
        self._unmask_asked = set(ask)
        out = {}
        for u in ask:
            s = tuple((v, sigs[v]) for v in self._u2_of[u].tolist() if v in sigs)
            withheld = self._withheld_of.get(u, np.zeros(0, dtype=np.int64))
            out[u] = self._out(u, m.UnmaskRequest(self._surv_of[u], s, withheld))
        return out

    def _close_unmasking(self) -> dict[int, bytes]:
        # A client silent at unmasking is still in the sum (its input arrived): it is not excluded,
        # only noted, so that included + excluded partitions the roster.
        for u in self._unmask_asked:
            if u not in self._responses:
                why = self.rejections.get(u)
                self.silent_at_unmasking[u] = "no valid unmask response" + (f" ({why})" if why else "")
        S, P = shamir.SHARE_BYTES, m.PROOF_BYTES
        b_sh: dict[int, list[tuple[int, bytes, bytes]]] = {}
        s_sh: dict[int, list[tuple[int, bytes, bytes]]] = {}
        for w in sorted(self._responses):
            r = self._responses[w]
            for j, v in enumerate(r.self_mask_ids.tolist()):
                b_sh.setdefault(v, []).append((w, r.self_mask_shares[j * S : (j + 1) * S],
                                               r.self_mask_proofs[j * P : (j + 1) * P]))
            for j, v in enumerate(r.mask_key_ids.tolist()):
                s_sh.setdefault(v, []).append((w, r.mask_key_shares[j * S : (j + 1) * S],
                                               r.mask_key_proofs[j * P : (j + 1) * P]))
        self._self_seeds: dict[int, bytes] = {}
        self._mask_keys: dict[int, bytes] = {}
        self._accused: dict[int, _Accused] = {}
        unusable = self.unusable
        for u in self._u3_array.tolist():
            if u in unusable:  # never asked for: its whole masked input comes back out
                continue
            got = self._rebuild(u, b_sh.get(u, []), lambda s, u=u: keys.commitment(self.round_id, u, s) == self._adv[u].commitment,
                                "self-mask seed", 0)
            if isinstance(got, _Accused):
                self._accused[u] = got
            else:
                self._self_seeds[u] = got
        for v in sorted(self._shares):
            if v in self._u3 or v in unusable or not any(u in self._u3 for u in self._u2_of[v].tolist()):
                continue
            # Compare canonical encodings: a client may advertise its key with the ignored high bit set.
            mask_pk = _canonical_x25519(self._adv[v].mask_pk)
            got = self._rebuild(
                v, s_sh.get(v, []),
                lambda s: X25519PrivateKey.from_private_bytes(s).public_key().public_bytes_raw() == mask_pk,
                "masking key", 1,
            )
            if isinstance(got, _Accused):
                self._accused[v] = got
            else:
                self._mask_keys[v] = got
        for D in sorted(self._accused):
            self.accused[D] = self._accused[D].what
        # Exclusion: every neighbour in the sum that masked with an excluded dealer (accused: with the proof;
        # unusable: without one) is asked for its pairwise seed with it.
        entries = {D: a.proof for D, a in self._accused.items()}
        entries.update({D: m.Accusation(D, m.UNUSABLE, ()) for D in unusable})
        out = {}
        for j in self._u3_array.tolist():
            if j in entries:  # its own masked input comes back out whole
                continue
            ds = [D for D in self._u2_of[j].tolist() if D in entries]
            if ds:
                self._excl_asked[j] = ds
                out[j] = self._out(j, m.ExclusionRequest(tuple(entries[D] for D in ds)))
        if not out:
            self._finish()
        return out

    def _close_exclusion(self) -> dict[int, bytes]:
        missing = [j for j in self._excl_asked if j not in self._excl_seeds]
        if missing:
            why = "; ".join(f"{j}: {self.rejections[j]}" for j in missing if j in self.rejections)
            raise TooFewSurvivors(
                f"clients {missing} did not reveal the pairwise-mask seeds they share with the excluded client(s) "
                f"{sorted(set(self._accused) | set(self.unusable))}, so their masks cannot be taken out of the sum"
                + (f" ({why})" if why else ""),
                sender="server")
        self._finish()
        return {}

    def _read_spilled(self, sender: int) -> np.ndarray:
        offset, length = self._spilled[sender]
        self._spill.flush()
        packed = os.pread(self._spill.fileno(), length, offset)
        bits = self.config.bits
        return (np.frombuffer(packed, dtype=f"<u{bits // 8}") if bits in (32, 64)
                else unpack(packed, bits, self.config.vector_length))

    def _finish(self) -> None:
        cfg = self.config
        ex = MaskExpander(cfg.vector_length, cfg.bits)
        total = self._total
        accused = set(self._accused) | (set(self.unusable) & self._u3)  # out of the sum
        self._need(len(self._u3 - accused), "remain in the sum after the exclusions")
        for u in self._u3_array.tolist():
            if u in accused:  # an excluded dealer's whole masked input comes back out
                np.subtract(total, self._read_spilled(u), out=total)
            else:
                ex.sub_into(total, self._self_seeds[u])
        for v, sk_bytes in self._mask_keys.items():
            sk = X25519PrivateKey.from_private_bytes(sk_bytes)
            for u in self._u2_of[v].tolist():
                if u not in self._u3 or u in accused:
                    continue
                seed = keys.pair_key(sk.exchange(X25519PublicKey.from_public_bytes(self._adv[u].mask_pk)), self.round_id, u, v, keys.MASK)
                # u added sign(u, v) * PRG(s_uv); take it back out.
                (ex.sub_into if u < v else ex.add_into)(total, seed)
        for j, ds in self._excl_asked.items():
            seeds = self._excl_seeds[j]
            for i, D in enumerate(ds):
                # j added sign(j, D) * PRG(s_jD); take it back out with the seed j revealed.
                (ex.sub_into if j < D else ex.add_into)(total, seeds[32 * i : 32 * (i + 1)])
        if cfg.bits not in (32, 64):
            total &= total.dtype.type((1 << cfg.bits) - 1)
        excluded = dict(self.excluded)
        for D, a in self._accused.items():
            excluded[D] = (f"excluded: dealt {a.what} shares inconsistent with its public value (verified proof: "
                           f"{len(a.proof.entries)} shares it signed for clients {[w for w, *_ in a.proof.entries]} "
                           "rebuild another value)")
        for D, why in self.unusable.items():
            how = ("so no share of its secrets was requested; its neighbours in the sum revealed their pairwise-mask "
                   "seeds with it instead")
            excluded[D] = (f"excluded: {why}, {how}" if D in self._u3
                           else f"{excluded.get(D, 'dropped')}; {why}, {how}")
        self.excluded = excluded
        if self._spill is not None:
            self._spill.close()
            self._spill, self._spilled = None, {}
        included = tuple(u for u in self._u3_array.tolist() if u not in accused)
        self.result = ServerResult(total, included, dict(excluded), dict(self.blamed))

    def _dealer_signed(self, owner: int, revealer: int, kind: int, share: bytes, proof: bytes) -> bool:
        adv = self._adv[owner]
        try:
            self._identity_keys[owner].verify(proof[m.DIGEST_BYTES:], keys.revealed_share_payload(
                self._cfg_hash, owner, revealer, adv.commitment, adv.mask_pk, kind, share, proof[: m.DIGEST_BYTES]))
        except InvalidSignature:
            return False
        return True

    @staticmethod
    def _try(t: int, shares: list, check: Callable[[bytes], bool]) -> tuple[bytes | None, list[int] | None]:
        """A secret some t-subset (cyclic windows) rebuilds consistently, else None and one failing window."""
        count = len(shares)
        xs = [w + 1 for w, *_ in shares]
        ys = np.frombuffer(b"".join(b for _, b, _ in shares), dtype="<u4").astype(np.int64).reshape(count, shamir.LIMBS)
        failing = None
        # Cyclic windows of t shares: if one share is bad, a window avoiding it exists once count > t.
        for start in range(min(count, RECONSTRUCTION_ATTEMPTS)):
            idx = [(start + j) % count for j in range(t)]
            try:
                secret = shamir.reconstruct([xs[i] for i in idx], ys[idx])
            except ValueError:
                failing = failing or idx
                continue
            if check(secret):
                return secret, None
            failing = failing or idx
        return None, failing

    def _rebuild(self, owner: int, shares: list[tuple[int, bytes, bytes]], check: Callable[[bytes], bool], what: str,
                 kind: int) -> bytes | _Accused:
        t = self.params.t
        if len(shares) < t:
            raise TooFewSurvivors(
                f"only {len(shares)} shares of the {what} of client {owner} arrived; t={t} are needed", sender="server"
            )
        secret, _ = self._try(t, shares, check)
        if secret is not None:
            return secret
        if not self.active:
            raise ReconstructionError(
                f"the {what} of client {owner} could not be rebuilt consistently with its public value "
                f"({len(shares)} shares, up to {RECONSTRUCTION_ATTEMPTS} subsets tried); aborting rather than return "
                "a wrong sum (a semi-honest round has no dealer signatures to exclude a cheating dealer by)",
                sender=owner,
            )
        # Active: keep only the shares the dealer signed; the others are the revealer's doing.
        valid = []
        for w, share, proof in shares:
            if self._dealer_signed(owner, w, kind, share, proof):
                valid.append((w, share, proof))
            else:
                self.blamed[w] = f"revealed a share of the {what} of client {owner} that client {owner} did not sign"
                self.rejections.setdefault(w, self.blamed[w])
        if len(valid) < t:
            raise TooFewSurvivors(
                f"only {len(valid)} shares of the {what} of client {owner} carry its signature; t={t} are needed",
                sender="server")
        secret, failing = self._try(t, valid, check)
        if secret is not None:
            return secret
        # t shares the dealer signed that miss its public value: the proof that the dealer cheated.
        entries = tuple((valid[i][0], valid[i][1], valid[i][2][: m.DIGEST_BYTES], valid[i][2][m.DIGEST_BYTES:])
                        for i in sorted(failing))
        return _Accused(m.Accusation(owner, kind, entries), what)
