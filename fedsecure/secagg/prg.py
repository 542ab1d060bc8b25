"""Mask expansion: a 32-byte seed -> a vector of ring elements, by AES-256-CTR.

``expand(seed, length, bits)`` is the keystream of AES-256 in CTR mode under
key ``seed`` with an all-zero initial 128-bit counter block, read as
little-endian ``uint32`` words (``bits <= 32``) or ``uint64`` words
(``bits > 32``), each reduced mod 2^bits. Uniform words mod 2^32 (or 2^64)
reduce to uniform elements mod 2^bits because 2^bits divides the word size.
AES-CTR is a PRG under the PRP assumption; a seed is never reused with a
different meaning because every seed comes from its own HKDF label.

The keystream is written into a reused buffer (``update_into``) so that a
client's k expansions allocate nothing; this is what keeps masking within a
small factor of the raw AES throughput.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .encoding import ring_dtype

SEED_BYTES = 32
_ZERO_IV = bytes(16)


class MaskExpander:
    """Expands seeds into masks of one fixed length; owns its scratch buffers."""

    def __init__(self, length: int, bits: int) -> None:
        if length < 1:
            raise ValueError(f"mask length must be >= 1, got {length}")
        self.length = int(length)
        self.bits = int(bits)
        self.dtype = np.dtype(ring_dtype(bits))
        self.nbytes = self.length * self.dtype.itemsize
        self._zeros = bytes(self.nbytes)
        self._buf = bytearray(self.nbytes + 15)
        self._view = np.frombuffer(self._buf, dtype=self.dtype.newbyteorder("<"), count=self.length)

    def _keystream(self, seed: bytes) -> np.ndarray:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
        enc.update_into(self._zeros, self._buf)
        return self._view  # valid until the next call

    def expand(self, seed: bytes) -> np.ndarray:
        """A fresh array holding the mask of ``seed`` (already reduced mod 2^bits)."""
        out = self._keystream(seed).astype(self.dtype)
        if self.bits not in (32, 64):
            out &= self.dtype.type((1 << self.bits) - 1)
        return out

    def add_into(self, acc: np.ndarray, seed: bytes) -> None:
        """``acc += mask(seed)`` in the word ring (reduce mod 2^bits once at the end)."""
        np.add(acc, self._keystream(seed), out=acc, casting="unsafe")

    def sub_into(self, acc: np.ndarray, seed: bytes) -> None:
        """``acc -= mask(seed)`` in the word ring."""
        np.subtract(acc, self._keystream(seed), out=acc, casting="unsafe")


def apply_masks(x: np.ndarray, plus: list[bytes], minus: list[bytes], expander: MaskExpander) -> np.ndarray:
    """``x + sum PRG(plus) - sum PRG(minus)  (mod 2^bits)`` as a new array: one pass per seed, no temporaries."""
    y = np.array(x, dtype=expander.dtype, copy=True)
    for seed in plus:
        expander.add_into(y, seed)
    for seed in minus:
        expander.sub_into(y, seed)
    if expander.bits not in (32, 64):
        y &= expander.dtype.type((1 << expander.bits) - 1)
    return y


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """The mask of ``seed``: ``length`` ring elements mod 2^bits (see module docstring)."""
    return MaskExpander(length, bits).expand(seed)
