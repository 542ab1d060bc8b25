"""Flooding noise for released decryptions, drawn from the OS CSPRNG (no numpy generator, no torch).

A fresh 256-bit key from ``os.urandom`` drives AES-256-CTR; each 128-bit
block gives two 53-bit uniforms in (0, 1), and Box-Muller turns each pair
into two independent standard normals.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def gaussian(count: int, std: float) -> np.ndarray:
    """``count`` independent ``N(0, std^2)`` draws (float64) from the OS-keyed stream."""
    if count <= 0 or std <= 0:
        return np.zeros(max(count, 0), dtype=np.float64)
    pairs = -(-count // 2)
    enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(enc.update(bytes(16 * pairs)), dtype="<u8").reshape(pairs, 2)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u[:, 0])) * std
    theta = 2.0 * math.pi * u[:, 1]
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:count]
