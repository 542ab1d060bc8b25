"""Secret randomness in fedsecure.secagg comes from the OS only (never numpy's or `random`'s generators)."""

import ast
from pathlib import Path

import numpy as np

import fedsecure.secagg as secagg
from fedsecure.secagg import shamir

SOURCES = sorted(Path(secagg.__file__).parent.glob("*.py"))


def test_no_numpy_or_random_module_generators_in_the_protocol_package():
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "random" for a in node.names):
                offenders.append(f"{path.name}: import random")
            if isinstance(node, ast.ImportFrom) and node.module in ("random", "numpy.random"):
                offenders.append(f"{path.name}: from {node.module} import ...")
            if isinstance(node, ast.Attribute) and node.attr == "random" and isinstance(node.value, ast.Name) \
                    and node.value.id in ("np", "numpy"):
                offenders.append(f"{path.name}:{node.lineno}: np.random")
    assert SOURCES and not offenders, offenders


def test_shamir_coefficients_come_from_the_randomness_source_given():
    calls = []

    def spy(n):
        calls.append(n)
        return bytes(n)  # all-zero coefficients: shares must then equal the secret's limbs

    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3], 3, spy)
    assert calls == [4 * 2 * shamir.LIMBS]
    assert (shares == shamir.bytes_to_limbs(secret)).all()
    # The default is os.urandom: two splits of the same secret differ.
    a, b = shamir.split(secret, [1, 2, 3], 3), shamir.split(secret, [1, 2, 3], 3)
    assert not np.array_equal(a, b)
