"""Recommender data, splits, client partitions, models, metrics and the popularity baseline.

* :mod:`~fedsecure.recsys.data` -- :class:`Interactions`, the one table every part reads.
* :mod:`~fedsecure.recsys.movielens` -- :func:`load_movielens` (ml-latest, ml-100k, ml-1m layouts).
* :mod:`~fedsecure.recsys.tables` -- :func:`load_interactions`: any interaction file (CSV/TSV/Parquet, ``user item`` lines).
* :mod:`~fedsecure.recsys.synthetic` -- :func:`generate`, the embedded default data set.
* :mod:`~fedsecure.recsys.losses` -- sampled softmax (log-Q corrected) and sampled BCE for SASRec.
* :mod:`~fedsecure.recsys.split` -- :func:`leave_last_out` (ranking), :func:`random_holdout` (ratings).
* :mod:`~fedsecure.recsys.partition` -- :func:`cross_device`, :func:`cross_silo`.
* :mod:`~fedsecure.recsys.models` -- MF, implicit MF, NeuMF, SASRec; :func:`build_model`.
* :mod:`~fedsecure.recsys.metrics`, :mod:`~fedsecure.recsys.evaluation` -- HR@K, NDCG@K, RMSE, MAE.
"""

from .data import Interactions
from .models import MODELS, Recommender, build_model
from .movielens import DataFormatError, load_movielens
from .partition import ClientData, cross_device, cross_silo
from .split import Split, leave_last_out, random_holdout
from .synthetic import generate

__all__ = [
    "MODELS",
    "ClientData",
    "DataFormatError",
    "Interactions",
    "Recommender",
    "Split",
    "build_model",
    "cross_device",
    "cross_silo",
    "generate",
    "leave_last_out",
    "load_movielens",
    "random_holdout",
]
