"""Differential privacy for federated learning: secure noise, accounting, user-level DP-FedAvg.

* :mod:`fedsecure.dp.noise` -- :class:`NoiseSource`, DP noise from an AES-CTR keystream keyed from ``os.urandom``.
* :mod:`fedsecure.dp.accounting` -- :class:`PrivacyAccountant`, :func:`epsilon`, :func:`noise_multiplier_for`.
* :mod:`fedsecure.dp.validation` -- :class:`PrivacyConfigError` and the checks run before training.
* :mod:`fedsecure.dp.distributed` -- :class:`DiscreteGaussianNoise`, the client-noise hook of secure aggregation.
* :mod:`fedsecure.dp.user_level` -- :class:`CentralDPFedAvg`, :class:`DistributedDPFedAvg`.
* :mod:`fedsecure.dp.sgd`, :mod:`fedsecure.dp.clipping` -- example-level DP-SGD (Opacus) and fast clipping.
"""

from fedsecure.dp.accounting import ACCOUNTANTS, PrivacyAccountant, epsilon, noise_multiplier_for
from fedsecure.dp.distributed import DiscreteGaussianNoise
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.user_level import CentralDPFedAvg, DistributedDPFedAvg
from fedsecure.dp.validation import PrivacyConfigError, resolve_noise_multiplier

__all__ = [
    "ACCOUNTANTS",
    "CentralDPFedAvg",
    "DiscreteGaussianNoise",
    "DistributedDPFedAvg",
    "NoiseSource",
    "PrivacyAccountant",
    "PrivacyConfigError",
    "epsilon",
    "noise_multiplier_for",
    "resolve_noise_multiplier",
]
