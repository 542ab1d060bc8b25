"""The engine-facing adapter: :class:`SecAggSum`, a :class:`SumProtocol` over pairwise masking.

``SecAggSum(graph="complete")`` is SecAgg (Bonawitz et al. 2017);
``SecAggSum(graph="sparse")`` is SecAgg+ (Bell et al. 2020, random Harary
graph of degree k = O(log n)). Each call to :meth:`SecAggSum.sum` runs one
full protocol round through :func:`fedsecure.secagg.simulator.run_round`,
choosing k and t for the round's n (see :mod:`fedsecure.secagg.params`) and
the encoding for n clients (see :mod:`fedsecure.secagg.encoding`). The threat
model follows ``active``: ``active=False`` assumes a semi-honest server
(``t`` above the corrupt neighbours suffices), ``active=True`` adds signatures
and the consistency check and needs ``2t > k + c``.

Input domain: every coordinate must satisfy ``|x_j| <= max(clip_range, 1)``
(``input_bound`` is ``clip_range``; the extra room up to 1 holds the FedAvg
weight coordinate ``w in [0, 1]``, and a relative slack of 2^-20 absorbs
float32 rounding of clipped inputs). Error: ``|returned - true sum| <=
n / (2 * scale)`` per coordinate (``n / scale`` with stochastic rounding),
plus the distributed-DP noise when ``client_noise`` is set.

Compressed mode: :meth:`SecAggSum.sum` takes an ``encoding`` for the round --
the modular ``b``-bit ring of :meth:`FixedPointEncoding.for_ring`, built by
:class:`fedsecure.fl.compression.SecAggRingSum`, which rotates and clips the
clients' vectors and picks the scale. The masks, the packing and every
protocol message work in that ring as in any other (``bits`` bits per
coordinate on the wire).

Distributed-DP contract (``client_noise``, built in :mod:`fedsecure.dp`):

* ``client_noise.sample(size, scale) -> np.ndarray[int64]`` -- integer noise in
  *encoded units* for one client's vector; ``scale`` is the encoding's
  quantization levels per unit value (``encoding.scale``). Each client adds it
  to its quantized vector *after* rounding and *before* masking, so the server
  only ever sees the noisy sum. It must draw from OS randomness.
* ``client_noise.max_abs_sum(n_clients, scale) -> float`` -- a high-probability
  bound on ``|sum of n clients' noise|`` per coordinate in encoded units; the
  encoder adds it to its headroom, and refuses a configuration where
  ``n * ceil(clip * scale) + max_abs_sum(n, scale) > 2^(bits-1) - 1``.
* The decoded sum is ``(sum_i round(x_i * scale) + sum_i noise_i) / scale``;
  :meth:`SecAggSum.encoding_for` exposes ``scale``, ``bits``, ``encode`` and
  ``decode`` so DP code can account for quantization. The scale depends on
  the noise bound (headroom is reserved for it), so ask the ``SecAggSum``
  that carries the ``client_noise`` -- or pass the same noise object -- for
  the scale the round will actually use. The hook's ``max_abs_sum`` must be
  non-decreasing as ``scale`` grows for the largest-scale search to be exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsecure.fl.aggregation import AggregationError, SumProtocol, SumResult, SumSession

from .encoding import FixedPointEncoding, IntegerNoise
from .errors import ConfigurationError, ReconstructionError
from .params import DEFAULT_FAILURE_TARGET, DEFAULT_PRIVACY_TARGET, SecAggParams, choose_params
from .simulator import SimulatedRound, run_round


class SecAggSum(SumProtocol):
    """Pairwise-mask secure summation (SecAgg / SecAgg+) for the federated engine.

    The engine's rounds stream (:meth:`open`); :meth:`sum` runs a round over vectors given all at once.
    """

    streaming = True

    def __init__(
        self,
        *,
        clip_range: float = 1.0,
        graph: str = "complete",
        bits: int | None = None,
        dropout_rate: float = 0.1,
        corrupt_fraction: float = 0.0,
        k: int | None = None,
        t: int | None = None,
        active: bool = False,
        client_noise: IntegerNoise | None = None,
        stochastic_rounding: bool = False,
        failure_target: float = DEFAULT_FAILURE_TARGET,
        privacy_target: float = DEFAULT_PRIVACY_TARGET,
        workers: int = 1,
    ) -> None:
        if graph not in ("complete", "sparse"):
            raise ConfigurationError(f"graph must be 'complete' (SecAgg) or 'sparse' (SecAgg+), got {graph!r}")
        if not (np.isfinite(clip_range) and clip_range > 0):
            raise ConfigurationError(f"clip_range must be finite and > 0, got {clip_range}")
        if client_noise is not None and not isinstance(client_noise, IntegerNoise):
            raise ConfigurationError("client_noise must provide sample(size, scale) and max_abs_sum(n_clients, scale)")
        self.name = "secagg" if graph == "complete" else "secagg+"
        self.graph = graph
        self.input_bound = float(clip_range)
        self.bits = bits
        self.dropout_rate, self.corrupt_fraction = float(dropout_rate), float(corrupt_fraction)
        self.k, self.t = k, t
        self.active = bool(active)
        # The active option is the threat model: signatures + consistency check need 2t > k + c,
        # a server that follows the protocol only t > (corrupt neighbours) (see params.py).
        self.threat_model = "active" if self.active else "semi-honest"
        self.client_noise = client_noise
        self.stochastic_rounding = bool(stochastic_rounding)
        self.failure_target, self.privacy_target = failure_target, privacy_target
        self.workers = int(workers)
        # The dropout stages a caller may schedule. A semi-honest round may also open ``exclusion`` (a dealer whose
        # shares are unusable); it is not offered here, so the engine's dropout draws stay what they were.
        self.stages = ("advertise_keys", "seed_reveal", "share_keys", "masked_input") + (
            ("consistency_check",) if self.active else ()) + ("unmasking",) + (("exclusion",) if self.active else ())
        self._params_cache: dict[int, SecAggParams] = {}
        #: semi-honest mode: clients caught dealing inconsistent shares, left out of later rounds (id -> reason)
        self.blocked: dict[int, str] = {}

    def params_for(self, n_clients: int) -> SecAggParams:
        """k, t and failure bounds for a round of ``n_clients`` (ConfigurationError if unsafe)."""
        if n_clients not in self._params_cache:
            self._params_cache[n_clients] = choose_params(
                n_clients, dropout_rate=self.dropout_rate, corrupt_fraction=self.corrupt_fraction, graph=self.graph,
                k=self.k, t=self.t, failure_target=self.failure_target, privacy_target=self.privacy_target,
                threat_model=self.threat_model,
            )
        return self._params_cache[n_clients]

    def encoding_for(self, n_clients: int) -> FixedPointEncoding:
        """The fixed-point encoding a round of ``n_clients`` uses (its ``scale``, ``bits``, ``encode``, ``decode``)."""
        # 1 + 2^-20 of slack: inputs clipped to the bound in float32 may round a hair above it.
        return FixedPointEncoding.for_sum(
            n_clients, max(self.input_bound, 1.0) * (1 + 2.0**-20), bits=self.bits, noise=self.client_noise, stochastic=self.stochastic_rounding
        )

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None,
            encoding: FixedPointEncoding | None = None) -> SumResult:
        """One protocol round over ``vectors`` (in ``encoding`` when given, else :meth:`encoding_for` the round).

        Active mode: a client whose dealt shares are inconsistent with its own commitment or masking key is
        excluded from the round by a verifiable proof (its dealer-signed shares; see ``protocols/secagg.md``
        section 9) and the round returns the exact sum of the others (the client is in ``excluded``).
        Semi-honest mode has no identity keys, so no proof: such a client makes that round abort
        (:class:`ReconstructionError` naming it) and is left out of every later round, so one malicious
        client costs at most one round (malicious clients are outside the semi-honest model).
        """
        blocked = {c: f"excluded: {self.blocked[c]}" for c in vectors if c in self.blocked}
        if blocked:
            vectors = {c: v for c, v in vectors.items() if c not in self.blocked}
            dropouts = {c: s for c, s in (dropouts or {}).items() if c not in self.blocked}
        if len(vectors) < 2:
            raise AggregationError(f"{self.name}: secure aggregation needs at least 2 clients, got {len(vectors)}")
        sizes = {np.asarray(v).size for v in vectors.values()}
        if len(sizes) != 1:
            raise AggregationError(f"{self.name}: client vectors have different lengths {sorted(sizes)}")
        n = len(vectors)
        params = self.params_for(n)
        enc = self.encoding_for(n) if encoding is None else encoding
        try:
            report = run_round(vectors, params, enc, dropouts=dropouts, active=self.active,
                               noise=self.client_noise, workers=self.workers)
        except ReconstructionError as e:
            self._blocked_by(e)
            raise
        return SumResult(total=report.total, included=report.included, excluded={**report.excluded, **blocked},
                         stats=self._stats(report, n, params, enc))

    def open(self, clients: Sequence[int], *, dropouts: Mapping[int, str] | None = None) -> SumSession:
        """A streamed round over ``clients``: the key exchange runs when the first vector arrives, then each
        client masks its vector as it is added and the server adds the masked vector into its running sum
        (:class:`~fedsecure.secagg.simulator.SimulatedRound`). Memory: one masked sum on the server, plus the
        keys and shares the unmasking needs (O(n k)); the clients' inputs are never held together."""
        return _SecAggSession(self, clients, dropouts)

    def _stats(self, report: Any, n: int, params: SecAggParams, enc: FixedPointEncoding) -> dict[str, Any]:
        return {
            "protocol": self.name, "threat_model": params.threat_model, "n": n, "k": params.k, "t": params.t,
            "bits": enc.bits, "scale": enc.scale, "modular_ring": enc.modular,
            "quantization_error_bound": enc.max_error(len(report.included)),
            "failure_probability": params.failure_probability,
            "privacy_failure_probability": params.privacy_failure_probability,
            "upload_bytes": report.upload_bytes, "download_bytes": report.download_bytes,
            "upload_bytes_by_stage": report.upload_bytes_by_stage,
            "download_bytes_by_stage": report.download_bytes_by_stage,
            "stage_seconds": report.stage_seconds, "client_seconds": report.client_seconds,
            "server_seconds": report.server_seconds, "rejected_messages": len(report.rejected),
        }

    def _blocked_by(self, e: ReconstructionError) -> None:
        if isinstance(e.sender, int):
            self.blocked[e.sender] = f"dealt shares inconsistent with its commitment ({e.reason})"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "graph": self.graph, "clip_range": self.input_bound, "bits": self.bits,
            "dropout_rate": self.dropout_rate, "corrupt_fraction": self.corrupt_fraction, "k": self.k, "t": self.t,
            "active": self.active, "threat_model": self.threat_model, "stochastic_rounding": self.stochastic_rounding,
            "failure_target": self.failure_target, "privacy_target": self.privacy_target,
        }


