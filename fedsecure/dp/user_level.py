"""User-level DP-FedAvg (McMahan, Ramage, Talwar & Zhang, ICLR 2018), central and distributed.

One client is one user. Each round, with every user sampled independently with
probability ``q`` (Poisson) and ``W = q N`` users expected:

1. each client clips its update on its own device, ``d_i <- d_i min(1, C / ||d_i||_2)``,
   so adding or removing one user changes the sum by at most ``C`` in L2;
2. the clipped updates are summed by a :class:`~fedsecure.fl.aggregation.SumProtocol`;
3. noise of total std ``z C`` per coordinate enters the sum:

   * :class:`CentralDPFedAvg` -- the server adds ``N(0, (z C)^2)`` to the sum
     it decoded (it must be trusted to do so; the protocol can still hide the
     individual updates);
   * :class:`DistributedDPFedAvg` -- every client adds discrete Gaussian noise
     to its integer-encoded update before the protocol, calibrated so that any
     ``min_clients`` survivors carry enough (:mod:`fedsecure.dp.distributed`):
     the server never sees a sum without noise;

4. the server applies ``sum / W`` -- the fixed denominator of McMahan et al.,
   whose sensitivity does not depend on how many users took part (a
   data-dependent denominator would leak it). Client weights are ignored:
   every user counts once, which is what makes the sensitivity ``C``.

Adjacency: add/remove one user for the central mechanism; for the distributed
one, the analysis (KLS'21) holds a user's update out while at least
``min_clients`` noises stay in the sum -- exact for "zero-out" adjacency, see
the differential-privacy section of ``SECURITY.md`` for the remaining slack.

Privacy is accounted per round by a :class:`~fedsecure.dp.accounting.PrivacyAccountant`
that each :meth:`aggregate` steps once with rate ``q``; every result's
``stats['privacy']`` states the mechanism, epsilon so far, delta, accountant,
noise source, noise multiplier and clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsecure.dp.accounting import AccountantName, PrivacyAccountant, calibrate, subsampled_zcdp_rdp
from fedsecure.dp.distributed import DiscreteGaussianNoise
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.validation import (
    PrivacyConfigError,
    check_clip,
    check_delta,
    check_epsilon,
    check_noise_multiplier,
    check_sample_rate,
)
from fedsecure.fl.aggregation import (
    AggregationError,
    AggregationResult,
    Aggregator,
    ClientUpdate,
    PlainSum,
    ProtocolRound,
    RoundSession,
    SparseRows,
    SumProtocol,
    run_sessions,
)


def clip_l2(delta: np.ndarray, clip: float) -> tuple[np.ndarray, bool]:
    """``delta * min(1, clip / ||delta||_2)`` in float64, and whether it was scaled down."""
    x = np.asarray(delta, dtype=np.float64)
    norm = float(np.linalg.norm(x))
    if not math.isfinite(norm):
        raise ValueError("update has a non-finite norm (NaN or inf coordinates)")
    if norm <= clip:
        return x.copy(), False
    # Scale by clip/norm, then guard the last ulp: the guarantee needs ||x|| <= clip exactly.
    y = x * (clip / norm)
    n2 = float(np.linalg.norm(y))
    if n2 > clip:
        y *= clip / n2 * (1 - 1e-15)
    return y, True


def clip_l2_sparse(delta: SparseRows, clip: float) -> tuple[SparseRows, bool]:
    """:func:`clip_l2` of the vector ``delta`` stands for, keeping it sparse (float64 values)."""
    x = delta.map_values(lambda v: np.asarray(v, dtype=np.float64))
    norm = x.norm()
    if not math.isfinite(norm):
        raise ValueError("update has a non-finite norm (NaN or inf coordinates)")
    if norm <= clip:
        return x, False
    y = x.map_values(lambda v: v * (clip / norm))
    n2 = y.norm()
    if n2 > clip:
        y = y.map_values(lambda v: v * (clip / n2 * (1 - 1e-15)))
    return y, True


class _DPRound(ProtocolRound):
    """Streams a DP round: each update is clipped (and, distributed, noised) as it arrives."""

    def __init__(self, agg: _UserLevelDPFedAvg, clients, round_index: int, dropouts) -> None:
        dropouts = dict(dropouts or {})
        agg._check_round(len(clients), [c for c in clients if c not in dropouts], round_index)
        super().__init__(agg.protocol, clients, round_index, dropouts)
        self.agg = agg
        self.n_clipped = 0

    def add(self, update: ClientUpdate) -> None:
        self._check_size(update)
        try:
            if isinstance(update.delta, SparseRows):
                v, was = clip_l2_sparse(update.delta, self.agg.clip)
            else:
                v, was = clip_l2(update.delta, self.agg.clip)
        except ValueError as exc:
            raise AggregationError(f"round {self.round_index}: client {update.client_id}: {exc}") from None
        self.n_clipped += was
        self._send(update.client_id, self.agg._prepare(v, self.round_index))

    def result(self) -> AggregationResult:
        result, elapsed = self._sum()
        return self.agg._finish(result, elapsed, self.n_clipped, self.round_index)


class _UserLevelDPFedAvg(Aggregator):
    """Shared machinery: validation, clipping, accounting, the privacy record."""

    mechanism: str = "abstract"

    def __init__(
        self,
        protocol: SumProtocol | None,
        *,
        clip: float,
        noise_multiplier: float,
        expected_clients: float,
        sample_rate: float,
        delta: float,
        population: int | None = None,
        accountant: AccountantName = "rdp",
        noise: NoiseSource | None = None,
    ) -> None:
        self.protocol = protocol if protocol is not None else PlainSum()
        self.clip = check_clip(clip)
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        if not (expected_clients > 0 and math.isfinite(expected_clients)):
            raise PrivacyConfigError(f"expected_clients must be finite and > 0, got {expected_clients}")
        self.expected_clients = float(expected_clients)
        self.sample_rate = check_sample_rate(sample_rate)
        self.delta = check_delta(delta, population)
        self.population = population
        self.accountant = PrivacyAccountant(accountant)
        self.noise = noise if noise is not None else NoiseSource()
        self.rounds = 0

    @property
    def stages(self) -> tuple[str, ...]:
        return self.protocol.stages

    @property
    def streaming(self) -> bool:
        return self.protocol.streaming

    def open_round(self, clients: Sequence[int], *, round_index: int,
                   dropouts: Mapping[int, str] | None = None) -> RoundSession:
        return _DPRound(self, clients, round_index, dropouts)

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        return run_sessions(self, updates, round_index=round_index, dropouts=dropouts)

    def _check_round(self, n_clients: int, survivors: Sequence[int], round_index: int) -> None:
        """Refuse a round before any update enters the sum (distributed DP: too few noises)."""

    def _prepare(self, clipped: np.ndarray | SparseRows, round_index: int) -> np.ndarray | SparseRows:
        """The clipped update as it enters the protocol."""
        return clipped

    def _finish(self, result: Any, elapsed: float, n_clipped: int, round_index: int) -> AggregationResult:
        raise NotImplementedError

    def privacy_report(self) -> dict[str, Any]:
        return self.privacy()

    def privacy(self) -> dict[str, Any]:
        """The privacy record of the rounds aggregated so far."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.accountant.epsilon(self.delta),
            "delta": self.delta,
            "accountant": self.accountant.accountant,
            "noise_source": self.noise.describe(),
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "sample_rate": self.sample_rate,
            "rounds": self.rounds,
            "expected_clients": self.expected_clients,
            "privacy_claim_void": not self.noise.secure,
        }

    def describe(self) -> dict[str, Any]:
        d = self.privacy()
        d.pop("epsilon")
        d.update(name=self.name, protocol=self.protocol.describe())
        return d


