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
from .errors import MessageRejected, SecAggError
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


class _Clients:
    """Clients owned by this process."""

    def __init__(self, ids, vectors, identity, identity_pub, noise, policy):
        self.clients = {
            u: SecAggClient(u, vectors[u], policy=policy, identity_key=identity.get(u) if identity else None,
                            identity_keys=identity_pub, noise=noise)
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

    def revealed(self) -> dict[int, dict[int, str]]:
        return {u: dict(c.revealed) for u, c in self.clients.items()}


def _worker(conn, ids, vectors, identity, identity_pub, noise, policy) -> None:
    clients = _Clients(ids, vectors, identity, identity_pub, noise, policy)
    while True:
        cmd, arg = conn.recv()
        if cmd == "deliver":
            conn.send(clients.deliver(arg))
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
    dropouts = dict(dropouts or {})
    identity = identity_pub = None
    if active:
        identity = {u: Ed25519PrivateKey.generate() for u in ids}
        identity_pub = {u: k.public_key() for u, k in identity.items()}
    server = SecAggServer(ids, d, params, encoding, active=active, identity_keys=identity_pub,
                          signing_key=Ed25519PrivateKey.generate())
    if policy is not None:  # the caller's client policy, pinned to this server
        policy = dataclasses.replace(policy, server_key=server.public_key)
    else:
        policy = ClientPolicy(
            threat_model="active" if active else "semi-honest", corrupt_fraction=params.corrupt_fraction,
            dropout_rate=params.dropout_rate, min_colluders=params.min_colluders,
            privacy_target=params.privacy_target, server_key=server.public_key,
        )
    unknown = {s for s in dropouts.values() if s not in server.stages}
    if unknown:
        raise ValueError(f"unknown dropout stage(s) {sorted(unknown)}; stages are {server.stages}")
    drop_at = {u: server.stages.index(s) for u, s in dropouts.items()}
    pool = (_Pool(workers, ids, vectors, identity, identity_pub, noise, policy) if workers > 1
            else _Clients(ids, vectors, identity, identity_pub, noise, policy))
    stage_seconds: dict[str, float] = {}
    client_s = server_s = 0.0
    client_errors: dict[int, str] = {}
    rejected: list[tuple[int, str]] = []
    download = len(server.config_message) * len(ids)
    inbox = {u: server.config_message for u in ids}
    try:
        while server.stage != "done":
            stage = server.stage
            i = server.stages.index(stage)
            live = {u: msg for u, msg in inbox.items() if drop_at.get(u, len(server.stages)) > i}
            replies, errors, csec = pool.deliver(live)
            client_errors.update(errors)
            t0 = time.process_time()
            for u, data in replies.items():
                for item in (tamper(stage, u, data) if tamper else [data]):
                    try:
                        server.receive(u, item)
                    except MessageRejected as e:
                        rejected.append((u, str(e)))
            inbox = server.advance()
            ssec = time.process_time() - t0
            download += sum(len(v) for v in inbox.values())
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + csec + ssec
            client_s += csec
            server_s += ssec
        revealed = pool.revealed()
    finally:
        if isinstance(pool, _Pool):
            pool.close()
    res = server.result
    excluded = dict(res.excluded)
    included = set(res.included)
    for u, s in dropouts.items():
        # A client that dropped at unmasking had already sent its input: it is in the sum, not excluded.
        if u in server._roster_set and u not in included:
            excluded.setdefault(u, f"dropped at {s}")
    return RoundReport(
        total=encoding.decode(res.ring_sum), ring_sum=res.ring_sum, included=res.included, excluded=excluded,
        upload_bytes=server.bytes_received, upload_bytes_by_stage=dict(server.bytes_received_by_stage),
        download_bytes=download, stage_seconds=stage_seconds,
        client_seconds=client_s, server_seconds=server_s, client_errors=client_errors, rejected=rejected,
        revealed=revealed, blamed=dict(res.blamed),
    )
