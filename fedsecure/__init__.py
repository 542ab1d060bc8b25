"""fedsecure: privacy-preserving federated learning of recommender systems."""

__version__ = "0.1.0"