class CentralDPFedAvg(_UserLevelDPFedAvg):
    """DP-FedAvg with Gaussian noise ``N(0, (z C)^2)`` added by the server to the decoded sum."""

    name = "dp-fedavg-central"
    mechanism = "user-level DP-FedAvg, central Gaussian noise (server adds N(0, (z C)^2) to the sum)"

    @classmethod
    def calibrated(
        cls,
        protocol: SumProtocol | None,
        *,
        target_epsilon: float,
        rounds: int,
        clip: float,
        expected_clients: float,
        population: int,
        delta: float,
        accountant: AccountantName = "rdp",
        noise: NoiseSource | None = None,
    ) -> CentralDPFedAvg:
        """The aggregator whose epsilon after ``rounds`` rounds is at or under ``target_epsilon``."""
        from fedsecure.dp.accounting import noise_multiplier_for

        check_epsilon(target_epsilon)
        check_delta(delta, population)
        q = check_sample_rate(expected_clients / population)
        z = noise_multiplier_for(target_epsilon, delta, q, rounds, accountant)
        return cls(
            protocol, clip=clip, noise_multiplier=z, expected_clients=expected_clients, sample_rate=q,
            delta=delta, population=population, accountant=accountant, noise=noise,
        )

    @property
    def accepts_sparse(self) -> bool:
        # The server adds the noise to the whole decoded sum: clients may send their touched rows only.
        return self.protocol.accepts_sparse

    def _prepare(self, clipped: np.ndarray | SparseRows, round_index: int) -> np.ndarray | SparseRows:
        bound = self.protocol.input_bound
        if bound is not None and bound < self.clip:
            # Coordinate clipping only shrinks the norm: the sensitivity stays <= C.
            if isinstance(clipped, SparseRows):
                return clipped.map_values(lambda v: np.clip(v, -bound, bound))
            np.clip(clipped, -bound, bound, out=clipped)
        return clipped

    def _finish(self, result: Any, elapsed: float, n_clipped: int, round_index: int) -> AggregationResult:
        noisy = np.asarray(result.total, dtype=np.float64) + self.noise.gaussian_np(
            result.total.size, self.noise_multiplier * self.clip
        )
        self.accountant.step(self.noise_multiplier, self.sample_rate)
        self.rounds += 1
        stats = dict(result.stats)
        stats.update(protocol_seconds=elapsed, clipped_clients=n_clipped, privacy=self.privacy())
        return AggregationResult(
            delta=noisy / self.expected_clients, included=result.included, excluded=result.excluded, stats=stats
        )


