"""The protocol benchmark behind ``fedsecure bench``: every protection mode on one workload, in one process.

Modes (:data:`MODES`): ``plaintext`` (float32 vectors summed in float64),
``secagg`` (fedsecure's pairwise masking on the complete graph, Bonawitz et
al. 2017), ``secagg+`` (the sparse Harary graph of Bell et al. 2020 with the
``k``, ``t`` that :func:`fedsecure.secagg.choose_params` picks), ``ckks``
(fedsecure's threshold-free CKKS summation: clients, streaming aggregator, key
holder) and ``flower-secagg+`` (Flower's own ``SecAggPlusWorkflow`` and
``secaggplus_mod``, driven through :class:`DirectGrid`, an in-process
transport; needs ``flwr``). Each round drives the real protocol objects; the
only thing written here is the measurement.

Workload: client ``u`` holds ``pool[u : u + d]`` of one float32 pool uniform
in [-1, 1] (distinct per client, nothing to generate per round, so input
generation is in no one's cost). Dropout: a random ``dropout`` fraction of the
clients (a benchmark scenario drawn with numpy, not secret randomness) stop
after sending their keys and shares, before their input -- the stage that
forces the server to unmask for them (SecAgg), to halt or recover (Flower), or
simply to sum fewer (plaintext, CKKS). A round that cannot complete is a row
with ``completed = false`` and the reason; it is never left out.

Per round: per-client CPU seconds (all clients' CPU / n), server CPU seconds,
bytes up and down per client (the aggregation protocol's messages only, not
the model download every mode shares), the server role's peak memory, and the
max abs error of the decoded sum against the exact float64 sum of the
included clients' inputs, beside each mode's stated bound.

Server peak memory (:class:`RoleMeter`) is the growth of this process's
peak resident set while the server role runs, over its resident set when the
round began (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` as each
server span starts, after glibc's ``malloc_trim`` hands freed pages back so that
reused memory shows up as growth): no slowdown, and it sees every allocator
(numpy, SEAL).
Client work happens outside the measured spans; what a client hands to the
server (its message) is counted. SecAgg rounds run their clients in two forked
worker processes (``run_round(workers=2)``), so the parent holds the server and
the one stage of messages the simulator buffers before the server reads them.
Growth below about 1 MiB is allocator noise. Where ``clear_refs`` cannot be
written, tracemalloc is used instead (Python and numpy only, and several times
slower: its timings are not comparable); the JSON says which.
"""

from __future__ import annotations

import copy
import functools
import csv
import io
import json
import math
import os
import platform
import sys
import time
import tracemalloc
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("plaintext", "secagg", "secagg+", "ckks", "flower-secagg+")
#: cost columns plotted against n and against d
PLOTTED = (("client_cpu_seconds", "CPU seconds per client"), ("server_cpu_seconds", "server CPU seconds"),
           ("bytes_up_per_client", "bytes up per client"), ("bytes_down_per_client", "bytes down per client"),
           ("server_peak_bytes", "server peak memory (bytes, RSS growth)"))
MEMORY_METHOD = ("two bounds on what the server role holds, from the process's resident set (Linux VmRSS / VmHWM, "
                 "the peak reset by /proc/self/clear_refs as each role starts; glibc's free pages trimmed at every "
                 "role switch): server_peak_bytes counts each server span's peak above the resident set at its "
                 "start plus the net growth of the server's earlier spans, so memory the simulated clients keep "
                 "(their keys, contexts, a shared SEAL pool) is not charged, but neither is a message a client "
                 "allocates and the server keeps (Flower's workflow keeps every client's masked vector): a lower "
                 "bound; server_peak_upper_bytes counts the resident set's growth since the round began at any "
                 "server span, clients' leftovers included: an upper bound. SecAgg's clients run in 2 forked "
                 "workers (outside both). Growth under about 1 MiB is allocator noise. Where clear_refs is "
                 "unavailable: the same with tracemalloc (Python/numpy only)")
#: Flower's SecAggPlusWorkflow defaults (flwr 1.42) and its example's ring
FLOWER_SHARES, FLOWER_THRESHOLD = 3, 2
FLOWER_CLIPPING_RANGE, FLOWER_QUANTIZATION_RANGE, FLOWER_MAX_WEIGHT = 8.0, 2**22, 1000.0
SECAGG_WORKERS = 2


class BenchOptionError(ValueError):
    """A bad ``fedsecure bench`` option; the message names it."""


# ---------------------------------------------------------------- option parsers


def _items(text: str, option: str) -> list[str]:
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(p == "" for p in parts):
        raise BenchOptionError(f"{option}: expected a comma-separated list such as 10,100,1000, got {text!r}")
    return parts


