"""Where a run's data comes from: the synthetic generator's size options and interaction files of any layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsecure.cli import main


def cli(argv: list, capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# -- synthetic data at any size ---------------------------------------------------------------------------------


def test_the_size_options_shape_the_synthetic_data(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _, stderr = cli(["run", "--users", 60, "--items", 80, "--interactions-per-user", 8, "--rounds", 1,
                         "--dim", 8, "--negatives", 0, "--quiet", "--json", out], capsys)
    assert rc == 0, stderr
    result = json.loads(out.read_text())
    assert (result["data"]["users"], result["data"]["items"]) == (60, 80)
    assert 5 * 60 <= result["data"]["interactions"] <= 12 * 60
    assert result["config"]["users"] == 60 and result["config"]["interactions_per_user"] == 8


@pytest.mark.parametrize("option, value", [("--users", 100), ("--items", 50), ("--interactions-per-user", 9)])
def test_a_size_option_with_a_data_file_is_refused_by_name(tmp_path, capsys, option, value):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    rc, _, stderr = cli(["run", "--data", path, option, value], capsys)
    assert rc == 2 and option in stderr and "--data synthetic" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option, value", [("--users", 0), ("--items", 9), ("--interactions-per-user", 4)])
def test_a_size_below_the_generator_floor_is_refused_by_name(capsys, option, value):
    rc, _, stderr = cli(["run", option, value], capsys)
    assert rc == 2 and option in stderr
