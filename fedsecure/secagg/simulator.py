"""In-process driver of one round: n :class:`SecAggClient` objects and a :class:`SecAggServer`.

Everything travels as bytes through the same ``receive``/``advance`` calls a
real transport would make; the simulator only decides who is silent.
``dropouts[u] = stage`` makes client ``u`` stop at ``stage`` (one of the
server's stages): it sends nothing from that stage on. Every client pins the
server's long-term key and enforces a :class:`ClientPolicy` made of the same
assumptions the parameters were chosen under. With ``workers > 1``
the clients are split over forked worker processes (each owns its clients'
state for the whole round), so their cryptography runs on several cores
while the server stays in this process.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .client import SecAggClient
from .encoding import FixedPointEncoding, IntegerNoise
from .errors import MessageRejected, SecAggError, StageError
from .params import SecAggParams
from .policy import ClientPolicy
from .server import SecAggServer

#: hook for tests: (stage, sender, data) -> list of byte strings actually delivered to the server
Tamper = Callable[[str, int, bytes], list[bytes]]


@dataclass
class RoundReport:
    """Outcome and costs of one simulated round."""

    total: np.ndarray
    ring_sum: np.ndarray
    included: tuple[int, ...]
    excluded: dict[int, str]
    upload_bytes: int
    upload_bytes_by_stage: dict[str, int]
    download_bytes: int
    stage_seconds: dict[str, float]
    client_seconds: float
    server_seconds: float
    client_errors: dict[int, str] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    revealed: dict[int, dict[int, str]] = field(default_factory=dict)
    #: clients that revealed shares their dealer did not sign (active mode; those shares were discarded)
    blamed: dict[int, str] = field(default_factory=dict)
    #: bytes the server sent, by the stage whose messages they are (``advertise_keys``: the configuration)
    download_bytes_by_stage: dict[str, int] = field(default_factory=dict)


class _Clients:
    """Clients owned by this process."""

    def __init__(self, ids, vectors, identity, identity_pub, noise, policy):
        self.clients = {
            u: SecAggClient(u, None if vectors is None else vectors[u], policy=policy,
                            identity_key=identity.get(u) if identity else None, identity_keys=identity_pub, noise=noise)
            for u in ids
        }

    def deliver(self, inbox: Mapping[int, bytes]) -> tuple[dict[int, bytes], dict[int, str], float]:
        out, errors = {}, {}
        t0 = time.process_time()
        for u, data in inbox.items():
            try:
                replies = self.clients[u].receive(data)
            except SecAggError as e:
                errors[u] = str(e)
                continue
            if replies:
                out[u] = replies[0]
        return out, errors, time.process_time() - t0

    def deliver_input(self, u: int, vector: np.ndarray, data: bytes) -> tuple[dict[int, bytes], dict[int, str], float]:
        """Give client ``u`` its input, then the message that asks for its masked input; nothing is kept of it."""
        t0 = time.process_time()
        try:
            self.clients[u].set_input(vector)
        except SecAggError as e:
            return {}, {u: str(e)}, time.process_time() - t0
        out, errors, secs = self.deliver({u: data})
        return out, errors, secs + time.process_time() - t0

    def revealed(self) -> dict[int, dict[int, str]]:
        return {u: dict(c.revealed) for u, c in self.clients.items()}


def _worker(conn, ids, vectors, identity, identity_pub, noise, policy) -> None:
    clients = _Clients(ids, vectors, identity, identity_pub, noise, policy)
    while True:
        cmd, arg = conn.recv()
        if cmd == "deliver":
            conn.send(clients.deliver(arg))
        elif cmd == "input":
            conn.send(clients.deliver_input(*arg))
        elif cmd == "revealed":
            conn.send(clients.revealed())
        else:
            conn.close()
            return


class _Pool:
    """Clients split over forked processes; same interface as :class:`_Clients`."""

    def __init__(self, workers, ids, vectors, identity, identity_pub, noise, policy):
        ctx = mp.get_context("fork")
        self.shards = [ids[i::workers] for i in range(workers)]
        self.owner = {u: i for i, shard in enumerate(self.shards) for u in shard}
        self.conns, self.procs = [], []
        for shard in self.shards:
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(b, shard, vectors, identity, identity_pub, noise, policy), daemon=True)
            p.start()
            b.close()
            self.conns.append(a)
            self.procs.append(p)

    def deliver(self, inbox):
        parts = [dict() for _ in self.shards]
        for u, data in inbox.items():
            parts[self.owner[u]][u] = data
        for conn, part in zip(self.conns, parts):
            conn.send(("deliver", part))
        out, errors, secs = {}, {}, 0.0
        for conn in self.conns:
            o, e, s = conn.recv()
            out.update(o)
            errors.update(e)
            secs += s
        return out, errors, secs

    def deliver_input(self, u, vector, data):
        conn = self.conns[self.owner[u]]
        conn.send(("input", (u, vector, data)))
        return conn.recv()

    def revealed(self):
        res = {}
        for conn in self.conns:
            conn.send(("revealed", None))
        for conn in self.conns:
            res.update(conn.recv())
        return res

    def close(self):
        for conn, p in zip(self.conns, self.procs):
            try:
                conn.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
            p.join(timeout=5)


class SimulatedRound:
    """One round driven stage by stage: inputs given up front (:func:`run_round`) or one client at a time.

    Streamed (``vectors=None``): :meth:`open` runs the key exchange
    (``advertise_keys``, ``seed_reveal``, ``share_keys``) with clients that
    hold no input yet; :meth:`add` then gives one client its input (the
    late-input path, :meth:`SecAggClient.set_input`), has it answer the
    forwarded shares with its masked input, and hands that to the server,
    which adds it into its running sum; nothing of the input is kept.
    :meth:`finish` runs the unmasking. The server thus holds one masked sum
    (plus the shares and keys unmasking needs), never the clients' inputs.
    """

    def __init__(
        self,
        ids: list[int],
        vector_length: int,
        params: SecAggParams,
        encoding: FixedPointEncoding,
        *,
        vectors: Mapping[int, np.ndarray] | None = None,
        dropouts: Mapping[int, str] | None = None,
        active: bool = False,
        noise: IntegerNoise | None = None,
        workers: int = 1,
        tamper: Tamper | None = None,
        policy: ClientPolicy | None = None,
    ) -> None:
        self.ids = ids
        self.encoding = encoding
        self.dropouts = dict(dropouts or {})
        self.tamper = tamper
        identity = identity_pub = None
        if active:
            identity = {u: Ed25519PrivateKey.generate() for u in ids}
            identity_pub = {u: k.public_key() for u, k in identity.items()}
        self.server = server = SecAggServer(ids, vector_length, params, encoding, active=active,
                                            identity_keys=identity_pub, signing_key=Ed25519PrivateKey.generate())
        if policy is not None:  # the caller's client policy, pinned to this server
            policy = dataclasses.replace(policy, server_key=server.public_key)
        else:
            policy = ClientPolicy(
                threat_model="active" if active else "semi-honest", corrupt_fraction=params.corrupt_fraction,
                dropout_rate=params.dropout_rate, min_colluders=params.min_colluders,
                privacy_target=params.privacy_target, server_key=server.public_key,
            )
        unknown = {s for s in self.dropouts.values() if s not in server.stages}
        if unknown:
            raise ValueError(f"unknown dropout stage(s) {sorted(unknown)}; stages are {server.stages}")
        self.drop_at = {u: server.stages.index(s) for u, s in self.dropouts.items()}
        self.pool = (_Pool(workers, ids, vectors, identity, identity_pub, noise, policy) if workers > 1
                     else _Clients(ids, vectors, identity, identity_pub, noise, policy))
        self.stage_seconds: dict[str, float] = {}
        self.client_s = self.server_s = 0.0
        self.client_errors: dict[int, str] = {}
        self.rejected: list[tuple[int, str]] = []
        self.download = len(server.config_message) * len(ids)
        self.download_by_stage: dict[str, int] = {"advertise_keys": self.download}
        self.inbox: dict[int, bytes] = {u: server.config_message for u in ids}
        self.streamed = vectors is None
        self._inputs_given: set[int] = set()

    def _live(self, u: int) -> bool:
        """Whether client ``u`` still answers in the current stage."""
        return self.drop_at.get(u, len(self.server.stages)) > self.server.stages.index(self.server.stage)

    def _receive(self, stage: str, replies: Mapping[int, bytes]) -> None:
        for u, data in replies.items():
            for item in (self.tamper(stage, u, data) if self.tamper else [data]):
                try:
                    self.server.receive(u, item)
                except MessageRejected as e:
                    self.rejected.append((u, str(e)))

    def _account(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def _advance(self, stage: str) -> None:
        """Close the current stage; what the server sends next goes into the inbox."""
        t0 = time.process_time()
        self.inbox = self.server.advance()
        ssec = time.process_time() - t0
        self.server_s += ssec
        self._account(stage, ssec)
        sent = sum(len(v) for v in self.inbox.values())
        self.download += sent
        if self.inbox:
            nxt = self.server.stage
            self.download_by_stage[nxt] = self.download_by_stage.get(nxt, 0) + sent

    def step(self) -> None:
        """Run the current stage: deliver the inbox to the clients still answering, close the stage.

        Masked inputs go to the server a few clients at a time (``4 x workers``), so this process never
        holds more than that many masked vectors whatever the round's n."""
        server = self.server
        stage = server.stage
        live = [(u, msg) for u, msg in self.inbox.items() if self._live(u)]
        chunk = 4 * len(self.pool.shards) if isinstance(self.pool, _Pool) else 1
        batches = ([dict(live[i : i + chunk]) for i in range(0, len(live), chunk)] if stage == "masked_input"
                   else [dict(live)])
        for batch in batches:
            replies, errors, csec = self.pool.deliver(batch)
            self.client_errors.update(errors)
            self.client_s += csec
            t0 = time.process_time()
            self._receive(stage, replies)
            del replies
            ssec = time.process_time() - t0
            self.server_s += ssec
            self._account(stage, csec + ssec)
        self._advance(stage)

    def open(self) -> None:
        """Run the stages before the masked inputs (the clients need no input for them)."""
        while self.server.stage not in ("masked_input", "done"):
            self.step()
        if self.server.stage != "masked_input":
            raise StageError("the round ended before the masked inputs", sender="server")

    def add(self, u: int, vector: np.ndarray) -> None:
        """Client ``u``'s input: it masks it and the server adds the masked vector to its sum (streamed rounds)."""
        server = self.server
        if server.stage != "masked_input":
            raise StageError(f"client inputs are taken in stage 'masked_input', not {server.stage!r}", sender="server")
        if u in self._inputs_given:
            raise ValueError(f"client {u}'s input was already given")
        self._inputs_given.add(u)
        data = self.inbox.pop(u, None)
        if data is None or not self._live(u):  # dropped earlier, or drops now: its input never leaves it
            return
        replies, errors, csec = self.pool.deliver_input(u, vector, data)
        self.client_errors.update(errors)
        self.client_s += csec
        t0 = time.process_time()
        self._receive("masked_input", replies)
        ssec = time.process_time() - t0
        self.server_s += ssec
        self._account("masked_input", csec + ssec)

    def finish(self) -> RoundReport:
        """Run the remaining stages (a client never given its input sends no masked input); the report."""
        server = self.server
        try:
            if server.stage == "masked_input" and self.streamed:
                for u in self.inbox:
                    if self._live(u) and u not in self._inputs_given:
                        self.client_errors[u] = "no input was given to this client"
                self.inbox = {}
                self._advance("masked_input")
            while server.stage != "done":
                self.step()
            revealed = self.pool.revealed()
        finally:
            self.close()
        res = server.result
        excluded = dict(res.excluded)
        included = set(res.included)
        for u, s in self.dropouts.items():
            # A client that dropped at unmasking had already sent its input: it is in the sum, not excluded.
            if u in server._roster_set and u not in included:
                excluded.setdefault(u, f"dropped at {s}")
        return RoundReport(
            total=self.encoding.decode(res.ring_sum), ring_sum=res.ring_sum, included=res.included, excluded=excluded,
            upload_bytes=server.bytes_received, upload_bytes_by_stage=dict(server.bytes_received_by_stage),
            download_bytes=self.download, download_bytes_by_stage=dict(self.download_by_stage),
            stage_seconds=self.stage_seconds, client_seconds=self.client_s, server_seconds=self.server_s,
            client_errors=self.client_errors, rejected=self.rejected, revealed=revealed, blamed=dict(res.blamed),
        )

    def close(self) -> None:
        """Stop the worker processes (a round abandoned half-way must be closed)."""
        if isinstance(self.pool, _Pool):
            self.pool.close()


def run_round(
    vectors: Mapping[int, np.ndarray],
    params: SecAggParams,
    encoding: FixedPointEncoding,
    *,
    vector_length: int | None = None,
    dropouts: Mapping[int, str] | None = None,
    active: bool = False,
    noise: IntegerNoise | None = None,
    workers: int = 1,
    tamper: Tamper | None = None,
    policy: ClientPolicy | None = None,
) -> RoundReport:
    """Run one full round; return the decoded sum over the included clients and the costs.

    Raises :class:`TooFewSurvivors` (an :class:`AggregationError`) when the
    round cannot finish correctly. ``policy`` (default: the assumptions
    ``params`` were chosen under) is what every client requires; its
    ``server_key`` is set to the server's.
    """
    ids = sorted(int(u) for u in vectors.keys())
    d = int(vector_length if vector_length is not None else np.asarray(vectors[ids[0]]).size)
    sim = SimulatedRound(ids, d, params, encoding, vectors=vectors, dropouts=dropouts, active=active, noise=noise,
                         workers=workers, tamper=tamper, policy=policy)
    try:
        while sim.server.stage != "done":
            sim.step()
    except BaseException:
        sim.close()
        raise
    return sim.finish()
