"""Coefficient access to serialized SEAL ciphertexts (dangerous primitive: no SEAL validation here).

TenSEAL's binding gives no buffer access to a ciphertext's coefficients, so
the mask layer reads and writes SEAL's own serialization. A SEAL object on
the wire is ``header(16) || payload``; the header says how the payload is
compressed. We read ``none`` and ``zstd`` frames made of raw or RLE blocks
(what SEAL's zstd writer produces for uniformly random residues, which it
cannot compress) and refuse any other frame; we always write ``none``, which
SEAL loads and validates (``is_valid_for``: parms_id, sizes, every residue
below its prime) when the object is loaded into a context.

Ciphertext payload (SEAL 4.x ``Ciphertext::save_members``), little-endian::

    parms_id 4 x u64 | is_ntt_form u8 | size u64 | N u64 | k u64 | scale f64 |
    correction_factor u64 | DynArray (its own 16-byte header | count u64 | count x u64)

with the residues ordered polynomial, prime, coefficient.
"""

from __future__ import annotations

import struct

import numpy as np

from fedsecure.ckks.errors import CKKSError

SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
_COMPR_NONE, _COMPR_ZSTD = 0, 2
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_META = struct.Struct("<32sBQQQdQ")
_PREFIX = _META.size + _HEADER.size + 8  # 97 bytes before the first residue


def _payload(data: bytes | memoryview) -> tuple[tuple[int, int], bytes]:
    """SEAL's (major, minor) version and the uncompressed payload of a serialized object."""
    if len(data) < _HEADER.size:
        raise CKKSError(f"SEAL object truncated: {len(data)} bytes")
    magic, hsize, major, minor, compr, _, size = _HEADER.unpack_from(data, 0)
    if magic != SEAL_MAGIC or hsize != _HEADER.size:
        raise CKKSError("not a SEAL object (bad header magic)")
    if size != len(data):
        raise CKKSError(f"SEAL object says {size} bytes, has {len(data)}")
    body = memoryview(data)[_HEADER.size :]
    if compr == _COMPR_NONE:
        return (major, minor), bytes(body)
    if compr != _COMPR_ZSTD:
        raise CKKSError(f"SEAL object uses compression mode {compr} (only none and zstd are read)")
    return (major, minor), _zstd_stored(body)