def parse_sizes(text: str, option: str, *, low: int = 1) -> list[int]:
    """``"10,1e4,100000"`` -> ``[10, 10000, 100000]``: whole numbers >= ``low``, scientific notation allowed."""
    out = []
    for p in _items(text, option):
        try:
            value = float(p)
        except ValueError:
            raise BenchOptionError(f"{option}: {p!r} is not a number (expected whole numbers >= {low}, "
                                   "comma-separated, such as 10,1e4)") from None
        if not math.isfinite(value) or not value.is_integer():
            raise BenchOptionError(f"{option}: {p!r} is not a whole number (expected whole numbers >= {low})")
        if value < low:
            raise BenchOptionError(f"{option}: {p} is below {low} (expected whole numbers >= {low})")
        if value > 1e9:
            raise BenchOptionError(f"{option}: {p} is above 1e9, too large to benchmark on one machine")
        out.append(int(value))
    return sorted(set(out))


def parse_dropouts(text: str, option: str = "--dropout") -> list[float]:
    """``"0,0.1"`` -> ``[0.0, 0.1]``: fractions in [0, 1)."""
    out = []
    for p in _items(text, option):
        try:
            value = float(p)
        except ValueError:
            raise BenchOptionError(f"{option}: {p!r} is not a number (expected fractions in [0, 1), "
                                   "comma-separated, such as 0,0.1)") from None
        if not (0.0 <= value < 1.0):
            raise BenchOptionError(f"{option}: {p} is outside [0, 1) (the fraction of clients that drop)")
        out.append(value)
    return sorted(set(out))


def parse_modes(text: str, option: str = "--modes") -> list[str]:
    out = []
    for p in _items(text, option):
        if p not in MODES:
            raise BenchOptionError(f"{option}: unknown mode {p!r}; choose from {', '.join(MODES)}")
        if p not in out:
            out.append(p)
    return out


# ---------------------------------------------------------------- measurement


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset this process's peak RSS (Linux >= 4.0)
        f.write("5")


@functools.cache
def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): hand freed heap pages back, so the next allocation shows up in RSS again."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


@functools.cache
def rss_peak_available() -> bool:
    try:
        _reset_peak_rss()
        _status_kib("VmHWM")
    except OSError:
        return False
    return True


def _stop_tracing_in_child() -> None:
    if tracemalloc.is_tracing():
        tracemalloc.stop()


_FORK_HOOK = False


def _untraced_forks() -> None:
    """Forked client workers must not trace (nor pay for it): their allocations are not the server's."""
    global _FORK_HOOK
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_stop_tracing_in_child)
        _FORK_HOOK = True


class RoleMeter:
    """CPU seconds per role and the server role's peak memory, within one round.

    ``with meter.role("server"): ...`` charges the CPU time to the innermost
    role; a nested ``role("client")`` inside the server's work pauses it.
    Memory (``method``): ``"rss"`` (default where Linux allows it): what the
    server role holds, from the resident set: each server span's peak
    (``VmHWM``, reset when the span starts) above the resident set at its
    start, plus the net growth of the server's earlier spans (what it kept);
    the clients' spans are not counted, whatever they keep (the simulated
    clients' own keys and contexts live in the same process). It costs
    nothing and sees every allocator (numpy, SEAL), but memory the allocator
    reuses from freed pages is not growth, so small peaks (under about a MiB)
    are noise. ``"tracemalloc"``: the same accounting over Python and numpy
    allocations only, and it slows the round several times (measured: server CPU 5-8x in
    SecAgg and Flower), so its timings are not comparable.
    """

    def __init__(self, *, method: str | None = None) -> None:
        self.method = method or ("rss" if rss_peak_available() else "tracemalloc")
        if self.method not in ("rss", "tracemalloc", "none"):
            raise ValueError(f"memory method must be rss, tracemalloc or none, got {self.method!r}")
        self.cpu: dict[str, float] = defaultdict(float)
        self.server_peak = 0  # lower bound: the server's own spans (see MEMORY_METHOD)
        self.server_peak_upper = 0  # upper bound: growth since the round began, at any server span
        self._round_start = 0
        self._stack: list[str] = []
        self._own = False
        self._span_start = 0  # memory in use when the current role span began
        self._server_kept = 0  # net growth of the server's finished spans
        self._t = 0.0

    def __enter__(self) -> RoleMeter:
        if self.method == "tracemalloc":
            _untraced_forks()
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._own = True
            self._round_start = tracemalloc.get_traced_memory()[0]
        elif self.method == "rss":
            _malloc_trim()()
            self._round_start = _status_kib("VmRSS") * 1024
        self._t = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own:
            tracemalloc.stop()
            self._own = False

    def _switch(self) -> None:
        now = time.process_time()
        if self._stack:
            self.cpu[self._stack[-1]] += now - self._t
        if self.method == "none":
            self._t = time.process_time()
            return
        in_server = bool(self._stack) and self._stack[-1] == "server"
        if in_server:
            peak = tracemalloc.get_traced_memory()[1] if self.method == "tracemalloc" else _status_kib("VmHWM") * 1024
            self.server_peak = max(self.server_peak, self._server_kept + peak - self._span_start)
            self.server_peak_upper = max(self.server_peak_upper, peak - self._round_start)
        if self.method == "rss":
            _malloc_trim()()  # what a client freed must not be reused unseen by the server
        held = tracemalloc.get_traced_memory()[0] if self.method == "tracemalloc" else _status_kib("VmRSS") * 1024
        if in_server:
            self._server_kept += held - self._span_start
        self._span_start = held
        if self.method == "tracemalloc":
            tracemalloc.reset_peak()
        else:
            _reset_peak_rss()
        self._t = time.process_time()

    @contextmanager
    def role(self, name: str) -> Iterator[None]:
        self._switch()
        self._stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()


