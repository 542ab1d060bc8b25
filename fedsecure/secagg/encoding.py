"""Fixed-point encoding of real vectors into the ring Z_{2^b}, and bit packing.

A value ``x`` with ``|x| <= clip`` is encoded as ``q = round(x * scale)``
(an integer with ``|q| <= ceil(clip * scale)``), optionally plus integer noise
``e`` (distributed DP), and stored as ``q + e mod 2^b``. The sum of ``n`` such
values decodes exactly, as the signed representative of ``sum mod 2^b``
divided by ``scale``, provided

    n * ceil(clip * scale) + noise_bound(n) <= 2^(b-1) - 1        (no wrap)

which :meth:`FixedPointEncoding.for_sum` enforces up front. The decoded sum
differs from the true sum of the inputs by at most ``n / (2 * scale)`` per
coordinate with deterministic rounding, or ``n / scale`` with stochastic
rounding (plus the noise, when there is noise).

Ring elements live in ``uint32`` arrays when ``b <= 32`` and ``uint64``
otherwise, so that numpy's wrapping arithmetic *is* arithmetic mod 2^32 or
2^64; the final reduction mod 2^b is one ``&``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import ConfigurationError

MIN_BITS, MAX_BITS = 2, 64


@runtime_checkable
class IntegerNoise(Protocol):
    """Distributed-DP hook: integer noise in encoded units, added by each client before masking.

    ``sample(size, scale)`` returns ``int64`` noise for ``size`` coordinates,
    where ``scale`` is the encoding's quantization levels per unit value.
    ``max_abs_sum(n_clients, scale)`` bounds ``|sum of n clients' noise|`` per
    coordinate (with high probability), in encoded units; the encoding adds it
    to its headroom so the ring cannot wrap.
    """

    def sample(self, size: int, scale: float) -> np.ndarray: ...

    def max_abs_sum(self, n_clients: int, scale: float) -> float: ...


def ring_dtype(bits: int) -> type[np.unsignedinteger]:
    """The numpy dtype whose wrapping arithmetic covers Z_{2^bits}."""
    return np.uint32 if bits <= 32 else np.uint64


@dataclass(frozen=True)
class FixedPointEncoding:
    """Quantize ``[-clip, clip]`` to integers (``scale`` levels per unit) inside Z_{2^bits}."""

    bits: int
    scale: float
    clip: float
    stochastic: bool = False

    def __post_init__(self) -> None:
        if not (MIN_BITS <= self.bits <= MAX_BITS):
            raise ConfigurationError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigurationError(f"scale must be finite and > 0, got {self.scale}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be finite and > 0, got {self.clip}")

    # -- construction ---------------------------------------------------
    @classmethod
    def for_sum(
        cls,
        n_clients: int,
        clip: float,
        *,
        bits: int | None = None,
        noise: IntegerNoise | None = None,
        stochastic: bool = False,
    ) -> FixedPointEncoding:
        """The finest power-of-two ``scale`` for which ``n_clients`` inputs (plus noise) cannot wrap.

        ``bits=None`` picks 32 (one machine word per coordinate on the wire).
        Raises :class:`ConfigurationError` when no scale of at least one level
        per unit of ``clip`` fits, naming what would have to change.
        """
        if n_clients < 1:
            raise ConfigurationError(f"need at least one client, got {n_clients}")
        bits = 32 if bits is None else int(bits)
        if not (MIN_BITS <= bits <= MAX_BITS):
            raise ConfigurationError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
        limit = 2 ** (bits - 1) - 1
        # Power-of-two scales make encode/decode exact in float64; walk down from the largest.
        for exp in range(bits, -64, -1):
            scale = 2.0**exp
            need = cls._worst_case(n_clients, clip, scale, noise, stochastic)
            if need <= limit:
                if clip * scale < 1:
                    break
                return cls(bits=bits, scale=scale, clip=float(clip), stochastic=stochastic)
        raise ConfigurationError(
            f"{bits}-bit ring cannot hold the sum of {n_clients} inputs in [-{clip}, {clip}]"
            + (" plus the DP noise bound" if noise is not None else "")
            + " with at least one quantization level per clip range; use more bits or fewer clients"
        )

    @classmethod
    def for_levels(cls, n_clients: int, clip: float, levels: int, *, bits: int | None = None) -> FixedPointEncoding:
        """Quantization to ``b`` bits straight into the ring: ``scale = levels / clip``, stochastic rounding.

        A client's value in ``[-clip, clip]`` becomes an integer in ``[-levels, levels]``
        (``levels = 2^(b-1) - 1`` for ``b`` bits), rounded up or down at random so
        that it is unbiased. The ring is the narrowest that holds the sum of
        ``n_clients`` of them without wrapping, ``bits = bitlen(n (levels + 1)) + 1``
        (``b + ceil(log2 n) + 1`` roughly), unless ``bits`` asks for more; fewer is
        refused. So what travels per coordinate is that ring width, not ``b``.
        """
        if n_clients < 1:
            raise ConfigurationError(f"need at least one client, got {n_clients}")
        if not (isinstance(levels, int) and levels >= 1):
            raise ConfigurationError(f"levels must be an integer >= 1, got {levels!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"clip must be finite and > 0, got {clip}")
        scale = levels / clip
        need = int(cls._worst_case(n_clients, clip, scale, None, True))
        least = need.bit_length() + 1
        if bits is not None and bits < least:
            raise ConfigurationError(f"a {bits}-bit ring cannot hold the sum of {n_clients} values of "
                                     f"{levels} levels each; it needs at least {least} bits")
        ring = least if bits is None else int(bits)
        if ring > MAX_BITS:
            raise ConfigurationError(f"the sum of {n_clients} values of {levels} levels needs a {ring}-bit ring, "
                                     f"above the {MAX_BITS}-bit maximum")
        return cls(bits=max(ring, MIN_BITS), scale=scale, clip=float(clip), stochastic=True)

    @staticmethod
    def _worst_case(n: int, clip: float, scale: float, noise: IntegerNoise | None, stochastic: bool) -> float:
        per_client = math.ceil(clip * scale) + (1 if stochastic else 0)
        bound = float(n) * per_client
        if noise is not None:
            bound += float(noise.max_abs_sum(n, scale))
        return bound

    def check_capacity(self, n_clients: int, noise: IntegerNoise | None = None) -> None:
        """Refuse (ConfigurationError) if ``n_clients`` inputs plus noise could wrap this ring."""
        need = self._worst_case(n_clients, self.clip, self.scale, noise, self.stochastic)
        if need > 2 ** (self.bits - 1) - 1:
            raise ConfigurationError(
                f"{n_clients} clients at scale {self.scale} need |sum| up to {need:.4g} > 2^{self.bits - 1}-1: "
                "the ring could wrap; lower the scale or raise bits"
            )

    # -- properties -----------------------------------------------------
    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return ring_dtype(self.bits)

    @property
    def modulus_mask(self) -> int:
        return (1 << self.bits) - 1

    def max_error(self, n_clients: int) -> float:
        """Per-coordinate bound on |decoded sum - true sum| from rounding alone (no noise)."""
        return n_clients * (1.0 if self.stochastic else 0.5) / self.scale

    # -- encode / decode --------------------------------------------------
    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"input must be a 1-D vector, got shape {x.shape}")
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        # max and -min instead of max(|x|): two reductions, no temporary array
        top = max(float(x.max()), -float(x.min())) if x.size else 0.0
        if not top <= self.clip:  # also catches NaN (max/min propagate it) and infinity
            bad = ~(np.abs(x) <= self.clip)
            i = int(np.argmax(bad))
            if not np.isfinite(x[i]):
                raise ValueError(f"input coordinate {i} is {x[i]!r} (NaN or infinity)")
            raise ValueError(f"input coordinate {i} = {x[i]!r} is outside the clip range [-{self.clip}, {self.clip}]")
        return x

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """``round(x * scale)`` as int64; refuses values outside ``[-clip, clip]`` or non-finite."""
        y = np.multiply(self._checked(x), self.scale, dtype=np.float64)  # float64 even for float32 input
        if self.stochastic:
            # Rounding randomness is not secret, but it still comes from the OS, never numpy.
            u = np.frombuffer(os.urandom(8 * y.size), dtype=np.uint64) >> np.uint64(11)
            frac = y - np.floor(y)
            return (np.floor(y) + (u * 2.0**-53 < frac)).astype(np.int64)
        return np.rint(y).astype(np.int64)

    def to_ring(self, q: np.ndarray) -> np.ndarray:
        """Signed integers -> their residues in Z_{2^bits}."""
        r = np.asarray(q, dtype=np.int64).astype(np.uint64)  # two's complement is the residue mod 2^64
        if self.bits < 64:
            r &= np.uint64(self.modulus_mask)
        return r.astype(self.dtype)

    def encode(self, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Clip-checked quantization of ``x`` (plus integer ``noise``) into the ring."""
        if noise is None and not self.stochastic and self._word_exact:
            return self._encode_word(x)
        q = self.quantize(x)
        if noise is not None:
            noise = np.asarray(noise)
            if noise.shape != q.shape or noise.dtype.kind not in "iu":
                raise ValueError(f"noise must be an integer array of shape {q.shape}, got {noise.dtype} {noise.shape}")
            q += noise.astype(np.int64)
        r = q.astype(self.dtype)  # int64 -> uint32/uint64 keeps the low bits: the residue mod 2^32 / 2^64
        if self.bits not in (32, 64):
            r &= self.dtype(self.modulus_mask)
        return r

    @property
    def _word_exact(self) -> bool:
        """Whether :meth:`_encode_word` is exact: bits <= 32, power-of-two scale, |q| within int32."""
        return (self.bits <= 32 and math.frexp(self.scale)[0] == 0.5
                and math.ceil(self.clip * self.scale) <= 2 ** (self.bits - 1) - 1)

    def _encode_word(self, x: np.ndarray) -> np.ndarray:
        """The common case (deterministic rounding, no noise, bits <= 32) in one buffer.

        ``x * scale`` is exact in x's own float type (``scale`` is a power of two), so rounding it
        there equals rounding the float64 product. Capacity guarantees ``|round(x * scale)| <=
        2^(bits-1) - 1``, so the float -> int32 cast is exact and its bits, viewed as uint32, are the
        residue mod 2^32.
        """
        x = self._checked(x)
        buf = np.multiply(x, x.dtype.type(self.scale))
        np.rint(buf, out=buf)
        r = buf.astype(np.int32).view(np.uint32)
        if self.bits != 32:
            r &= np.uint32(self.modulus_mask)
        return r

    def signed(self, r: np.ndarray) -> np.ndarray:
        """The representative of each ring element in ``[-2^(b-1), 2^(b-1))`` as int64."""
        r = np.asarray(r).astype(np.uint64) & np.uint64(self.modulus_mask)
        half = np.uint64(1 << (self.bits - 1))
        out = r.astype(np.int64)  # exact for bits < 64; wraps correctly for bits == 64
        if self.bits < 64:
            out = np.where(r >= half, out - (1 << self.bits), out)
        return out

    def decode(self, r: np.ndarray) -> np.ndarray:
        """Ring elements (a sum of encodings) back to float64."""
        return self.signed(r).astype(np.float64) / self.scale


