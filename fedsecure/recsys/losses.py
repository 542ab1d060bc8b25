"""Next-item losses whose cost does not grow with the catalogue: sampled softmax and sampled BCE.

A sequential recommender scores a hidden state ``h`` against item vectors,
``s_i = h . e_i``. The full softmax loss ``-s_pos + log Z`` with
``Z = sum_i exp(s_i)`` touches every item at every position. The two
estimators here touch only the positive and ``S`` sampled negatives:

* **Sampled softmax with a log-Q correction** (Bengio & Senécal 2008; Jean et
  al. 2015; the correction as in Yi et al. 2019). Negatives ``j_1..j_S`` are
  drawn with replacement from a proposal ``Q``; each negative's logit is
  corrected by its expected count, ``s_j - log(S Q_j)``; a negative equal to
  the positive (an "accidental hit") is dropped. Then
  ``Z_hat = exp(s_pos) + sum_k exp(s_{j_k}) / (S Q_{j_k})`` over the kept
  negatives is an **unbiased** estimate of ``Z`` (the expectation of each
  term is ``sum_{i != pos} exp(s_i) / S``), and the loss
  ``-s_pos + log Z_hat`` is consistent (biased low for finite ``S`` by
  Jensen's inequality, less so as ``S`` grows or ``Q`` approaches the
  softmax). With every item as a sample once and expected count 1 it is the
  full softmax exactly.
* **Binary cross-entropy with sampled negatives** (the SASRec paper, Kang &
  McAuley 2018): ``softplus(-s_pos) + sum_k softplus(s_{j_k})`` -- the
  positive against each negative independently, no partition function.

Both take logits and return one loss per position; masking padding and
averaging are the caller's.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["sampled_bce", "sampled_softmax", "sampled_partition"]


def _corrected(neg_logits: torch.Tensor, log_expected: torch.Tensor, accidental: torch.Tensor | None) -> torch.Tensor:
    corrected = neg_logits - log_expected
    if accidental is not None:
        corrected = corrected.masked_fill(accidental, float("-inf"))
    return corrected


def sampled_softmax(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, log_expected: torch.Tensor,
    accidental: torch.Tensor | None = None,
) -> torch.Tensor:
    """``-s_pos + log(exp(s_pos) + sum_k exp(s_k - log_expected_k))`` over the last dimension of ``neg_logits``.

    ``pos_logits``: ``[...]``; ``neg_logits``, ``log_expected`` (``log(S Q_j)``
    of each sample, broadcastable) and ``accidental`` (True where a sample is
    the positive: excluded): ``[..., S]``.
    """
    logits = torch.cat([pos_logits.unsqueeze(-1), _corrected(neg_logits, log_expected, accidental)], dim=-1)
    return torch.logsumexp(logits, dim=-1) - pos_logits


def sampled_partition(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, log_expected: torch.Tensor,
    accidental: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Z_hat``, the estimate of the softmax's partition function inside :func:`sampled_softmax`."""
    return pos_logits.exp() + _corrected(neg_logits, log_expected, accidental).exp().sum(-1)


def sampled_bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor,
                accidental: torch.Tensor | None = None) -> torch.Tensor:
    """``softplus(-s_pos) + sum_k softplus(s_k)``: ``-log sigma(s_pos) - sum_k log(1 - sigma(s_k))``.

    A sample equal to the positive (``accidental``) is left out of the sum.
    """
    neg = F.softplus(neg_logits)
    if accidental is not None:
        neg = neg.masked_fill(accidental, 0.0)
    return F.softplus(-pos_logits) + neg.sum(-1)