class Workload:
    """n clients' float32 inputs in [-1, 1]: client u holds ``pool[u : u + d]`` (a view, made once)."""

    def __init__(self, n: int, d: int, seed: int = 0) -> None:
        self.n, self.d = n, d
        # benchmark inputs, not secrets
        self.pool = np.random.default_rng(seed).uniform(-1.0, 1.0, n + d).astype(np.float32)

    def __getitem__(self, u: int) -> np.ndarray:
        return self.pool[u: u + self.d]

    def exact_sum(self, clients: Sequence[int]) -> np.ndarray:
        total = np.zeros(self.d, dtype=np.float64)
        for u in clients:
            total += self[u]
        return total

    def dropped(self, dropout: float, seed: int) -> list[int]:
        """Which clients drop: a scenario (numpy RNG), the same for every mode of a cell."""
        m = int(round(dropout * self.n))
        return sorted(np.random.default_rng(seed).choice(self.n, size=m, replace=False).tolist()) if m else []


class Inputs(Mapping):
    """A :class:`Workload` as the ``{client: vector}`` mapping ``run_round`` takes."""

    def __init__(self, workload: Workload) -> None:
        self.w = workload

    def __getitem__(self, u: int) -> np.ndarray:
        if not 0 <= u < self.w.n:
            raise KeyError(u)
        return self.w[u]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.w.n))

    def __len__(self) -> int:
        return self.w.n


@dataclass
class Cell:
    """One mode's round at one (n, d, dropout)."""

    mode: str
    n: int
    d: int
    dropout: float
    repeat: int
    completed: bool
    reason: str | None = None
    dropped: int = 0
    included: int = 0
    wall_seconds: float = 0.0
    client_cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None
    bytes_up_per_client: float | None = None
    bytes_down_per_client: float | None = None
    server_peak_bytes: int | None = None
    server_peak_upper_bytes: int | None = None
    max_abs_error: float | None = None
    error_bound: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- modes


def run_plaintext(w: Workload, dropped: Sequence[int], meter: RoleMeter) -> dict[str, Any]:
    """Clients send their float32 vector; the server adds each into a float64 sum as it arrives."""
    gone = set(dropped)
    included = [u for u in range(w.n) if u not in gone]
    up = 0
    with meter.role("server"):
        total = np.zeros(w.d, dtype=np.float64)
    for u in included:
        with meter.role("client"):
            msg = w[u].tobytes()
        up += len(msg)
        with meter.role("server"):
            total += np.frombuffer(msg, dtype=np.float32)
        del msg
    m = len(included)
    return {"total": total, "included": included, "bytes_up": up, "bytes_down": 0,
            # float64 additions of m values in [-1, 1], in another order than the reference sum
            "error_bound": 2 * m * m * 2.0**-53, "params": {}}


def fedsecure_round(vectors: Mapping[int, np.ndarray], drop: Mapping[int, str], params: Any, enc: Any, *,
                    active: bool = False, policy: Any = None, workers: int = 1,
                    vector_length: int | None = None) -> tuple[float, Any, dict[str, Any]]:
    """One fedsecure SecAgg round (``run_round``): (cpu seconds of this process, report or None, costs).

    ``policy=None``: every client requires what ``params`` were chosen under (run_round's default).
    """
    from fedsecure.secagg import TooFewSurvivors, run_round

    t0 = time.process_time()
    try:
        r = run_round(vectors, params, enc, dropouts=drop, active=active, policy=policy, workers=workers,
                      vector_length=vector_length)
    except TooFewSurvivors as e:
        return time.process_time() - t0, None, {"aborted": str(e)}
    secs = time.process_time() - t0
    extra = {"client_seconds": r.client_seconds, "server_seconds": r.server_seconds,
             "stage_seconds": r.stage_seconds, "upload_bytes": r.upload_bytes, "download_bytes": r.download_bytes}
    if r.client_errors:  # a client that refused the round (policy) or a message: should not happen here
        extra["client_errors"] = dict(list(r.client_errors.items())[:3])
        extra["client_error_count"] = len(r.client_errors)
    return secs, r, extra


