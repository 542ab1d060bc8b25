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

The *modular* ring (``modular=True``, :meth:`FixedPointEncoding.for_ring`) is
the compressed one: exactly ``b`` bits per coordinate on the wire whatever the
number of clients, as in the distributed discrete Gaussian mechanism (Kairouz,
Liu, Steinke, ICML 2021) without its noise. ``clip`` bounds the L2 norm of a
client's (rotated) vector, rounding is stochastic, and the scale is set from a
bound on the norm of the *sum* so that the sum's coordinates stay inside
``[-2^(b-1), 2^(b-1))`` with high probability; a coordinate outside wraps (its
decoded value is off by a multiple of ``2^b / scale``). The masks are uniform
mod ``2^b`` either way, so a wrap, or any scale, costs accuracy, never
privacy.

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
#: modular rings: how many standard deviations of a rotated sum's coordinate the ring holds (by default, and
#: at most: a client refuses a scale coarser than MAX_SIGMAS for the worst-case sum)
DEFAULT_SIGMAS, MAX_SIGMAS = 4.0, 8.0


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


def ring_scale(bits: int, length: int, sum_norm: float, sigmas: float) -> float:
    """``(2^(bits-1) - 1) sqrt(length) / (sigmas * sum_norm)``: levels per unit value in a modular ring."""
    if not (MIN_BITS <= bits <= MAX_BITS):
        raise ConfigurationError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    if not (length >= 1 and math.isfinite(sum_norm) and sum_norm > 0 and math.isfinite(sigmas) and sigmas > 0):
        raise ConfigurationError(f"ring scale needs length >= 1, sum_norm > 0 and sigmas > 0, got {length}, "
                                 f"{sum_norm}, {sigmas}")
    return (2 ** (bits - 1) - 1) * math.sqrt(length) / (sigmas * sum_norm)


def ring_dtype(bits: int) -> type[np.unsignedinteger]:
    """The numpy dtype whose wrapping arithmetic covers Z_{2^bits}."""
    return np.uint32 if bits <= 32 else np.uint64


@dataclass(frozen=True)
class FixedPointEncoding:
    """Quantize ``[-clip, clip]`` to integers (``scale`` levels per unit) inside Z_{2^bits}.

    ``modular=True`` is the compressed ring (Kairouz, Liu, Steinke 2021): ``clip`` bounds the L2 *norm* of a
    client's vector (which the caller has rotated, so its coordinates are about ``N(0, |x|^2 / length)``),
    rounding is stochastic, and the sum is allowed to wrap: the scale (:meth:`for_ring`) keeps it inside
    the ring with high probability, not always, and the decoder reads the centred residue.
    """

    bits: int
    scale: float
    clip: float
    stochastic: bool = False
    modular: bool = False

    def __post_init__(self) -> None:
        if not (MIN_BITS <= self.bits <= MAX_BITS):
            raise ConfigurationError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigurationError(f"scale must be finite and > 0, got {self.scale}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be finite and > 0, got {self.clip}")
        if self.modular and not self.stochastic:
            raise ConfigurationError("a modular ring needs stochastic rounding (its sum must be unbiased)")

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
    def for_ring(cls, bits: int, n_clients: int, norm_bound: float, length: int, sum_norm: float,
                 sigmas: float = DEFAULT_SIGMAS) -> FixedPointEncoding:
        """The modular ``bits``-bit ring for ``n_clients`` rotated vectors of L2 norm at most ``norm_bound``.

        ``scale = (2^(bits-1) - 1) sqrt(length) / (sigmas * sum_norm)``: a rotated vector whose sum has norm
        ``sum_norm`` has coordinates of standard deviation about ``sum_norm / sqrt(length)``, so the sum of
        the encodings stays inside ``[-2^(bits-1), 2^(bits-1))`` unless a coordinate lies ``sigmas`` standard
        deviations out (then it wraps). ``sum_norm`` is clamped to ``[norm_bound, n_clients * norm_bound]``
        (one client alone; every client at the bound and aligned), the range a client accepts
        (:meth:`ring_scale_range`).
        """
        lo, hi = float(norm_bound), float(n_clients) * float(norm_bound)
        sum_norm = min(max(float(sum_norm), lo), hi)
        scale = ring_scale(bits, length, sum_norm, sigmas)
        return cls(bits=int(bits), scale=scale, clip=float(norm_bound), stochastic=True, modular=True)

    @staticmethod
    def ring_scale_range(bits: int, n_clients: int, norm_bound: float, length: int) -> tuple[float, float]:
        """The scales a client accepts in a modular ring (:meth:`check_capacity`).

        Lowest: every client at the bound, all aligned (sum norm ``n * norm_bound``), held to
        :data:`MAX_SIGMAS` standard deviations -- a coarser scale only throws resolution away. Highest:
        one client alone at the bound filling the ring at one standard deviation -- a finer scale makes even
        a single client's encoding wrap. Neither bound protects privacy (the masks hide a client's input
        at any scale; the server learns the sum mod 2^bits and nothing else); they bound how far a server
        can spoil the sum's accuracy.
        """
        return (ring_scale(bits, length, n_clients * norm_bound, MAX_SIGMAS) * (1 - 1e-9),
                ring_scale(bits, length, norm_bound, 1.0) * (1 + 1e-9))

    @staticmethod
    def _worst_case(n: int, clip: float, scale: float, noise: IntegerNoise | None, stochastic: bool) -> float:
        per_client = math.ceil(clip * scale) + (1 if stochastic else 0)
        bound = float(n) * per_client
        if noise is not None:
            bound += float(noise.max_abs_sum(n, scale))
        return bound

    def check_capacity(self, n_clients: int, noise: IntegerNoise | None = None, *, length: int | None = None) -> None:
        """Refuse (ConfigurationError) if ``n_clients`` inputs plus noise could wrap this ring.

        A modular ring may wrap by design; it is refused instead when its scale lies outside
        :meth:`ring_scale_range` for vectors of ``length`` coordinates, or when DP noise is asked for.
        """
        if self.modular:
            if noise is not None:
                raise ConfigurationError("a modular ring takes no DP noise (its scale is not calibrated to it)")
            if length is None:
                raise ConfigurationError("checking a modular ring needs the vector length")
            lo, hi = self.ring_scale_range(self.bits, n_clients, self.clip, length)
            if not lo <= self.scale <= hi:
                raise ConfigurationError(
                    f"modular {self.bits}-bit ring: scale {self.scale:.6g} is outside [{lo:.6g}, {hi:.6g}], the "
                    f"range for {n_clients} clients with vectors of norm <= {self.clip} over {length} coordinates")
            return
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
        if self.modular:
            norm = float(np.sqrt(np.dot(x.astype(np.float64), x.astype(np.float64))))
            if not math.isfinite(norm):
                raise ValueError("input has a NaN or infinite coordinate")
            if norm > self.clip * (1 + 2.0**-20):  # float32 rounding of a vector clipped to the bound
                raise ValueError(f"input norm {norm!r} is above the ring's norm bound {self.clip}")
            return x
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
