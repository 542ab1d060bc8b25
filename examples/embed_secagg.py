"""Embed fedsecure's secure aggregation in your own system: one round over TCP between separate processes.

One server process and ``--clients`` client processes, each its own OS
process, talk over loopback TCP (``multiprocessing.connection``, with an
HMAC-authenticated handshake standing in for your transport's
authentication). Every protocol message is an opaque ``bytes`` object: the
transport only frames and delivers it. The event flow is the one in
``docs/embedding.md``:

1. the server broadcasts ``server.config_message`` (signed by its long-term
   key, which each client pins in its :class:`ClientPolicy`);
2. each client answers every message it gets with ``client.receive(data)``
   (a list of 0 or 1 byte strings to send back);
3. the server feeds each reply to ``server.receive(sender, data)`` and, when
   the stage's deadline passes, calls ``server.advance()`` for the next
   stage's messages; a client that sent nothing in time *is* a dropout;
4. when ``server.stage == "done"``: ``server.encoding.decode(server.result.ring_sum)``.

``--drop k`` makes ``k`` clients exit after dealing their key shares (before
they send a masked input), so the server must rebuild their masking keys
from the survivors' shares and take their pairwise masks out. The script
prints one JSON line with the decoded sum's error against the plaintext sum
of the included clients and exits 1 if it exceeds the quantization bound.

    python examples/embed_secagg.py --clients 8 --dim 10000 --drop 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import threading
import time
from multiprocessing.connection import Client, Listener, wait

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedsecure.secagg import (
    ClientPolicy,
    FixedPointEncoding,
    MessageRejected,
    SecAggClient,
    SecAggError,
    SecAggServer,
    TooFewSurvivors,
    choose_params,
)

AUTHKEY = b"example transport key"  # the transport's own authentication, not fedsecure's


def client_vector(client_id: int, dim: int) -> np.ndarray:
    """Each client's private input (reproducible here only so the parent can check the sum)."""
    return np.random.default_rng(1000 + client_id).uniform(-1.0, 1.0, dim)


def run_client(client_id: int, dim: int, address, server_pub: bytes, drop_after_shares: bool) -> None:
    # The client's own policy: semi-honest, 10% dropout assumed, and the server key pinned out of band.
    policy = ClientPolicy(dropout_rate=0.1, server_key=Ed25519PublicKey.from_public_bytes(server_pub))
    client = SecAggClient(client_id, client_vector(client_id, dim), policy=policy)
    with Client(address, authkey=AUTHKEY) as conn:
        conn.send_bytes(client_id.to_bytes(4, "big"))  # hello: who I am (your transport authenticates this)
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:  # the server closed the round
                return
            try:
                replies = client.receive(data)
            except SecAggError as e:  # refused (bad, forged, out-of-stage or policy-violating message)
                print(f"client {client_id}: {e}", file=sys.stderr)
                continue  # nothing changed; the right message may still come
            for reply in replies:
                conn.send_bytes(reply)
            if drop_after_shares and client.stage == "shares":
                return  # simulated crash after dealing its key shares, before sending its masked input


def accept_clients(listener: Listener, n: int, timeout: float) -> dict:
    """The clients that connect (and say hello) within ``timeout``: this round's roster."""
    arrived: queue.Queue = queue.Queue()

    def accept_loop() -> None:
        while True:
            try:
                arrived.put(listener.accept())
            except OSError:  # listener closed
                return

    threading.Thread(target=accept_loop, daemon=True).start()
    conns, deadline = {}, time.monotonic() + timeout
    while len(conns) < n:
        try:
            conn = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if conn.poll(max(0.0, deadline - time.monotonic())):
            conns[int.from_bytes(conn.recv_bytes(), "big")] = conn
    return conns


def run_server(n: int, dim: int, listener: Listener, signing_key: Ed25519PrivateKey, stage_timeout: float) -> dict:
    conns = accept_clients(listener, n, timeout=60.0)  # whoever connected in time is on the roster
    roster = sorted(conns)
    n = len(roster)
    if n < 3:
        return {"ok": False, "error": f"only {n} clients connected"}
    params = choose_params(n, graph="sparse", dropout_rate=0.1)  # k, t for n clients at 10% dropout
    encoding = FixedPointEncoding.for_sum(n, clip=1.0)  # inputs in [-1, 1], 32-bit ring, no wrap for n
    server = SecAggServer(roster, dim, params, encoding, signing_key=signing_key)
    outbox = {u: server.config_message for u in roster}  # the first message of every round
    rejected = []
    while server.stage != "done":
        waiting = {}
        for u, data in outbox.items():
            try:
                conns[u].send_bytes(data)
                waiting[conns[u]] = u
            except OSError:
                pass  # gone: it will count as a dropout when the stage closes
        deadline = time.monotonic() + stage_timeout
        while waiting and time.monotonic() < deadline:
            for conn in wait(list(waiting), timeout=max(0.0, deadline - time.monotonic())):
                u = waiting.pop(conn)
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    continue  # the client dropped
                try:
                    server.receive(u, data)  # u: the id the transport authenticated
                except MessageRejected as e:
                    rejected.append(str(e))  # nothing accepted is lost; u is treated as silent
        try:
            outbox = server.advance()  # close the stage: the silent clients are dropouts from here on
        except TooFewSurvivors as e:
            for conn in conns.values():
                conn.close()
            return {"ok": False, "error": str(e)}
    for conn in conns.values():
        conn.close()
    res = server.result
    total = server.encoding.decode(res.ring_sum)
    expected = sum(client_vector(u, dim) for u in res.included)
    err = float(np.max(np.abs(total - expected)))
    bound = encoding.max_error(len(res.included))
    return {
        "ok": err <= bound, "clients": n, "dim": dim, "k": params.k, "t": params.t,
        "included": list(res.included), "excluded": {str(u): why for u, why in res.excluded.items()},
        "max_abs_error": err, "error_bound": bound, "rejected": rejected,
        "upload_bytes": server.bytes_received, "download_bytes": server.bytes_sent,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--drop", type=int, default=1, help="clients that crash after dealing shares, before their masked input")
    ap.add_argument("--stage-timeout", type=float, default=20.0, help="seconds the server waits per stage")
    args = ap.parse_args(argv)
    signing_key = Ed25519PrivateKey.generate()  # the server's long-term key; clients pin its public half
    server_pub = signing_key.public_key().public_bytes_raw()
    listener = Listener(("127.0.0.1", 0), authkey=AUTHKEY)
    ctx = mp.get_context("spawn")  # separate interpreters: nothing shared but the socket
    procs = [ctx.Process(target=run_client, args=(u, args.dim, listener.address, server_pub, u < args.drop))
             for u in range(args.clients)]
    for p in procs:
        p.start()
    try:
        report = run_server(args.clients, args.dim, listener, signing_key, args.stage_timeout)
    finally:
        listener.close()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