def run_secagg(w: Workload, dropped: Sequence[int], meter: RoleMeter, *, graph: str,
               dropout: float) -> dict[str, Any]:
    """fedsecure SecAgg (semi-honest, wire v4) on the ``complete`` or ``sparse`` graph; clients in 2 workers."""
    from fedsecure.secagg import ConfigurationError, FixedPointEncoding, choose_params

    try:  # provisioned for the benchmark's dropout (at least 10%, the library's default)
        params = choose_params(w.n, dropout_rate=max(0.1, dropout), graph=graph, threat_model="semi-honest")
    except ConfigurationError as e:
        return {"failed": f"no safe parameters: {e}"}
    enc = FixedPointEncoding.for_sum(w.n, 1.0)
    with meter.role("server"):  # the parent: server + the simulator's buffered messages (clients are forked)
        _, r, extra = fedsecure_round(Inputs(w), {u: "masked_input" for u in dropped}, params, enc,
                                      workers=SECAGG_WORKERS, vector_length=w.d)
    info = {"k": params.k, "t": params.t, "graph": params.graph, "threat_model": params.threat_model,
            "failure_probability": params.failure_probability,
            "privacy_failure_probability": params.privacy_failure_probability, "bits": enc.bits,
            "workers": SECAGG_WORKERS}
    if r is None:
        return {"failed": extra["aborted"], "params": info}
    # the report's own split (the parent's process time also holds pipe traffic to the workers)
    meter.cpu["client"], meter.cpu["server"] = r.client_seconds, r.server_seconds
    return {"total": r.total, "included": list(r.included), "bytes_up": r.upload_bytes,
            "bytes_down": r.download_bytes, "error_bound": enc.max_error(len(r.included)), "params": info,
            "client_errors": extra.get("client_error_count", 0)}


