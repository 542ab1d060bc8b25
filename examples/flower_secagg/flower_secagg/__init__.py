"""A Flower app: federated implicit matrix factorisation with fedsecure secure aggregation."""
