"""Bytes in and out of SEAL objects.

TenSEAL's SEAL binding (``tenseal.sealapi``) saves and loads its objects only
through a file path. We give it an anonymous in-memory file (``memfd``; a
private temporary directory where memfd is missing) so that nothing touches
the disk and the protocol layer deals in ``bytes`` only.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()


class _Scratch:
    """One in-memory file per thread, reused for every save/load."""

    def __init__(self) -> None:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("fedsecure-ckks", getattr(os, "MFD_CLOEXEC", 0))
            self.path = f"/proc/self/fd/{self.fd}"
            if not os.path.exists(self.path):  # no procfs: fall back below
                os.close(self.fd)
                self._tmpfile()
        else:
            self._tmpfile()

    def _tmpfile(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fedsecure-ckks-")
        self.path = os.path.join(self._dir.name, "scratch")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def save(self, obj: Any) -> bytes:
        os.ftruncate(self.fd, 0)
        obj.save(self.path)
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0)

    def load(self, fn: Callable[[str], None], data: bytes) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        fn(self.path)


def _scratch() -> _Scratch:
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = _Scratch()
    return s


def save(obj: Any) -> bytes:
    """SEAL's own serialization of ``obj`` (header + zstd-compressed payload)."""
    return _scratch().save(obj)


def load(obj: Any, data: bytes, *args: Any) -> Any:
    """Fill ``obj`` from ``data`` (``obj.load(*args, path)``) and return it; SEAL validates what it loads."""
    _scratch().load(lambda path: obj.load(*args, path), data)
    return obj
