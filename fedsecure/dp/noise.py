"""DP noise from a cryptographically secure keystream.

Why not ``torch.randn``: PyTorch's default generator starts from a fixed seed,
and any generator seeded from the user's ``--seed`` is just as predictable.
Whoever knows the seed can regenerate the noise and subtract it, which voids
the differential-privacy guarantee. :class:`NoiseSource` therefore derives
every random bit from an AES-256-CTR keystream (``cryptography``) whose key is
32 bytes from ``os.urandom``; the keystream is indistinguishable from uniform
bits to anyone without the key, and the key never leaves the object.

From keystream to distributions (all vectorised):

* uniform: a 64-bit word ``w`` gives ``u = ((w >> 11) + 1/2) * 2^-53`` in the
  open interval (0, 1), so ``log(u)`` is always finite.
* Gaussian (Box-Muller): from uniforms ``u1, u2``,
  ``r = sqrt(-2 ln u1)``, ``z1 = r cos(2 pi u2)``, ``z2 = r sin(2 pi u2)`` are
  independent N(0, 1). The radius uses a 53-bit uniform, so the tail reaches
  ``sqrt(2 * 54 ln 2) ~= 8.65`` standard deviations; the angle needs only 32
  bits. This is a floating-point Gaussian: exact in theory, not bit-exact
  (Mironov 2012 shows float noise leaks through its low-order bits); where that
  matters use the integer mechanism (:meth:`NoiseSource.discrete_gaussian`).
* discrete Gaussian N_Z(0, sigma^2), ``P(x) ∝ exp(-x^2 / (2 sigma^2))`` on the
  integers: Canonne, Kamath & Steinke (NeurIPS 2020) Algorithm 3 -- draw a
  discrete Laplace ``Y`` with scale ``t = floor(sigma) + 1`` (the difference of
  two geometrics, each ``floor(-t ln u)``) and accept it with probability
  ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``. The algorithm is exact in exact
  arithmetic; here the geometric draws and the acceptance test use float64,
  which perturbs probabilities by ~1e-16 relative (said here, not hidden).

:meth:`NoiseSource.insecure_seeded` exists for reproducible debugging only; its
:meth:`describe` says the privacy claim is void, and results must print that.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Shape = int | Sequence[int] | torch.Size

_TWO_PI = 2.0 * math.pi


def _numel(shape: Shape) -> tuple[tuple[int, ...], int]:
    dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in dims):
        raise ValueError(f"noise shape must be non-negative, got {dims}")
    return dims, math.prod(dims)


def _check_scale(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


class NoiseSource:
    """Random numbers for DP noise from an AES-256-CTR keystream keyed from ``os.urandom``.

    ``NoiseSource()`` is the only constructor a private run should use. The
    object is thread-safe (one keystream, guarded by a lock) and never repeats
    keystream: CTR mode advances a 128-bit counter across calls.
    """

    def __init__(self) -> None:
        self._init(os.urandom(32), secure=True, origin="aes-256-ctr keystream keyed from os.urandom")

    @classmethod
    def insecure_seeded(cls, seed: int) -> NoiseSource:
        """INSECURE, reproducible noise: the key is SHA-256 of ``seed``.

        Anyone who knows ``seed`` can regenerate and subtract the noise, so a
        run using this source has NO differential-privacy guarantee. Use only
        for debugging, behind an explicit flag; :meth:`describe` says so.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"insecure_seeded: seed must be an int, got {type(seed).__name__}")
        key = hashlib.sha256(b"fedsecure/dp/noise insecure seed:" + str(int(seed)).encode()).digest()
        obj = cls.__new__(cls)
        obj._init(
            key,
            secure=False,
            origin=f"INSECURE seeded keystream (seed={int(seed)}): noise is reproducible, privacy claim VOID",
        )
        return obj

    def _init(self, key: bytes, *, secure: bool, origin: str) -> None:
        # A random key makes a fixed all-zero nonce safe: the (key, counter) pair never repeats.
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._secure = secure
        self._origin = origin
        self._zeros = b""

    # -- description ---------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        """False only for :meth:`insecure_seeded` sources."""
        return self._secure

    def describe(self) -> str:
        """Where the noise comes from, for results and logs."""
        return self._origin

    def __repr__(self) -> str:  # never shows key material
        return f"NoiseSource({self._origin!r})"

    # -- raw material --------------------------------------------------------------------------

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        return bytes(self._keystream(int(n)))

    def _keystream(self, nbytes: int) -> bytearray:
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        # update_into into a preallocated buffer avoids two copies of a ~25 MB stream.
        buf = bytearray(nbytes + 15)
        if os.getpid() != self._pid:
            self._after_fork()
        with self._lock:
            if len(self._zeros) < nbytes:
                self._zeros = bytes(nbytes)
            written = self._encryptor.update_into(memoryview(self._zeros)[:nbytes], buf)
        assert written == nbytes  # CTR is a stream mode: output length == input length
        return buf

    def _after_fork(self) -> None:
        # A forked child holds a copy of the parent's key *and* counter: parent and child (and
        # sibling workers) would draw identical noise. A secure source re-keys from the OS;
        # a seeded one cannot without breaking its reproducibility, so it refuses.
        if not self._secure:
            raise RuntimeError(
                "insecure seeded NoiseSource used in a forked process: its stream would repeat the parent's"
            )
        self._init(os.urandom(32), secure=True, origin=self._origin)

    def __reduce__(self) -> tuple:
        # Sent to another process: a secure source arrives as a fresh, independently keyed one;
        # the key itself never travels.
        if not self._secure:
            raise TypeError("insecure seeded NoiseSource cannot be sent to another process: its stream would repeat")
        return (NoiseSource, ())

    def _words(self, n: int) -> np.ndarray:
        """``n`` uniform 64-bit words."""
        return np.frombuffer(self._keystream(8 * n), dtype=np.uint64, count=n)

    def uniform_np(self, shape: Shape) -> np.ndarray:
        """Uniform float64 in the open interval (0, 1), 53 random bits each."""
        dims, n = _numel(shape)
        u = (self._words(n) >> np.uint64(11)).astype(np.float64)
        u += 0.5
        u *= 2.0**-53
        return u.reshape(dims)

    def bits_np(self, shape: Shape) -> np.ndarray:
        """Uniform 64-bit words as ``uint64``."""
        dims, n = _numel(shape)
        return self._words(n).copy().reshape(dims)

    # -- continuous Gaussian -------------------------------------------------------------------

    def gaussian(
        self,
        shape: Shape,
        std: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """N(0, std^2) samples of ``shape`` as a torch tensor (Box-Muller, see module doc)."""
        std = _check_scale("std", std)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"gaussian: dtype must be torch.float32 or torch.float64, got {dtype}")
        dims, n = _numel(shape)
        z = self._normal(n, std, np.float32 if dtype == torch.float32 else np.float64)
        t = torch.from_numpy(z).reshape(dims)
        return t if device is None else t.to(device)

    def gaussian_np(self, shape: Shape, std: float, dtype: type = np.float64) -> np.ndarray:
        """N(0, std^2) samples of ``shape`` as a numpy array."""
        std = _check_scale("std", std)
        dims, n = _numel(shape)
        z = self._normal(n, std, np.float64 if np.dtype(dtype) == np.float64 else np.float32)
        return z.reshape(dims).astype(dtype, copy=False)

    # Box-Muller pairs per chunk: 12 keystream bytes plus a few float temporaries per pair keep a
    # chunk's working set (~1.5 MB) in cache, and reusing the chunk buffers avoids page-faulting
    # fresh memory for every temporary of a multi-megabyte draw (together ~2x faster at 3.2M floats).
    _CHUNK_PAIRS = 1 << 16

    def _normal(self, n: int, std: float, np_dtype: type) -> np.ndarray:
        """``n`` samples of N(0, std^2) in ``np_dtype``: Box-Muller over the keystream, chunk by chunk.

        Layout: pair ``i`` gives ``out[i] = r_i cos(theta_i)`` and ``out[half + i] = r_i sin(theta_i)``
        with ``r_i = std * sqrt(-2 ln u_i)``, ``u_i`` a 53-bit uniform (the tail, see module doc)
        and ``theta_i`` a 32-bit uniform angle.
        """
        # numpy, not torch: numpy's SIMD log/sin/cos run single-threaded, while torch's
        # intra-op threads stall badly when the cores are shared (measured 150 ms vs 20 ms
        # for 3.2M floats on a loaded 2-core machine; see benchmarks/bench_dp_user_noise.py).
        half = (n + 1) // 2
        out = np.empty(2 * half, dtype=np_dtype)
        if half == 0:
            return out[:n]
        m = min(half, self._CHUNK_PAIRS)
        raw = bytearray(12 * m + 15)  # update_into needs block_size - 1 bytes of slack
        zeros = bytes(12 * m)
        words = np.frombuffer(raw, dtype=np.uint64, count=m)
        angles = np.frombuffer(raw, dtype=np.int32, count=m, offset=8 * m)
        shifted = np.empty(m, dtype=np.uint64)
        r = np.empty(m, dtype=np_dtype)
        theta = np.empty(m, dtype=np_dtype)
        one_half, ulp, minus_two = np_dtype(0.5), np_dtype(2.0**-53), np_dtype(-2.0)
        turn, var_scale = np_dtype(_TWO_PI * 2.0**-32), np_dtype(std)
        for lo in range(0, half, m):
            k = min(m, half - lo)
            self._keystream_into(zeros, raw, 12 * m)
            # (w >> 11) is in [0, 2^53): exact in float64, and in float32 with 24-bit *relative*
            # precision -- float32 keeps the magnitude of tiny u, hence the tail. It is < 2^63,
            # so the signed view converts with the faster int64 -> float instruction.
            np.right_shift(words[:k], np.uint64(11), out=shifted[:k])
            rk = r[:k]
            rk[...] = shifted[:k].view(np.int64)
            rk += one_half
            rk *= ulp
            np.log(rk, out=rk)
            rk *= minus_two
            np.sqrt(rk, out=rk)
            if std != 1.0:
                rk *= var_scale
            # int32 angle word in [-2^31, 2^31): theta uniform over a full turn.
            tk = theta[:k]
            tk[...] = angles[:k]
            tk *= turn
            c, s = out[lo : lo + k], out[half + lo : half + lo + k]
            np.cos(tk, out=c)
            c *= rk
            np.sin(tk, out=s)
            s *= rk
        return out[:n]

    def _keystream_into(self, zeros: bytes, buf: bytearray, nbytes: int) -> None:
        """Overwrite ``buf[:nbytes]`` with fresh keystream (``zeros`` holds >= nbytes zero bytes)."""
        if os.getpid() != self._pid:
            self._after_fork()
        with self._lock:
            written = self._encryptor.update_into(memoryview(zeros)[:nbytes], buf)
        assert written == nbytes  # CTR is a stream mode: output length == input length

    # -- integer noise for distributed DP ------------------------------------------------------

    def discrete_gaussian(self, shape: Shape, sigma: float) -> np.ndarray:
        """Discrete Gaussian N_Z(0, sigma^2) samples (int64), CKS'20 Algorithm 3 vectorised.

        ``sigma`` is the scale parameter; the variance is at most ``sigma^2``
        and within ``1e-12`` relative of it once ``sigma >= 1`` (CKS'20 Prop. 19).
        """
        sigma = _check_scale("sigma", sigma)
        dims, n = _numel(shape)
        if sigma == 0.0 or n == 0:
            return np.zeros(dims, dtype=np.int64)
        if sigma > 2.0**40:
            raise ValueError(f"discrete_gaussian: sigma {sigma:.3g} too large for int64 noise")
        t = math.floor(sigma) + 1.0
        centre = sigma * sigma / t
        two_var = 2.0 * sigma * sigma
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            need = n - filled
            # Acceptance is >= ~0.5 for every sigma (CKS'20 Thm 25 bounds the loop), so
            # drawing 2x plus slack usually finishes in one pass.
            m = 2 * need + 64
            u = self.uniform_np(3 * m)
            g1 = np.floor(-t * np.log(u[:m]))
            g2 = np.floor(-t * np.log(u[m : 2 * m]))
            y = g1 - g2
            accept = u[2 * m :] < np.exp(-np.square(np.abs(y) - centre) / two_var)
            got = y[accept][:need]
            out[filled : filled + got.size] = got.astype(np.int64)
            filled += got.size
        return out.reshape(dims)
