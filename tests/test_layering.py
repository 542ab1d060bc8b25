"""The dependency direction of DESIGN.md: protocol packages know nothing of recommenders or the round loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedsecure"
PROTOCOL_PACKAGES = ("secagg", "ckks", "dp", "robust")
# the one module of the engine they may use: the interface they implement
ALLOWED_FROM_FL = {"fedsecure.fl.aggregation", "fedsecure.fl.local"}


def fedsecure_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "fedsecure" or n.startswith("fedsecure.")}


@pytest.mark.parametrize("package", PROTOCOL_PACKAGES)
def test_protocol_packages_import_no_recommender_engine_or_cli_code(package):
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"fedsecure/{package} has no modules"
    for path in files:
        for name in fedsecure_imports(path):
            own = name.startswith(f"fedsecure.{package}")
            interface = name in ALLOWED_FROM_FL
            sibling_protocol = any(name.startswith(f"fedsecure.{p}") for p in PROTOCOL_PACKAGES)
            assert own or interface or sibling_protocol, f"{path.relative_to(PACKAGE)} imports {name}"


def test_recsys_does_not_import_protocols_or_the_engine():
    for path in sorted((PACKAGE / "recsys").rglob("*.py")):
        for name in fedsecure_imports(path):
            # fedsecure.stats (intervals) is a leaf: it imports nothing from fedsecure
            assert name.startswith("fedsecure.recsys") or name == "fedsecure.stats", \
                f"{path.relative_to(PACKAGE)} imports {name}"
    assert fedsecure_imports(PACKAGE / "stats.py") == set()