class _SecAggSession(SumSession):
    """One streamed SecAgg(+) round of the engine (see :meth:`SecAggSum.open`)."""

    def __init__(self, owner: SecAggSum, clients: Sequence[int], dropouts: Mapping[int, str] | None) -> None:
        self.owner = owner
        ids = sorted(int(c) for c in clients)
        self.blocked = {c: f"excluded: {owner.blocked[c]}" for c in ids if c in owner.blocked}
        self.ids = [c for c in ids if c not in owner.blocked]
        self.dropouts = {c: s for c, s in (dropouts or {}).items() if c not in owner.blocked}
        if len(self.ids) < 2:
            raise AggregationError(f"{owner.name}: secure aggregation needs at least 2 clients, got {len(self.ids)}")
        self.n = len(self.ids)
        self.params = owner.params_for(self.n)
        self.encoding = owner.encoding_for(self.n)
        self.round: SimulatedRound | None = None
        self.length: int | None = None

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ReconstructionError as e:
            self.owner._blocked_by(e)
            raise
        except BaseException:
            if self.round is not None:
                self.round.close()
            raise

    def add(self, client_id: int, vector: Any) -> None:
        if client_id in self.owner.blocked:
            return
        x = np.asarray(vector)
        if self.length is None:  # the round's length is the first vector's: the key exchange starts now
            self.length = int(x.size)
            self.round = SimulatedRound(self.ids, self.length, self.params, self.encoding, dropouts=self.dropouts,
                                        active=self.owner.active, noise=self.owner.client_noise,
                                        workers=self.owner.workers)
            self._guard(self.round.open)
        elif x.size != self.length:
            raise AggregationError(f"{self.owner.name}: client vectors have different lengths "
                                   f"{sorted({self.length, int(x.size)})}")
        self._guard(self.round.add, int(client_id), x)

    def result(self) -> SumResult:
        if self.round is None:
            raise AggregationError(f"{self.owner.name}: no client vectors")
        report = self._guard(self.round.finish)
        return SumResult(total=report.total, included=report.included, excluded={**report.excluded, **self.blocked},
                         stats=self.owner._stats(report, self.n, self.params, self.encoding))
