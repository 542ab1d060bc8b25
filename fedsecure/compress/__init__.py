"""Compression of what a client uploads: stochastic quantization, random rotation, top-k with error feedback.

Pure numpy, no recommender, engine or transport code (the engine-facing
adapters live in :mod:`fedsecure.fl.compression`). One concept per module:

* :mod:`.quantize` -- unbiased stochastic quantization to ``b`` bits;
* :mod:`.rotate` -- the randomized Hadamard rotation of DRIVE / EDEN, with a
  public seed both sides derive;
* :mod:`.topk` -- top-k sparsification with client-side error feedback.

:func:`parse_compression` reads the command line's ``--compress`` value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .quantize import StochasticQuantizer, levels, nearest_round, stochastic_round
from .rotate import RandomizedHadamard, fwht, rotation_seed
from .topk import TopKErrorFeedback

CHOICES = "none|q8|q4|q2|rotate-q8|rotate-q4|rotate-q2|q<B>/<BUCKET>|topk:FRACTION"


@dataclass(frozen=True)
class Compression:
    """A parsed ``--compress`` value: ``kind`` is none, quantize or topk."""

    kind: str = "none"
    bits: int | None = None
    rotate: bool = False
    fraction: float | None = None
    bucket: int | None = None  # coordinates per range (plaintext quantization); None: one range per vector

    @property
    def name(self) -> str:
        if self.kind == "quantize":
            return f"{'rotate-' if self.rotate else ''}q{self.bits}" + (f"/{self.bucket}" if self.bucket else "")
        if self.kind == "topk":
            return f"topk:{self.fraction:g}"
        return "none"


def parse_compression(text: str) -> Compression:
    """``none``, ``q<b>``, ``rotate-q<b>`` (``b`` in 2..16), either with ``/<bucket>`` (one range per that many
    coordinates), or ``topk:<fraction in (0, 1]>``; ValueError otherwise."""
    raw = text.strip().lower()
    if raw == "none":
        return Compression()
    if raw.startswith("topk:"):
        try:
            fraction = float(raw[5:])
        except ValueError:
            raise ValueError(f"--compress {text!r}: topk needs a fraction, e.g. topk:0.1") from None
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ValueError(f"--compress {text!r}: the top-k fraction must be in (0, 1]")
        return Compression(kind="topk", fraction=fraction)
    rotate = raw.startswith("rotate-")
    body = raw[7:] if rotate else raw
    body, slash, bucket_text = body.partition("/")
    if body.startswith("q") and body[1:].isdigit():
        bits = int(body[1:])
        try:
            levels(bits)
        except ValueError as e:
            raise ValueError(f"--compress {text!r}: {e}") from None
        bucket = None
        if slash:
            if not (bucket_text.isdigit() and int(bucket_text) >= 1):
                raise ValueError(f"--compress {text!r}: the bucket after '/' must be a positive integer "
                                 "(coordinates per range), e.g. q4/64")
            bucket = int(bucket_text)
        return Compression(kind="quantize", bits=bits, rotate=rotate, bucket=bucket)
    raise ValueError(f"--compress {text!r} is not one of: {CHOICES}")


__all__ = [
    "CHOICES", "Compression", "RandomizedHadamard", "StochasticQuantizer", "TopKErrorFeedback", "fwht",
    "levels", "nearest_round", "parse_compression", "rotation_seed", "stochastic_round",
]
