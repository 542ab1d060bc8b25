"""Randomized Hadamard rotation (DRIVE / EDEN, Vargaftik et al. 2021, 2022), blockwise.

``R = H D P`` with ``P`` a random permutation of the (zero-padded) coordinates,
``D`` a diagonal of random signs and ``H`` the orthonormal Walsh-Hadamard
matrix (``H H^T = I``), applied to consecutive blocks: as many of ``block``
coordinates (a power of two) as the vector fills, then the rest, rounded up
to a multiple of ``MIN_BLOCK``, in blocks of descending powers of two (its
binary digits). So the zero padding costs less than ``MIN_BLOCK``
coordinates, not up to a whole ``block`` (87,517 coordinates: 21 blocks of
4096, then 1024 and 512: 87,552, +0.04 %, where whole blocks of 4096 took
90,112, +3 %). The permutation spreads the coordinates over the
blocks at random, so that no block holds more than its share of the energy
of a vector whose mass sits in a few neighbouring coordinates (the popular
items' embedding rows); without it, each block's coordinates would have the
variance of *that block's* energy. ``R`` is orthogonal, so ``inverse(forward(x)) = x`` up to
float rounding, norms are preserved, and -- the reason to rotate -- each
rotated coordinate of a block is a sum of its ``block`` inputs with random
signs: close to ``N(0, |x_block|^2 / block)`` whatever ``x`` looks like
(``|x_block|^2 ~ |x|^2 block / padded`` after the permutation), so
its largest coordinate is about ``|x_block| sqrt(2 ln(block) / block)``
instead of up to ``|x_block|``. A quantizer whose range is set by the largest
coordinate (or a clip that must hold most coordinates) then resolves the
vector ``sqrt(block / (2 ln block))`` times more finely.

Bias and variance: none of its own. The rotation is exact and linear, so an
unbiased quantizer applied after it stays unbiased after :meth:`inverse`, and
its mean squared error is unchanged by the inverse (orthogonality). Cost:
the padding travels (at most ``MIN_BLOCK - 1`` extra coordinates), and a
sparse input becomes dense. A smaller tail block sums fewer inputs per
rotated coordinate, so its coordinates are a little less Gaussian than a
full block's (``MIN_BLOCK`` = 64 inputs at least); their variance is the
same, ``|x|^2 / padded``, after the permutation.

Seeds are *shared public randomness*: both sides must derive the same signs,
so the seed comes from data they both hold (:func:`rotation_seed`: a run
context and the round number), expanded with SHAKE-256. It is not a secret
and is not meant to be one -- the server inverts the rotation with it. (It
must only be fixed before the clients' data is, so that the signs are
independent of the vector they rotate; a seed derived from the round number
is.)
"""

from __future__ import annotations

import hashlib

import numpy as np

DEFAULT_BLOCK = 4096
#: the smallest tail block (the padding stays below it)
MIN_BLOCK = 64
_DOMAIN = b"fedsecure/rotate/v1"


def rotation_seed(context: bytes, round_index: int) -> bytes:
    """A 32-byte public seed from a context both sides know (e.g. the run's id) and the round number."""
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    return hashlib.sha256(_DOMAIN + len(context).to_bytes(4, "little") + context
                          + int(round_index).to_bytes(8, "little")).digest()


def fwht(x: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform along the last axis (length a power of two); returns a new array."""
    x = np.array(x, dtype=np.float64, copy=True)
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard length must be a power of two, got {n}")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :].copy(), y[..., 1, :]
        y[..., 0, :] += b
        y[..., 1, :] = a - b
        h *= 2
    x *= 1.0 / np.sqrt(n)
    return x


class RandomizedHadamard:
    """The rotation ``R = H D P`` blockwise over vectors of ``length`` coordinates (see module docstring)."""

    def __init__(self, length: int, seed: bytes, *, block: int = DEFAULT_BLOCK) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if block < 1 or block & (block - 1):
            raise ValueError(f"block must be a power of two, got {block}")
        if len(seed) < 16:
            raise ValueError(f"seed must have at least 16 bytes, got {len(seed)}")
        self.length = int(length)
        # a short vector needs no block longer than itself
        self.block = min(int(block), 1 << max(0, (self.length - 1).bit_length()))
        full, rest = divmod(self.length, self.block)
        unit = min(MIN_BLOCK, self.block)
        rest = -(-rest // unit) * unit  # the tail, rounded up to whole units, as descending powers of two
        tail = [1 << b for b in range(rest.bit_length() - 1, -1, -1) if rest >> b & 1]
        #: the block sizes, in order (``full`` blocks of ``block``, then the tail's)
        self.sizes = (self.block,) * full + tuple(tail)
        self.block = self.sizes[0]  # the largest block used (a short vector's tail may not fill ``block``)
        self.blocks = len(self.sizes)
        self.padded = sum(self.sizes)
        bits = np.unpackbits(np.frombuffer(hashlib.shake_256(seed).digest((self.padded + 7) // 8), dtype=np.uint8),
                             bitorder="little")[: self.padded]
        self.signs = 1.0 - 2.0 * bits.astype(np.float64)  # +1 for bit 0, -1 for bit 1
        # the permutation: coordinates sorted by 64-bit keys from the same public seed (another domain)
        self.perm: np.ndarray | None = None
        if self.blocks > 1:
            keys = np.frombuffer(hashlib.shake_256(b"perm" + seed).digest(8 * self.padded), dtype="<u8")
            self.perm = np.argsort(keys, kind="stable")

    def _hadamard(self, y: np.ndarray) -> np.ndarray:
        """``H`` blockwise: the full blocks in one call, then each tail block."""
        full = self.sizes.count(self.block) * self.block
        out = np.empty_like(y)
        out[:full] = fwht(y[:full].reshape(-1, self.block)).reshape(-1)
        start = full
        for size in self.sizes[full // self.block:]:
            out[start : start + size] = fwht(y[start : start + size])
            start += size
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``R x``: ``length`` coordinates in, ``padded`` rotated coordinates out (float64)."""
        x = np.asarray(x)
        if x.shape != (self.length,):
            raise ValueError(f"expected a vector of {self.length} values, got shape {x.shape}")
        y = np.zeros(self.padded, dtype=np.float64)
        y[: self.length] = x
        if self.perm is not None:
            y = y[self.perm]
        y *= self.signs
        return self._hadamard(y)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """``R^T y = P^T D H y`` (``H`` is its own inverse): ``padded`` coordinates in, the first ``length`` out."""
        y = np.asarray(y)
        if y.shape != (self.padded,):
            raise ValueError(f"expected a vector of {self.padded} values, got shape {y.shape}")
        x = self._hadamard(np.asarray(y, dtype=np.float64))
        x *= self.signs
        if self.perm is not None:
            back = np.empty_like(x)
            back[self.perm] = x
            x = back
        return x[: self.length]