class DistributedDPFedAvg(_UserLevelDPFedAvg):
    """DP-FedAvg with discrete Gaussian noise added by each client inside the secure sum.

    Two ways to run it, both with the noise added before the sum:

    * ``client_noise`` given: the protocol adds it (``SecAggSum(..., client_noise=hook)``
      must have been built with this same hook); the encoding scale the protocol
      reports in ``SumResult.stats['scale']`` is used for the accounting. With
      SecAgg (complete graph) the round's Shamir threshold must be at least
      ``min_clients``, so that the protocol itself aborts before a sum carrying
      fewer noises can be unmasked.
    * ``client_noise`` None: this aggregator quantizes each client's clipped
      update itself, ``k = round(s x)`` with power-of-two ``scale`` ``s``, adds
      ``N_Z(0, sigma^2)`` and hands ``(k + e) / s`` (exact in float64) to any
      float protocol -- used with :class:`PlainSum` in tests and simulation.
    """

    name = "dp-fedavg-distributed"
    mechanism = "user-level DP-FedAvg, distributed discrete Gaussian noise added by clients inside secure aggregation"

    def __init__(
        self,
        protocol: SumProtocol | None = None,
        *,
        clip: float,
        noise_multiplier: float,
        expected_clients: float,
        sample_rate: float,
        delta: float,
        min_clients: int,
        dim: int,
        population: int | None = None,
        accountant: AccountantName = "rdp",
        noise: NoiseSource | None = None,
        client_noise: DiscreteGaussianNoise | None = None,
        scale: float = 2.0**16,
    ) -> None:
        if accountant not in ("rdp", "dpa-rdp"):
            raise PrivacyConfigError(
                f"distributed DP is accounted through its zCDP bound, which needs an RDP accountant; got {accountant!r}"
            )
        super().__init__(
            protocol, clip=clip, noise_multiplier=noise_multiplier, expected_clients=expected_clients,
            sample_rate=sample_rate, delta=delta, population=population, accountant=accountant, noise=noise,
        )
        if client_noise is None:
            self.client_noise = DiscreteGaussianNoise(
                noise_multiplier=self.noise_multiplier, clip=self.clip, min_clients=min_clients, dim=dim,
                noise=self.noise, rounding_slack=0.5,
            )
            self._noise_in_protocol = False
            if not (scale > 0 and math.isfinite(scale) and math.log2(scale).is_integer()):
                raise PrivacyConfigError(f"scale must be a power of two (exact decoding), got {scale}")
            if scale * self.clip * (expected_clients * 10 + 100) + self.client_noise.max_abs_sum(
                int(expected_clients * 10 + 100), scale
            ) > 2.0**52:
                raise PrivacyConfigError(f"scale {scale:g} leaves no float64 headroom for the noisy integer sum")
            self._scale = float(scale)
        else:
            if (client_noise.noise_multiplier, client_noise.clip, client_noise.min_clients, client_noise.dim) != (
                self.noise_multiplier, self.clip, int(min_clients), int(dim)
            ):
                raise PrivacyConfigError("client_noise was built with different noise_multiplier/clip/min_clients/dim")
            if getattr(self.protocol, "client_noise", None) is not client_noise:
                raise PrivacyConfigError(
                    "client_noise is given but the protocol does not add it (build the protocol with "
                    "client_noise=this hook), or noise would be missing"
                )
            self.client_noise = client_noise
            self.noise = client_noise.noise
            self._noise_in_protocol = True
            self._scale = float("nan")
        self.min_clients = int(min_clients)
        self.dim = int(dim)

    @property
    def scale(self) -> float:
        """Encoding levels per unit value (NaN in protocol mode: the protocol picks it per round)."""
        return self._scale

    @classmethod
    def calibrated(
        cls,
        protocol: SumProtocol | None = None,
        *,
        target_epsilon: float,
        rounds: int,
        clip: float,
        expected_clients: float,
        population: int,
        delta: float,
        min_clients: int,
        dim: int,
        scale: float = 2.0**16,
        accountant: AccountantName = "rdp",
        noise: NoiseSource | None = None,
    ) -> DistributedDPFedAvg:
        """Builds the self-encoding variant with ``z`` calibrated so ``rounds`` rounds stay at or under target."""
        check_epsilon(target_epsilon)
        check_delta(delta, population)
        q = check_sample_rate(expected_clients / population)
        z = distributed_noise_multiplier_for(
            target_epsilon, delta, q, rounds, clip=clip, min_clients=min_clients, dim=dim, scale=scale
        )
        return cls(
            protocol, clip=clip, noise_multiplier=z, expected_clients=expected_clients, sample_rate=q,
            delta=delta, min_clients=min_clients, dim=dim, population=population, accountant=accountant,
            noise=noise, scale=scale,
        )

    def _encode_with_noise(self, x: np.ndarray) -> np.ndarray:
        s = self._scale
        k = np.rint(x * s)  # nearest rounding: |k - s x| <= 1/2, hence rounding_slack 0.5
        k += self.client_noise.sample(x.size, s)
        return k / s  # power-of-two s: exact, so the protocol sums exactly these integers / s

    def _check_round(self, n_clients: int, survivors: Sequence[int], round_index: int) -> None:
        if len(survivors) < self.min_clients:
            # Releasing a sum that carries fewer than min_clients noises would break the guarantee.
            raise AggregationError(
                f"round {round_index}: {len(survivors)} clients would survive, fewer than min_clients="
                f"{self.min_clients} whose noise the privacy guarantee needs; round aborted, nothing released"
            )
        if self._noise_in_protocol:
            params_for = getattr(self.protocol, "params_for", None)
            if params_for is not None and getattr(self.protocol, "graph", None) == "complete":
                t = params_for(n_clients).t
                if t < self.min_clients:
                    raise AggregationError(
                        f"round {round_index}: the protocol's threshold t={t} for {n_clients} clients is below "
                        f"min_clients={self.min_clients}: it could unmask a sum with too little noise; "
                        "raise the threshold or lower min_clients"
                    )

    def _prepare(self, clipped: np.ndarray | SparseRows, round_index: int) -> np.ndarray:
        v = clipped.dense() if isinstance(clipped, SparseRows) else clipped
        if v.size != self.dim:
            raise AggregationError(
                f"round {round_index}: updates have {v.size} coordinates, the noise was calibrated for {self.dim}"
            )
        if not self._noise_in_protocol:
            return self._encode_with_noise(v)
        bound = self.protocol.input_bound
        if bound is not None and bound < self.clip:
            np.clip(v, -bound, bound, out=v)  # coordinate clipping only shrinks the norm
        return v

    def _finish(self, result: Any, elapsed: float, n_clipped: int, round_index: int) -> AggregationResult:
        n_in = len(result.included)
        if n_in < self.min_clients:
            raise AggregationError(
                f"round {round_index}: only {n_in} clients completed the protocol, fewer than min_clients="
                f"{self.min_clients}; the sum is discarded (configure the protocol threshold >= min_clients)"
            )
        if self._noise_in_protocol:
            if "scale" not in result.stats:
                raise AggregationError(f"round {round_index}: the protocol did not report its encoding scale")
            scale = float(result.stats["scale"])
        else:
            scale = self._scale
        rho = self.client_noise.rho(scale, n_in)
        self.accountant.step_zcdp(rho, self.sample_rate)
        self.rounds += 1
        stats = dict(result.stats)
        privacy = self.privacy()
        d2, _ = self.client_noise.sensitivity(scale)
        privacy.update(
            rho_per_round=rho,
            min_clients=self.min_clients,
            scale=scale,
            quantized_sensitivity=d2,
            local_sigma_encoded=self.client_noise.local_sigma(scale),
            noise_std_of_sum=math.sqrt(n_in) * self.client_noise.local_sigma(scale) / scale,
        )
        stats.update(protocol_seconds=elapsed, clipped_clients=n_clipped, privacy=privacy)
        return AggregationResult(
            delta=np.asarray(result.total, dtype=np.float64) / self.expected_clients,
            included=result.included,
            excluded=result.excluded,
            stats=stats,
        )