class CkksSession:
    """fedsecure CKKS (wire v4): a key holder, registered client encryptors and a per-round aggregator."""

    name = "fedsecure"

    def __init__(self) -> None:
        from fedsecure.ckks import KeyHolder

        self.holder = KeyHolder()
        self.public_context = self.holder.public_context()
        self.aggregator_context = self.holder.aggregator_context()
        self.encryptors: dict[int, Any] = {}
        self.round_id = os.urandom(16)
        self._agg = None

    def ciphertexts(self, d: int) -> int:
        return -(-d // self.holder.params.values_per_ciphertext)

    def _encryptor(self, client_id: int) -> Any:
        from fedsecure.ckks import ClientEncryptor, ClientIdentity

        if client_id not in self.encryptors:  # one-time setup: identity keys, pinned by the key holder
            identity = ClientIdentity(client_id)
            self.holder.register(identity.registration)
            self.encryptors[client_id] = ClientEncryptor(self.public_context, identity)
        return self.encryptors[client_id]

    def new_round(self) -> None:
        self.round_id = os.urandom(16)

    def encrypt(self, x: np.ndarray, client_id: int) -> bytes:
        return self._encryptor(client_id).encrypt(x, round_id=self.round_id)

    def start(self, length: int) -> None:
        from fedsecure.ckks import StreamingAggregator

        self._agg = StreamingAggregator(self.aggregator_context, length, round_id=self.round_id,
                                        clients=self.holder.registrations)

    def add(self, blob: bytes, client_id: int) -> None:
        self._agg.add(blob, sender=client_id)

    def aggregate(self) -> bytes:
        return self._agg.aggregate()

    def decrypt(self, aggregate: bytes) -> np.ndarray:
        return self.holder.decrypt(aggregate)


#: one CKKS deployment (key holder, n registered clients) per n, reused by the cells of one grid
_CKKS_SESSIONS: dict[int, CkksSession] = {}


def run_ckks(w: Workload, dropped: Sequence[int], meter: RoleMeter) -> dict[str, Any]:
    """Clients encrypt (masked, signed c0), the aggregator adds as they arrive, the key holder decrypts."""
    session = _CKKS_SESSIONS.get(w.n)
    if session is None:  # one-time set-up (keys, identities, registration): not part of a round
        session = _CKKS_SESSIONS[w.n] = CkksSession()
        for u in range(w.n):
            session._encryptor(u)
    session.new_round()
    gone = set(dropped)
    included = [u for u in range(w.n) if u not in gone]
    up = 0
    with meter.role("server"):
        session.start(w.d)
    for u in included:
        with meter.role("client"):
            blob = session.encrypt(w[u], u)
        up += len(blob)
        with meter.role("server"):
            session.add(blob, u)
        del blob
    with meter.role("server"):  # aggregator hands its sum to the key holder, who decrypts
        total = session.decrypt(session.aggregate())[: w.d]
    p = session.holder.params
    return {"total": total, "included": included, "bytes_up": up, "bytes_down": len(session.round_id) * w.n,
            "error_bound": session.holder.error_bound(len(included), w.d),
            "params": {"poly_modulus_degree": p.poly_modulus_degree,
                       "values_per_ciphertext": p.values_per_ciphertext, "ciphertexts": session.ciphertexts(w.d),
                       "setup_bytes_down_per_client": len(session.public_context),
                       "bytes_down_note": "per round: the 16-byte round id; the public context is one-time set-up"}}


# ---------------------------------------------------------------- Flower's SecAgg+


def flower_available() -> bool:
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def _value_bytes(v: Any) -> int:
    if isinstance(v, (bytes, str)):
        return len(v.encode() if isinstance(v, str) else v)
    if isinstance(v, list):
        return sum(_value_bytes(x) for x in v)
    return 8  # int, float, bool


def content_bytes(content: Any) -> int:
    """Bytes of a message's records: ``count_bytes()`` as Flower's ``message_size_mod`` sums it (Flower's
    ``ConfigRecord.count_bytes`` fails on an empty list, so config records are counted here the same way)."""
    from flwr.app import ConfigRecord

    total = 0
    for rec in content.values():
        if isinstance(rec, ConfigRecord):
            total += sum(len(k) + _value_bytes(v) for k, v in rec.items())
        else:
            total += rec.count_bytes()
    return total


def _direct_grid_class() -> type:
    from flwr.app import Context, Message, RecordDict
    from flwr.serverapp.grid import Grid
    from flwr.supercore.task_identity import TaskIdentity

    class DirectGrid(Grid):
        """In-process transport: each message goes straight to its node's ClientApp (real mods, real state).

        Counts each node's bytes down and up (:func:`content_bytes`) and, given a :class:`RoleMeter`,
        charges the ClientApp's work to the client role (the copy and the counting to neither).
        """

        def __init__(self, app: Any, node_ids: Sequence[int], drop_at_stage: dict[int, str],
                     meter: RoleMeter | None = None) -> None:
            self.app, self.node_ids = app, list(node_ids)
            self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
                             for nid in self.node_ids}
            self.drop = drop_at_stage
            self.dead: set[int] = set()
            self.meter = meter
            self.bytes_down = self.bytes_up = 0

        def set_run(self, run: Any) -> None:
            pass

        @property
        def run(self) -> None:
            return None

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> list[int]:
            return self.node_ids

        def push_messages(self, messages):  # noqa: ANN001
            raise NotImplementedError("DirectGrid delivers synchronously through send_and_receive")

        def pull_messages(self, message_ids):  # noqa: ANN001
            raise NotImplementedError("DirectGrid delivers synchronously through send_and_receive")

        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
            replies = []
            for msg in messages:
                nid = msg.metadata.dst_node_id
                stage = None
                cfg = msg.content.config_records.get("secaggplus_configs")
                if cfg is not None:
                    stage = cfg.get("stage")
                if nid in self.dead or (stage is not None and self.drop.get(nid) == stage):
                    self.dead.add(nid)  # a dropped node never answers again
                    continue
                with self._as("transport"):
                    # A network hands every node its own decoded copy (the workflow reuses one content object
                    # for all nodes, and secaggplus_mod pops keys from it).
                    msg = copy.deepcopy(msg)
                    msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                    self.bytes_down += content_bytes(msg.content)
                # Each node would run in its own process with its own task identity; switch it per call.
                TaskIdentity.node_id = nid
                try:
                    with self._as("client"):
                        reply = self.app(msg, self.contexts[nid])
                finally:
                    TaskIdentity.node_id = 0
                with self._as("transport"):
                    if reply.has_content():
                        self.bytes_up += content_bytes(reply.content)
                replies.append(reply)
            return replies

        def _as(self, role: str) -> Any:
            if self.meter is None:
                return _nothing()
            return self.meter.role(role)

    return DirectGrid


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def flower_round(vectors: Mapping[int, np.ndarray], drop: Mapping[int, str], meter: RoleMeter | None = None,
                 *, num_shares: int = FLOWER_SHARES,
                 reconstruction_threshold: int = FLOWER_THRESHOLD) -> tuple[float, bool, np.ndarray | None, Any]:
    """One real Flower SecAgg+ round: (cpu seconds, completed?, aggregated mean or None, the grid)."""
    import logging

    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg as FlwrFedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.supercore.logger import FLOWER_LOGGER
    from flwr.supercore.task_identity import TaskIdentity

    FLOWER_LOGGER.setLevel(logging.CRITICAL)  # a halted round is reported by the caller, not logged

    class Client(NumPyClient):
        def __init__(self, vec: np.ndarray) -> None:
            self.vec = vec

        def fit(self, parameters, config):  # noqa: ANN001
            return [self.vec], 1, {}

    ids = list(vectors)
    node_ids = [u + 1 for u in ids]  # flwr node ids are non-zero
    app = ClientApp(client_fn=lambda ctx: Client(vectors[ctx.node_id - 1]).to_client(), mods=[secaggplus_mod])
    grid = _direct_grid_class()(app, node_ids, {u + 1: s for u, s in drop.items()}, meter)
    n = len(node_ids)
    d = np.asarray(vectors[ids[0]]).size
    strategy = FlwrFedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    ctx = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                        strategy=strategy)
    for nid in node_ids:
        ctx.client_manager.register(GridClientProxy(nid, grid, 1))
    init = ndarrays_to_parameters([np.zeros(d, dtype=np.float32)])
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(init, keep_input=True)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    wf = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=reconstruction_threshold)
    t0 = time.process_time()
    with (meter.role("server") if meter is not None else _nothing()):
        wf(grid, ctx)
    secs = time.process_time() - t0
    params = compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    out = parameters_to_ndarrays(params)[0]
    done = bool(np.any(out != 0))
    return secs, done, (out if done else None), grid


