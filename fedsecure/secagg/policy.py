"""What a client requires of a round before it takes part: its own policy, never the server's word.

A :class:`ClientPolicy` holds the client's assumptions (threat model, colluding
fraction, dropout rate) and targets. On every public fact of the round it
receives -- the signed configuration, the view of clients the graph is drawn
over, the survivor list it is asked to sign -- the client recomputes the
bounds of :mod:`fedsecure.secagg.params` itself and refuses, with a named
:class:`~fedsecure.secagg.errors.PolicyViolation`, anything weaker than it
requires:

* the threat model: a client whose policy is ``"active"`` refuses a
  semi-honest round (no downgrade), and needs the server's long-term
  signing key pinned (``server_key``), since an unauthenticated configuration
  lets whoever sits on the path play server;
* ``(k, t)``: the privacy bound of the announced graph, degree and threshold
  for the roster size, at the client's assumed colluding fraction, must meet
  the client's ``privacy_target``; ``t`` must exceed ``min_colluders``
  (semi-honest) or ``2t > k + min_colluders`` (active) whatever fraction is
  assumed;
* sizes: at least ``min_clients`` on the roster and in the view the graph is
  drawn over (re-evaluating the bound there, where a server that excluded
  honest clients has raised the colluding fraction), and, in active mode, at
  least ``min_survivors`` clients in the signed survivor list;
* identities (active): every client on the roster has an identity key the
  client knows.

The ring and encoding are checked by the client as before (a configuration
whose sum could wrap is refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import ConfigurationError, PolicyViolation
from .params import (
    DEFAULT_MIN_COLLUDERS,
    DEFAULT_PRIVACY_TARGET,
    THREAT_MODELS,
    SecAggParams,
    _t_floor,
    evaluate,
)


@dataclass(frozen=True)
class ClientPolicy:
    """A client's requirements for any round it joins (see module docstring)."""

    threat_model: str = "semi-honest"
    corrupt_fraction: float = 0.0
    dropout_rate: float = 0.1
    min_colluders: int = DEFAULT_MIN_COLLUDERS
    privacy_target: float = DEFAULT_PRIVACY_TARGET
    min_clients: int = 3
    min_survivors: int = 3
    server_key: Ed25519PublicKey | None = None

    def __post_init__(self) -> None:
        if self.threat_model not in THREAT_MODELS:
            raise ConfigurationError(f"policy threat_model must be one of {THREAT_MODELS}, got {self.threat_model!r}")
        if not (0.0 <= self.corrupt_fraction < 0.5) or not (0.0 <= self.dropout_rate < 1.0):
            raise ConfigurationError(
                f"policy corrupt_fraction must be in [0, 0.5) and dropout_rate in [0, 1); got "
                f"{self.corrupt_fraction}, {self.dropout_rate}")
        if not (isinstance(self.min_colluders, int) and self.min_colluders >= 0):
            raise ConfigurationError(f"policy min_colluders must be an integer >= 0, got {self.min_colluders!r}")
        if not (0.0 < self.privacy_target <= 1.0):
            raise ConfigurationError(f"policy privacy_target must be in (0, 1], got {self.privacy_target}")
        if self.min_clients < 3 or self.min_survivors < 2:
            raise ConfigurationError(
                "policy min_clients must be >= 3 and min_survivors >= 2 (with two clients either one learns the "
                f"other's input from the sum); got {self.min_clients}, {self.min_survivors}")
        if self.threat_model == "active" and self.server_key is None:
            raise ConfigurationError(
                "an active-security policy needs the server's long-term signing key pinned (server_key): an "
                "unauthenticated configuration lets anyone on the path play server")
        if self.server_key is not None and not isinstance(self.server_key, Ed25519PublicKey):
            raise ConfigurationError("policy server_key must be an Ed25519PublicKey")

    @property
    def active(self) -> bool:
        return self.threat_model == "active"

    def check_round(self, n: int, graph: str, k: int, t: int, active: bool, *, view: int | None = None) -> SecAggParams:
        """Refuse (k, t, graph, threat model) for ``n`` on the roster (or ``view`` in the graph's view).

        Returns the bounds the client computed. With ``view < n`` the colluding
        fraction is re-scaled to ``corrupt_fraction * n / view``: the corrupt
        clients of the roster may all be in the smaller view.
        """
        if self.active and not active:
            raise PolicyViolation("the round is semi-honest but this client requires active security (downgrade refused)")
        tm = "active" if active else "semi-honest"
        m = n if view is None else view
        where = f"roster of {n}" if view is None else f"view of {m} (roster {n})"
        if m < self.min_clients:
            raise PolicyViolation(f"{where}: fewer than the {self.min_clients} clients this client requires")
        g, kk = (graph, k) if graph == "sparse" and k < m - 1 else ("complete", m - 1)
        if t > kk:
            raise PolicyViolation(f"{where}: threshold t={t} exceeds the {kk} neighbours a client can have")
        floor = _t_floor(kk, tm, self.min_colluders)
        if t < floor:
            need = f"2t > k + {self.min_colluders}" if active else f"t > {self.min_colluders}"
            raise PolicyViolation(f"{where}: threshold t={t} with k={kk} breaks {need} (this client tolerates "
                                  f"{self.min_colluders} colluding neighbour(s) whatever the server assumes)")
        corrupt = min(1.0, self.corrupt_fraction * n / m)
        p = evaluate(m, kk, t, graph=g, dropout_rate=self.dropout_rate, corrupt_fraction=corrupt, threat_model=tm,
                     min_colluders=self.min_colluders)
        if p.privacy_failure_probability > self.privacy_target:
            raise PolicyViolation(
                f"{where}: (graph={g}, k={kk}, t={t}) exposes an input with probability up to "
                f"{p.privacy_failure_probability:.3g} > this client's target {self.privacy_target:.3g} "
                f"(corrupt fraction {corrupt:.3g}, dropout {self.dropout_rate}, {tm})")
        return p