def distributed_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    *,
    clip: float,
    min_clients: int,
    dim: int,
    scale: float,
    rounding_slack: float = 0.5,
) -> float:
    """Epsilon of ``rounds`` rounds of distributed DP-FedAvg (accounted as in :class:`DistributedDPFedAvg`)."""
    from fedsecure.dp.accounting import INT_ORDERS, _rdp_to_epsilon
    from fedsecure.dp.distributed import ddg_zcdp_rho, quantized_sensitivity

    if noise_multiplier == 0:
        return math.inf
    d2, d1 = quantized_sensitivity(clip, scale, dim, rounding_slack)
    sigma = noise_multiplier * d2 / math.sqrt(min_clients)
    rho = ddg_zcdp_rho(sigma, min_clients, d2, d1)
    rdp = rounds * subsampled_zcdp_rdp(rho, sample_rate)
    return _rdp_to_epsilon(np.asarray(INT_ORDERS, dtype=np.float64), rdp, delta)


def distributed_noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    *,
    clip: float,
    min_clients: int,
    dim: int,
    scale: float,
    rounding_slack: float = 0.5,
) -> float:
    """Noise multiplier for distributed DP-FedAvg landing at or under ``target_epsilon``."""
    check_epsilon(target_epsilon)
    return calibrate(
        lambda z: distributed_epsilon(
            z, sample_rate, rounds, delta, clip=clip, min_clients=min_clients, dim=dim, scale=scale,
            rounding_slack=rounding_slack,
        ),
        target_epsilon,
        what=f"distributed DP-FedAvg, {rounds} rounds at sampling rate {sample_rate:g}, delta {delta:g}",
    )