def run_flower(w: Workload, dropped: Sequence[int], meter: RoleMeter) -> dict[str, Any]:
    """Flower's SecAgg+ (num_shares=3, reconstruction_threshold=2, its defaults' quantisation), one attempt.

    Its bytes down include the global model in the fit instruction (4 d bytes per client), which no other
    mode counts; its masked vectors travel as int64 (8 d bytes up).
    """
    _, done, mean, grid = flower_round(Inputs(w), {u: "collect_masked_vectors" for u in dropped}, meter)
    info = {"num_shares": FLOWER_SHARES, "reconstruction_threshold": FLOWER_THRESHOLD,
            "clipping_range": FLOWER_CLIPPING_RANGE, "quantization_range": FLOWER_QUANTIZATION_RANGE,
            "max_weight": FLOWER_MAX_WEIGHT,
            "bytes_down_note": "Flower's fit instruction carries the global model (4 d bytes): counted here, "
                               "while the other modes count no model download",
            "flwr": _version("flwr")}
    common = {"bytes_up": grid.bytes_up, "bytes_down": grid.bytes_down, "params": info}
    if not done:
        return {"failed": "Flower's workflow halted (too few surviving ring neighbours: its _check_threshold) "
                          "and returned no aggregate", **common}
    gone = set(dropped)
    included = [u for u in range(w.n) if u not in gone]
    m = len(included)
    # secaggplus_mod multiplies a client's vector by its weight num_examples / max_weight (1 / 1000 here, as
    # q_ratio / quantization_range) before the stochastic quantisation (< 1 step of 2 clip / range per value),
    # and the server divides by the summed weights: each client's rounding error is step / dq_ratio
    q_ratio = round(FLOWER_QUANTIZATION_RANGE / FLOWER_MAX_WEIGHT)
    step = 2 * FLOWER_CLIPPING_RANGE / FLOWER_QUANTIZATION_RANGE
    per_client = step / (q_ratio / FLOWER_QUANTIZATION_RANGE)
    # weights are all 1: the mean times m is the sum; the mean comes back as float32
    return {"total": np.asarray(mean, dtype=np.float64) * m, "included": included,
            "error_bound": m * per_client + m * 2.0**-23, **common}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "plaintext": lambda w, dropped, meter, dropout: run_plaintext(w, dropped, meter),
    "secagg": lambda w, dropped, meter, dropout: run_secagg(w, dropped, meter, graph="complete", dropout=dropout),
    "secagg+": lambda w, dropped, meter, dropout: run_secagg(w, dropped, meter, graph="sparse", dropout=dropout),
    "ckks": lambda w, dropped, meter, dropout: run_ckks(w, dropped, meter),
    "flower-secagg+": lambda w, dropped, meter, dropout: run_flower(w, dropped, meter),
}


