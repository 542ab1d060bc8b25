"""fedsecure secure aggregation inside Flower (``pip install 'fedsecure[flower]'``).

* :data:`fedsecure_secagg_mod` / :func:`make_secagg_mod` -- the client mod (where ``secaggplus_mod`` goes);
* :class:`FedSecureSecAggWorkflow` -- the server fit workflow (where ``SecAggPlusWorkflow`` goes), with any
  averaging strategy, optionally grouped with a robust rule over the group means.

See README "Use with Flower" and ``examples/flower_secagg/``.
"""

from .secagg_mod import fedsecure_secagg_mod, make_secagg_mod
from .secagg_workflow import FedSecureSecAggWorkflow

__all__ = ["FedSecureSecAggWorkflow", "fedsecure_secagg_mod", "make_secagg_mod"]
