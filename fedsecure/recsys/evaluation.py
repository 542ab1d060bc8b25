"""Evaluation of a model and of the popularity baseline under one stated protocol.

Ranking models are scored over the full catalogue (each user's training
items excluded) and over 1 positive + ``n_negatives`` sampled negatives;
rating models by RMSE and MAE. The popularity baseline is evaluated with the
same split, the same ``k`` and the same sampled negatives, so the two rows of
every result table are comparable.
"""

from __future__ import annotations

from typing import Any

from fedsecure.recsys.baselines import Popularity, PrivatePopularity
from fedsecure.recsys.metrics import evaluate_ranking, evaluate_rating
from fedsecure.recsys.models import Recommender
from fedsecure.recsys.split import Split


class Evaluator:
    """Evaluates models on ``split`` for a task ("rating" or "ranking")."""

    def __init__(self, split: Split, task: str, *, k: int = 10, n_negatives: int = 99, seed: int = 0) -> None:
        if task not in ("rating", "ranking"):
            raise ValueError(f"unknown task {task!r}; choose 'rating' or 'ranking'")
        self.split, self.task = split, task
        self.k, self.n_negatives, self.seed = k, n_negatives, seed
        #: the evaluation protocol in words (filled by the first evaluation)
        self.protocol = f"RMSE and MAE over held-out ratings. {split.protocol}" if task == "rating" else ""

    def _score(self, score_fn: Any) -> dict[str, Any]:
        if self.task == "rating":
            return evaluate_rating(score_fn, self.split.test)
        metrics = evaluate_ranking(score_fn, self.split, k=self.k, n_negatives=self.n_negatives, seed=self.seed)
        self.protocol = str(metrics.pop("protocol"))
        return metrics

    def __call__(self, model: Recommender) -> dict[str, Any]:
        return self._score(model.predict if self.task == "rating" else model.score_fn(self.split.train))

    def popularity(self) -> dict[str, Any]:
        pop = Popularity(self.split.train)
        return self._score(pop.predict if self.task == "rating" else pop.scores)

    def private_popularity(self, sigma: float, noise: Any) -> dict[str, Any]:
        """The popularity ranking released with user-level Gaussian noise ``sigma`` (ranking tasks; see
        :class:`~fedsecure.recsys.baselines.PrivatePopularity`)."""
        if self.task != "ranking":
            raise ValueError("the private popularity baseline ranks items: it applies to ranking models")
        pop = PrivatePopularity(self.split.train, sigma, noise)
        return {**self._score(pop.scores), "baseline": pop.describe()}