def run_cell(mode: str, w: Workload, dropout: float, repeat: int, *, seed: int = 0,
             memory: str | None = None) -> Cell:
    """One round of ``mode`` on workload ``w``; a round that cannot complete comes back with its reason."""
    dropped = w.dropped(dropout, seed=seed * 1000 + repeat)
    cell = Cell(mode, w.n, w.d, dropout, repeat, completed=False, dropped=len(dropped))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, RoleMeter(method=memory) as meter:
        warnings.simplefilter("always")
        out = RUNNERS[mode](w, dropped, meter, dropout)
    cell.wall_seconds = time.perf_counter() - t0
    cell.params = dict(out.get("params", {}))
    notes = sorted({str(c.message) for c in caught if issubclass(c.category, UserWarning)})
    if notes:  # e.g. choose_params: no (k, t) meets the failure target at this n and dropout
        cell.params["warnings"] = notes
    cell.server_peak_bytes = int(meter.server_peak) if meter.method != "none" else None
    cell.server_peak_upper_bytes = int(meter.server_peak_upper) if meter.method != "none" else None
    cell.params["memory_method"] = meter.method
    if "bytes_up" in out:
        cell.bytes_up_per_client = out["bytes_up"] / w.n
        cell.bytes_down_per_client = out["bytes_down"] / w.n
    cell.client_cpu_seconds = meter.cpu["client"] / w.n
    cell.server_cpu_seconds = meter.cpu["server"]
    if "failed" in out:
        cell.reason = out["failed"]
        return cell
    cell.completed = True
    cell.included = len(out["included"])
    exact = w.exact_sum(out["included"])
    cell.max_abs_error = float(np.max(np.abs(np.asarray(out["total"], dtype=np.float64) - exact)))
    cell.error_bound = float(out["error_bound"])
    if out.get("client_errors"):
        cell.reason = f"{out['client_errors']} client(s) refused a message"
    return cell


# ---------------------------------------------------------------- the grid, outputs


def warm_up(modes: Sequence[str]) -> None:
    """One tiny round per mode, not recorded: first-call imports and caches are nobody's per-round cost."""
    w = Workload(4, 16)
    for mode in modes:
        run_cell(mode, w, 0.0, 0)