# -- packing -----------------------------------------------------------------
def packed_size(length: int, bits: int) -> int:
    """Bytes needed for ``length`` elements of ``bits`` bits each."""
    return (length * bits + 7) // 8


def pack(r: np.ndarray, bits: int) -> bytes:
    """Little-endian bit packing of ring elements, ``bits`` bits each (no padding between elements)."""
    r = np.ascontiguousarray(r, dtype=ring_dtype(bits))
    if bits in (8, 16, 32, 64):
        return r.astype(f"<u{bits // 8}", copy=False).tobytes()
    width = r.dtype.itemsize * 8
    le = r.astype(r.dtype.newbyteorder("<"), copy=False)
    allbits = np.unpackbits(le.view(np.uint8).reshape(-1, width // 8), axis=1, bitorder="little")
    return np.packbits(allbits[:, :bits].reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack`; raises ValueError unless ``data`` has exactly the packed size."""
    if len(data) != packed_size(length, bits):
        raise ValueError(f"packed vector has {len(data)} bytes, expected {packed_size(length, bits)}")
    dtype = ring_dtype(bits)
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(dtype)
    width = np.dtype(dtype).itemsize * 8
    raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if raw[length * bits :].any():
        raise ValueError("packed vector has non-zero padding bits")
    allbits = raw[: length * bits]
    full = np.zeros((length, width), dtype=np.uint8)
    full[:, :bits] = allbits.reshape(length, bits)
    return np.packbits(full, axis=1, bitorder="little").reshape(-1).view(np.dtype(dtype).newbyteorder("<")).astype(dtype)
