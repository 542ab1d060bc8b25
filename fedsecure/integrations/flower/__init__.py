"""fedsecure secure aggregation inside Flower (``pip install 'fedsecure[flower]'``).

* :data:`fedsecure_secagg_mod` / :func:`make_secagg_mod` -- the client mod (where ``secaggplus_mod`` goes);
* :class:`FedSecureSecAggWorkflow` -- the server fit workflow (where ``SecAggPlusWorkflow`` goes), with any
  averaging strategy, optionally grouped with a robust rule over the group means.
* CKKS: :data:`fedsecure_ckks_mod` (clients), :data:`fedsecure_ckks_key_holder_mod` (the decryptor, its own
  SuperNode), :class:`FedSecureCKKSWorkflow` (the ServerApp aggregates) -- in :mod:`.ckks`.

See README "Use with Flower" and ``examples/flower_secagg/``.
"""

from .ckks import FedSecureCKKSWorkflow, fedsecure_ckks_key_holder_mod, fedsecure_ckks_mod, make_ckks_key_holder_mod
from .secagg_mod import fedsecure_secagg_mod, make_secagg_mod
from .secagg_workflow import FedSecureSecAggWorkflow

__all__ = [
    "FedSecureCKKSWorkflow", "FedSecureSecAggWorkflow", "fedsecure_ckks_key_holder_mod", "fedsecure_ckks_mod",
    "fedsecure_secagg_mod", "make_ckks_key_holder_mod", "make_secagg_mod",
]