def _zstd_stored(z: memoryview) -> bytes:
    """The content of a zstd frame made of raw and RLE blocks only (no entropy-coded block)."""
    if bytes(z[:4]) != _ZSTD_MAGIC or len(z) < 5:
        raise CKKSError("SEAL object: bad zstd frame magic")
    fhd = z[4]
    pos = 5
    single, fcs_flag, did = (fhd >> 5) & 1, fhd >> 6, fhd & 3
    if (fhd >> 3) & 1:
        raise CKKSError("SEAL object: reserved zstd frame bit set")
    pos += (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
    out = []
    while True:
        if pos + 3 > len(z):
            raise CKKSError("SEAL object: zstd frame truncated")
        bh = int.from_bytes(z[pos : pos + 3], "little")
        pos += 3
        last, kind, size = bh & 1, (bh >> 1) & 3, bh >> 3
        if kind == 0:
            if pos + size > len(z):
                raise CKKSError("SEAL object: zstd raw block truncated")
            out.append(bytes(z[pos : pos + size]))
            pos += size
        elif kind == 1:
            if pos + 1 > len(z):
                raise CKKSError("SEAL object: zstd RLE block truncated")
            out.append(bytes(z[pos : pos + 1]) * size)
            pos += 1
        else:
            raise CKKSError("SEAL object: entropy-coded zstd block (a ciphertext of uniform residues never has one)")
        if last:
            break
    if (fhd >> 2) & 1:
        pos += 4  # content checksum; SEAL does not write one, and SEAL validates the residues on load
    if pos != len(z):
        raise CKKSError(f"SEAL object: {len(z) - pos} bytes after the zstd frame")
    return out[0] if len(out) == 1 else b"".join(out)


def read_ciphertext(data: bytes, n: int, k: int, size: int = 2) -> tuple[tuple[int, int], bytes, np.ndarray]:
    """``(version, metadata prefix, residues[size, k, n])`` of a serialized ciphertext in NTT form."""
    version, body = _payload(data)
    if len(body) < _PREFIX:
        raise CKKSError("ciphertext payload truncated")
    _, ntt, got_size, got_n, got_k, _, _ = _META.unpack_from(body, 0)
    count = struct.unpack_from("<Q", body, _META.size + _HEADER.size)[0]
    if (got_size, got_n, got_k) != (size, n, k) or ntt != 1:
        raise CKKSError(
            f"ciphertext shape (size {got_size}, N {got_n}, primes {got_k}, ntt {ntt}) is not ({size}, {n}, {k}, 1)"
        )
    if count != size * n * k or len(body) != _PREFIX + 8 * count:
        raise CKKSError("ciphertext payload length disagrees with its shape")
    residues = np.frombuffer(body, dtype="<u8", count=count, offset=_PREFIX).reshape(size, k, n)
    return version, body[:_PREFIX], residues


def write_ciphertext(version: tuple[int, int], prefix: bytes, *polys: np.ndarray, ntt: bool = True) -> bytes:
    """Serialize (uncompressed) a ciphertext with the metadata ``prefix`` of one read by :func:`read_ciphertext`
    and new residues, polynomial by polynomial; its size is the number of polynomials given (2 to 16), in NTT
    form or, with ``ntt=False``, in coefficient form (for SEAL to transform)."""
    parts = [np.ascontiguousarray(p, dtype="<u8") for p in polys]
    count = sum(p.size for p in parts)
    meta = bytearray(prefix)
    struct.pack_into("<BQ", meta, 32, int(ntt), len(parts))  # is_ntt_form and size, after the 32-byte parms_id
    magic, hsize, major, minor, compr, reserved, _ = _HEADER.unpack_from(meta, _META.size)
    _HEADER.pack_into(meta, _META.size, magic, hsize, major, minor, compr, reserved, _HEADER.size + 8 + 8 * count)
    struct.pack_into("<Q", meta, _META.size + _HEADER.size, count)
    size = _HEADER.size + len(meta) + 8 * count
    head = _HEADER.pack(SEAL_MAGIC, _HEADER.size, version[0], version[1], _COMPR_NONE, 0, size)
    return b"".join([head, bytes(meta), *(memoryview(p).cast("B") for p in parts)])


def add_mod(a: np.ndarray, b: np.ndarray, moduli: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``(a + b) mod q`` per prime row (the last two axes are prime, coefficient), residues below 2^63.

    ``s - q`` wraps around 2^64 exactly when ``s < q``, so ``min(s, s - q)`` is the reduced value.
    """
    q = moduli.reshape((1,) * (a.ndim - 2) + (-1, 1))
    s = np.add(a, b, out=out)
    return np.minimum(s, s - q, out=s)


def sub_mod(a: np.ndarray, b: np.ndarray, moduli: np.ndarray) -> np.ndarray:
    """``(a - b) mod q`` per prime row, both below q: ``min(a - b, a - b + q)`` in wrapping u64."""
    q = moduli.reshape((1,) * (a.ndim - 2) + (-1, 1))
    s = np.subtract(a, b)
    return np.minimum(s, s + q, out=s)


def poly_bytes(poly: np.ndarray) -> bytes:
    """One polynomial ``[k, n]`` (residues below each prime, NTT form) as ``k * n`` little-endian u64 words."""
    return np.ascontiguousarray(poly, dtype="<u8").tobytes()


def read_poly(data: bytes | memoryview, n: int, moduli: np.ndarray) -> np.ndarray:
    """The ``[k, n]`` residues of a polynomial written by :func:`poly_bytes`; refuses a wrong size or a residue >= q."""
    k = moduli.size
    if len(data) != 8 * k * n:
        raise CKKSError(f"polynomial has {len(data)} bytes (expected {8 * k * n} for {k} x {n} residues)")
    poly = np.frombuffer(data, dtype="<u8").reshape(k, n).astype(np.uint64)
    if (poly >= moduli.reshape(-1, 1)).any():
        raise CKKSError("polynomial has a residue not below its prime")
    return poly