def run_grid(ns: Sequence[int], ds: Sequence[int], dropouts: Sequence[float], modes: Sequence[str], *,
             repeats: int = 1, seed: int = 0,
             on_cell: Callable[[Cell, int, int], None] | None = None) -> list[Cell]:
    """Every (n, d, dropout, repeat), every mode on the same inputs and the same dropped clients."""
    warm_up(modes)
    _CKKS_SESSIONS.clear()
    cells = []
    total = len(ns) * len(ds) * len(dropouts) * repeats * len(modes)
    for n in ns:
        for d in ds:
            w = Workload(n, d, seed=seed)
            for dropout in dropouts:
                for rep in range(repeats):
                    for mode in modes:
                        cell = run_cell(mode, w, dropout, rep, seed=seed)
                        cells.append(cell)
                        if on_cell is not None:
                            on_cell(cell, len(cells), total)
            del w
        _CKKS_SESSIONS.pop(n, None)
    return cells


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def summarize(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Median over repeats per (mode, n, d, dropout), with min and max, and how many rounds completed."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        groups[(c.mode, c.n, c.d, c.dropout)].append(c)
    rows = []
    for (mode, n, d, dropout), cs in groups.items():
        row: dict[str, Any] = {"mode": mode, "n": n, "d": d, "dropout": dropout, "repeats": len(cs),
                               "completed": sum(c.completed for c in cs)}
        for key in ("wall_seconds", "client_cpu_seconds", "server_cpu_seconds", "bytes_up_per_client",
                    "bytes_down_per_client", "server_peak_bytes", "server_peak_upper_bytes", "max_abs_error",
                    "error_bound"):
            vals = [getattr(c, key) for c in cs if c.completed and getattr(c, key) is not None]
            row[key] = float(np.median(vals)) if vals else None
            if key.endswith("seconds") and len(vals) > 1:
                row[key + "_range"] = [float(min(vals)), float(max(vals))]
        row["reasons"] = sorted({c.reason for c in cs if c.reason})
        rows.append(row)
    return rows


def write_outputs(cells: Sequence[Cell], out: Path, *, command: str, setting: dict[str, Any]) -> dict[str, Path]:
    """``bench.json`` (every round, the summary, the method), ``bench.csv`` (every round) and the PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(cells)
    doc = {
        "schema_version": 1, "command": command, "setting": setting,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: _version(p) for p in ("fedsecure", "numpy", "cryptography", "tenseal", "flwr")},
        "method": {
            "server_peak_memory": MEMORY_METHOD,
            "cpu": "time.process_time per role; per-client = all clients' CPU / n (input generation excluded); "
                   "SecAgg: the round report's client (forked workers) and server CPU",
            "bytes": "aggregation-protocol messages per client (bytes received by the server / n, bytes sent to "
                     "clients / n); Flower: count_bytes of each message's records",
            "error": "max abs error of the decoded sum against the exact float64 sum of the included inputs",
            "dropout": "dropped clients stop after sending keys/shares, before their input",
        },
        "summary": summary,
        "rounds": [asdict(c) for c in cells],
    }
    paths = {"json": out / "bench.json", "csv": out / "bench.csv"}
    paths["json"].write_text(json.dumps(doc, indent=2, default=float))
    buf = io.StringIO()
    cols = [f for f in Cell.__dataclass_fields__ if f != "params"]
    wr = csv.DictWriter(buf, fieldnames=cols + ["params"])
    wr.writeheader()
    for c in cells:
        rec = asdict(c)
        rec["params"] = json.dumps(rec["params"], default=float)
        wr.writerow(rec)
    paths["csv"].write_text(buf.getvalue())
    paths.update(plot(summary, out))
    return paths


def plot(summary: Sequence[dict[str, Any]], out: Path) -> dict[str, Path]:
    """``cost_vs_n.png`` (at the largest d) and ``cost_vs_d.png`` (at the largest n), dropout 0 if present:
    log scales, one line per mode, one panel per cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    drop = min(r["dropout"] for r in summary)
    rows = [r for r in summary if r["dropout"] == drop]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    colours = {m: f"C{i}" for i, m in enumerate(MODES)}  # a mode keeps its colour in every panel
    for axis, other in (("n", "d"), ("d", "n")):
        fixed = max(r[other] for r in rows)
        fig, grid = plt.subplots(2, 3, figsize=(13, 7.5))
        axes = grid.ravel()
        for ax, (key, label) in zip(axes, PLOTTED):
            for mode in modes:
                pts = sorted((r[axis], r[key]) for r in rows
                             if r["mode"] == mode and r[other] == fixed and r[key] is not None and r[key] > 0)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colours[mode], label=mode)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_title(label, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        legend = axes[len(PLOTTED)]
        legend.axis("off")
        for mode in modes:
            legend.plot([], [], marker="o", color=colours[mode], label=mode)
        legend.legend(loc="center", title="mode (a missing point: 0, or the round did not complete)", fontsize=10,
                      title_fontsize=9)
        fig.suptitle(f"fedsecure bench: cost per round against {axis} ({other} = {fixed:,}, dropout {drop:g})")
        fig.tight_layout()
        paths[f"png_{axis}"] = out / f"cost_vs_{axis}.png"
        fig.savefig(paths[f"png_{axis}"], dpi=90)
        plt.close(fig)
    return paths


def cell_line(cell: Cell) -> str:
    """One line per round, for logs and the plain progress."""
    head = f"{cell.mode:<15} n={cell.n:<6} d={cell.d:<8} dropout={cell.dropout:g}"
    if not cell.completed:
        return f"{head}: did not complete ({cell.reason})"
    return (f"{head}: client {cell.client_cpu_seconds:.4f}s/client, server {cell.server_cpu_seconds:.3f}s, "
            f"up {cell.bytes_up_per_client:,.0f} B, down {cell.bytes_down_per_client:,.0f} B, "
            f"server peak {cell.server_peak_bytes / 2**20:.1f}-{cell.server_peak_upper_bytes / 2**20:.1f} MiB, error {cell.max_abs_error:.2e} "
            f"(bound {cell.error_bound:.2e}), wall {cell.wall_seconds:.2f}s")


def print_table(summary: Sequence[dict[str, Any]], file: Any = sys.stdout) -> None:
    """The summary, one line per (n, d, dropout, mode); a round that did not complete says why."""
    print(f"{'mode':<15} {'n':>6} {'d':>8} {'drop':>5} {'client s':>9} {'server s':>9} {'up B/cl':>11} "
          f"{'down B/cl':>11} {'srv MiB':>8} {'<= MiB':>8} {'error':>9} {'bound':>9}  done", file=file)

    def f(v: Any, fmt: str, width: int) -> str:
        return format("-", f">{width}") if v is None else format(v, fmt)

    for r in sorted(summary, key=lambda r: (r["n"], r["d"], r["dropout"], MODES.index(r["mode"]))):
        mem, upper = ((None if r.get(k) is None else r[k] / 2**20)
                      for k in ("server_peak_bytes", "server_peak_upper_bytes"))
        line = (f"{r['mode']:<15} {r['n']:>6} {r['d']:>8} {r['dropout']:>5g} {f(r['client_cpu_seconds'], '9.4f', 9)} "
                f"{f(r['server_cpu_seconds'], '9.3f', 9)} {f(r['bytes_up_per_client'], '11,.0f', 11)} "
                f"{f(r['bytes_down_per_client'], '11,.0f', 11)} {f(mem, '8.1f', 8)} {f(upper, '8.1f', 8)} "
                f"{f(r['max_abs_error'], '9.2e', 9)} {f(r['error_bound'], '9.2e', 9)}  {r['completed']}/{r['repeats']}")
        if r["completed"] < r["repeats"] and r["reasons"]:
            line += f"  ({'; '.join(r['reasons'])})"
        print(line, file=file)
