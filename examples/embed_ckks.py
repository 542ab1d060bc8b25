"""Embed fedsecure's CKKS summation in your own system: one round over TCP between separate processes.

Three roles, each its own OS process (``--clients`` client processes), over
loopback TCP (``multiprocessing.connection``; its HMAC handshake stands in
for your transport's authentication). Every message is opaque ``bytes``:

* the **key holder** (the decryptor; never the aggregator) creates the keys,
  pins each client's registration, hands clients the *public context* and the
  aggregator the *aggregator context* plus the registrations, and decrypts
  one aggregate per round id;
* each **client** sends its registration once, receives the public context,
  then per round encrypts its vector for the round id the aggregator
  announces and sends the contribution bytes to the aggregator;
* the **aggregator** adds each contribution as it arrives
  (``StreamingAggregator.add(blob, sender=id)``, refusing bad ones without
  losing the sum), and after the deadline sends ``aggregate()`` to the key
  holder, which returns the flooded sum. A client that sent nothing in time is
  simply not in the sum.

``--drop k``: ``k`` clients never send their contribution. The script prints
one JSON line with the error of the released sum against the plaintext sum of
the included clients, and exits 1 if it exceeds the key holder's stated bound.

    python examples/embed_ckks.py --clients 5 --dim 5000 --drop 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import struct
import sys
import threading
import time
from multiprocessing.connection import Client, Listener, wait

import numpy as np

from fedsecure.ckks import (
    CKKSError,
    ClientEncryptor,
    ClientIdentity,
    ClientRegistration,
    ContributionError,
    KeyHolder,
    StreamingAggregator,
)

AUTHKEY = b"example transport key"  # the transport's own authentication, not fedsecure's
REG = struct.Struct(">q32s32s")  # a registration on the wire: id, X25519 public, Ed25519 public


def client_vector(client_id: int, dim: int) -> np.ndarray:
    return np.random.default_rng(2000 + client_id).uniform(-1.0, 1.0, dim)


def reg_bytes(r: ClientRegistration) -> bytes:
    return REG.pack(r.client_id, r.exchange_public, r.signing_public)


def reg_from(data: bytes) -> ClientRegistration:
    return ClientRegistration(*REG.unpack(data))


def accept_within(listener: Listener, n: int, timeout: float) -> list:
    """Up to ``n`` connections accepted within ``timeout`` seconds (a registration window, not a hang)."""
    arrived: queue.Queue = queue.Queue()

    def accept_loop() -> None:
        while True:
            try:
                arrived.put(listener.accept())
            except OSError:  # listener closed
                return

    threading.Thread(target=accept_loop, daemon=True).start()
    conns, deadline = [], time.monotonic() + timeout
    while len(conns) < n:
        try:
            conns.append(arrived.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    return conns


def run_client(client_id: int, dim: int, kh_addr, agg_addr, drop: bool) -> None:
    identity = ClientIdentity(client_id)  # long-term keys, from the OS
    with Client(kh_addr, authkey=AUTHKEY) as kh:  # register once with the key holder
        kh.send_bytes(reg_bytes(identity.registration))
        public_context = kh.recv_bytes()
    encryptor = ClientEncryptor(public_context, identity)
    with Client(agg_addr, authkey=AUTHKEY) as agg:
        agg.send_bytes(struct.pack(">q", client_id))  # hello
        round_id = agg.recv_bytes()  # the aggregator announces the round
        if drop:
            return  # crashes before contributing
        agg.send_bytes(encryptor.encrypt(client_vector(client_id, dim), round_id=round_id))
        try:
            agg.recv_bytes()  # wait until the aggregator closes the round
        except EOFError:
            pass


def run_key_holder(n: int, listener: Listener, to_aggregator) -> None:
    holder = KeyHolder(min_contributions=2, max_abs_input=1.0)  # refuses aggregates of fewer than 2 clients
    for conn in accept_within(listener, n, timeout=60.0):
        with conn:
            if conn.poll(10.0):
                holder.register(reg_from(conn.recv_bytes()))  # pins the client's two public keys
                conn.send_bytes(holder.public_context())
    to_aggregator.send_bytes(holder.aggregator_context())
    to_aggregator.send_bytes(b"".join(reg_bytes(r) for r in holder.registrations))
    aggregate = to_aggregator.recv_bytes()
    try:
        # One decryption per round id, only with verified evidence of >= min_contributions registered clients.
        release = holder.decrypt_groups([aggregate])
        total = release.total
        to_aggregator.send_bytes(b"ok" + total.astype("<f8").tobytes())
        to_aggregator.send_bytes(struct.pack(">d", holder.error_bound(len(release.contributors), total.size)))
    except CKKSError as e:
        to_aggregator.send_bytes(b"no" + str(e).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--dim", type=int, default=5000)
    ap.add_argument("--drop", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds the aggregator waits for contributions")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")  # separate interpreters: nothing shared but sockets
    agg_listener = Listener(("127.0.0.1", 0), authkey=AUTHKEY)  # this process is the aggregator
    link_listener = Listener(("127.0.0.1", 0), authkey=AUTHKEY)  # the key holder dials the aggregator
    holder = ctx.Process(target=_key_holder_main, args=(args.clients, link_listener.address))
    holder.start()
    procs = [holder]
    try:
        kh = link_listener.accept()
        kh_address = kh.recv()  # where clients register with the key holder
        for u in range(args.clients):
            p = ctx.Process(target=run_client, args=(u, args.dim, kh_address, agg_listener.address, u < args.drop))
            p.start()
            procs.append(p)
        report = run_aggregator(args, agg_listener, kh)
    finally:
        agg_listener.close()
        link_listener.close()
        for p in procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


def _key_holder_main(n: int, link_address) -> None:
    with Listener(("127.0.0.1", 0), authkey=AUTHKEY) as listener, Client(link_address, authkey=AUTHKEY) as link:
        link.send(listener.address)
        run_key_holder(n, listener, link)


def run_aggregator(args, listener: Listener, kh) -> dict:
    """This process plays the aggregator (the server); ``kh`` is its connection to the key holder."""
    aggregator_context = kh.recv_bytes()  # arrives once every client has registered
    raw = kh.recv_bytes()
    regs = [reg_from(raw[i : i + REG.size]) for i in range(0, len(raw), REG.size)]
    round_id = os.urandom(16)
    agg = StreamingAggregator(aggregator_context, args.dim, round_id=round_id, clients=regs)
    conns = {conn: struct.unpack(">q", conn.recv_bytes())[0]
             for conn in accept_within(listener, args.clients, timeout=60.0) if conn.poll(10.0)}
    for conn in conns:
        conn.send_bytes(round_id)
    rejected, waiting = [], dict(conns)
    deadline = time.monotonic() + args.timeout
    while waiting and time.monotonic() < deadline:
        for conn in wait(list(waiting), timeout=max(0.0, deadline - time.monotonic())):
            sender = waiting.pop(conn)
            try:
                blob = conn.recv_bytes()
            except (EOFError, OSError):
                continue  # dropped
            try:
                agg.add(blob, sender=sender)  # sender: the id your transport authenticated
            except ContributionError as e:
                rejected.append(str(e))  # the sum so far is untouched
    kh.send_bytes(agg.aggregate())
    answer = kh.recv_bytes()
    for conn in conns:
        conn.close()
    kh_bound = struct.unpack(">d", kh.recv_bytes())[0] if answer[:2] == b"ok" else None
    kh.close()
    if answer[:2] != b"ok":
        return {"ok": False, "error": answer[2:].decode()}
    total = np.frombuffer(answer[2:], dtype="<f8")
    expected = sum(client_vector(u, args.dim) for u in agg.contributors)
    err = float(np.max(np.abs(total - expected)))
    return {"ok": err <= kh_bound, "clients": args.clients, "dim": args.dim, "included": sorted(agg.contributors),
            "max_abs_error": err, "error_bound": kh_bound, "rejected": rejected}


if __name__ == "__main__":
    sys.exit(main())
