"""Adapters that run fedsecure's protocols inside other FL systems.

* :mod:`fedsecure.integrations.flower` -- Flower (``flwr``): client mods and server workflows
  for fedsecure's SecAgg / SecAgg+ (and CKKS), usable where Flower's own
  ``secaggplus_mod`` / ``SecAggPlusWorkflow`` are. Needs ``pip install 'fedsecure[flower]'``.

Nothing here is imported by ``fedsecure.secagg`` or ``fedsecure.ckks``.
"""
