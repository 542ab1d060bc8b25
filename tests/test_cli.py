"""The command line as a newcomer meets it: small real files in every MovieLens layout, bad lines named
with their file and line, output paths checked before training, Ctrl-C that keeps the work, no silent caps,
a short readable summary, progress on a pipe, strict JSON, help with defaults, one-line refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedsecure.cli import build_parser, main, strict
from fedsecure.recsys.movielens import DataFormatError, load_movielens

N_USERS, N_ITEMS, PER_USER = 40, 120, 25  # 120 items: fewer never-interacted items than the default 99 negatives
LAYOUTS = {
    "ml-latest": ("ratings.csv", ",", "userId,movieId,rating,timestamp"),
    "ml-100k": ("u.data", "\t", None),
    "ml-1m": ("ratings.dat", "::", None),
}


def _rows(seed: int = 0) -> list[tuple[int, int, str, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, N_USERS + 1):
        for i in rng.choice(np.arange(1, N_ITEMS + 1), size=PER_USER, replace=False):
            rows.append((u, int(i), str(int(rng.integers(1, 6))), 978300000 + len(rows)))
    return rows


def write_layout(folder: Path, layout: str, *, bom: bool = False, crlf: bool = False,
                 replace: dict[int, str] | None = None) -> Path:
    """A well-formed ratings file in ``layout``; ``replace`` maps a 1-based file line to its new text."""
    name, sep, header = LAYOUTS[layout]
    lines = [header] if header else []
    for u, i, r, t in _rows():
        lines.append(sep.join([str(u), str(i), r + (".0" if layout == "ml-latest" else ""), str(t)]))
    for line, text in (replace or {}).items():
        lines[line - 1] = text
    end = "\r\n" if crlf else "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (end.join(lines) + end).encode())
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def strict_load(path: Path) -> dict:
    def refuse(name: str):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


QUICK = ["--rounds", "1", "--dim", "8"]


# -- small catalogues in every layout ----------------------------------------------------------------


@pytest.mark.parametrize("layout, bom, crlf", [("ml-latest", True, True), ("ml-100k", False, False),
                                               ("ml-1m", False, True)])
def test_small_catalogues_train_in_every_layout_and_the_negatives_cap_is_printed_and_recorded(
        tmp_path, capsys, layout, bom, crlf):
    path = write_layout(tmp_path / layout, layout, bom=bom, crlf=crlf)
    out = tmp_path / "result.json"
    rc, stdout, stderr = cli(["run", "--data", path, *QUICK, "--json", out], capsys)
    assert rc == 0, stderr
    result = strict_load(out)
    assert result["status"] == "complete" and result["data"]["items"] == N_ITEMS
    (adj,) = [a for a in result["adjustments"] if a["option"] == "--negatives"]
    assert adj["requested"] == 99 and 0 < adj["used"] < 99 and result["n_negatives"] == adj["used"]
    assert f"hr@10_sampled{adj['used']}" in result["final"]
    assert f"--negatives 99 -> {adj['used']}" in stderr + stdout
    assert "Traceback" not in stderr


def test_a_small_catalogue_trains_to_completion_with_every_default(tmp_path, capsys):
    path = write_layout(tmp_path, "ml-100k")
    rc, stdout, stderr = cli(["run", "--data", path], capsys)
    assert rc == 0, stderr
    assert "(10/10 rounds)" in stdout and "hr@10_sampled" in stdout


def test_the_library_refusal_names_the_option_and_the_largest_value_that_works(tmp_path):
    from fedsecure.recsys.metrics import max_negatives, ranking_rows
    from fedsecure.recsys.split import leave_last_out

    split = leave_last_out(load_movielens(write_layout(tmp_path, "ml-1m")))
    most = max_negatives(split)
    with pytest.raises(ValueError, match=rf"--negatives.*largest that works here is {most}$"):
        ranking_rows(lambda u: np.zeros((len(u), N_ITEMS), dtype=np.float32), split, n_negatives=most + 1)


# -- bad data lines: the right file and line -------------------------------------------------------


BAD_LINES = [
    ("ml-100k", "5\t7\tnan\t99", "rating 'nan' is not a finite number"),
    ("ml-100k", "5\t7\tinf\t99", "rating 'inf' is not a finite number"),
    ("ml-latest", "5,7,nan,99", "rating 'nan' is not a finite number"),
    ("ml-latest", "5,7,-inf,99", "rating '-inf' is not a finite number"),
    ("ml-100k", "5\t7\t1e1\t99", "rating 10 out of range"),
    ("ml-100k", "5\t7\t3\t9_9", "timestamp '9_9' is not an integer"),
    ("ml-1m", "5::7::3::99::", "expected 4 fields separated by '::', got 5"),
    ("ml-1m", "-5::7::3::99", "user id -5 is negative"),
    ("ml-1m", "5::7::3", "expected 4 fields separated by '::', got 3"),
    ("ml-100k", "5\t7\t3\t99\t1", "expected 4 fields separated by TAB, got 5"),
    ("ml-latest", "5,abc,3.0,99", "item id 'abc' is not an integer"),
    ("ml-100k", "5\t99999999999999999999999\t3\t99", "does not fit in 64 bits"),
    ("ml-1m", "5::7::9::99", "rating 9 out of range"),
]


@pytest.mark.parametrize("layout, text, problem", BAD_LINES)
def test_a_bad_line_is_named_with_its_file_and_line(tmp_path, layout, text, problem):
    path = write_layout(tmp_path, layout, replace={301: text})
    with pytest.raises(DataFormatError) as info:
        load_movielens(path)
    assert (info.value.path, info.value.line) == (str(path), 301)
    assert problem in info.value.problem


def test_old_mac_line_ends_read_like_any_other(tmp_path):
    unix = load_movielens(write_layout(tmp_path / "a", "ml-100k"))
    path = write_layout(tmp_path / "b", "ml-100k")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    assert len(load_movielens(path)) == len(unix) == N_USERS * PER_USER


def test_a_bad_line_on_the_command_line_is_one_line_with_exit_2(tmp_path, capsys):
    path = write_layout(tmp_path, "ml-100k", replace={301: "5\t7\tnan\t99"})
    rc, stdout, stderr = cli(["run", "--data", path, *QUICK], capsys)
    assert rc == 2 and stderr.strip() == f"fedsecure: error: {path}, line 301: rating 'nan' is not a finite number"


@pytest.mark.parametrize("content", [
    b"", b"userId,movieId,rating,timestamp\n", b"\x00\xff\xfe garbage \x01\n", b"1,2,3.0,4\n",
    b"userId,movieId,rating,timestamp\n1,2,3.0,4\n1,3,4.0,5\n",  # one user, two rows: a test row, no other users
    b"userId,movieId,rating,timestamp\n1,2,3.0,4\n2,3,4.0,5\n",  # nobody has two interactions: nothing to test
])
def test_no_data_file_produces_a_traceback(tmp_path, capsys, content):
    path = tmp_path / "ratings.csv"
    path.write_bytes(content)
    rc, stdout, stderr = cli(["run", "--data", path, *QUICK], capsys)
    assert rc in (0, 2), stderr
    if rc == 2:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("fedsecure: error:")
    assert "Traceback" not in stderr


def test_an_unreadable_or_empty_folder_is_one_line(tmp_path, capsys):
    rc, _, stderr = cli(["run", "--data", tmp_path, *QUICK], capsys)
    assert rc == 2 and "no MovieLens ratings file" in stderr and len(stderr.strip().splitlines()) == 1


# -- output paths before training; Ctrl-C -----------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if the run gets as far as building the experiment."""
    import fedsecure.experiment

    def boom(*args, **kwargs):
        raise AssertionError("training started before the output path was checked")

    monkeypatch.setattr(fedsecure.experiment.Experiment, "__init__", boom)


def test_json_under_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    a_file = tmp_path / "passwd"
    a_file.write_text("x")
    rc, _, stderr = cli(["run", "--json", a_file / "x.json"], capsys)
    assert rc == 2 and "--json" in stderr and len(stderr.strip().splitlines()) == 1


def test_json_in_a_missing_folder_is_refused_and_no_folder_is_created(tmp_path, capsys, no_training):
    missing = tmp_path / "nonexistent-dir"
    rc, _, stderr = cli(["run", "--json", missing / "x.json"], capsys)
    assert rc == 2 and "does not exist" in stderr and "--json" in stderr
    assert not missing.exists()


def test_json_into_an_unwritable_folder_is_refused(tmp_path, capsys, no_training):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    rc, _, stderr = cli(["run", "--json", locked / "x.json"], capsys)
    assert rc == 2 and "cannot write" in stderr


def test_ctrl_c_saves_the_rounds_done_marked_interrupted(tmp_path, capsys, monkeypatch):
    from fedsecure.fl.engine import FederatedTrainer

    real = FederatedTrainer.run_round

    def interrupt_in_round_3(self, r):
        if r == 3:
            raise KeyboardInterrupt
        return real(self, r)

    monkeypatch.setattr(FederatedTrainer, "run_round", interrupt_in_round_3)
    out = tmp_path / "partial.json"
    path = write_layout(tmp_path, "ml-100k")
    rc, stdout, stderr = cli(["run", "--data", path, "--rounds", "5", "--eval-every", "1", "--dim", "8",
                              "--json", out], capsys)
    assert rc == 130 and "Traceback" not in stderr and "interrupted after 2 of 5 rounds" in stderr
    result = strict_load(out)
    assert result["status"] == "interrupted" and result["rounds_completed"] == 2
    assert [e["round"] for e in result["evaluations"]] == [1, 2] and result["final"]["round"] == 2


def test_sigint_to_a_real_process_exits_130_with_a_partial_result(tmp_path):
    path = write_layout(tmp_path, "ml-1m")
    out = tmp_path / "partial.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsecure.cli", "run", "--data", str(path), "--rounds", "1000", "--eval-every", "1",
         "--dim", "8", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a runner started in the background may hand its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    deadline = time.monotonic() + 600  # generous: a loaded machine imports torch slowly
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("round 2/1000") or not line:
            break
    assert seen[-1].startswith("round 2/1000"), "never reached round 2: " + "".join(seen)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + stderr
    assert "Traceback" not in stderr
    result = strict_load(out)
    assert result["status"] == "interrupted" and result["rounds_completed"] >= 2 and result["evaluations"]


# -- no silent caps -------------------------------------------------------------------------------


def test_clients_per_round_above_the_population_is_printed_and_recorded(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, stdout, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK,
                              "--clients-per-round", "5000", "--json", out], capsys)
    assert rc == 0
    assert f"--clients-per-round 5000 -> {N_USERS}" in stderr
    adj = [a for a in strict_load(out)["adjustments"] if a["option"] == "--clients-per-round"]
    assert adj == [{"option": "--clients-per-round", "requested": 5000, "used": N_USERS, "reason": adj[0]["reason"]}]


def test_empty_silos_are_printed_and_recorded(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--setting", "cross-silo",
                         "--silos", "60", "--json", out], capsys)
    assert rc == 0 and f"--silos 60 -> {N_USERS}" in stderr
    assert strict_load(out)["data"]["clients"] == N_USERS


def test_more_groups_than_clients_per_round_is_refused(tmp_path, capsys):
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--aggregator", "median",
                         "--groups", "41"], capsys)
    assert rc == 2 and f"--groups must be in [1, {N_USERS}]" in stderr


# -- the terminal summary -------------------------------------------------------------------------


def _summary(stdout: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1] for line in stdout.splitlines()
            if re.match(r"^(evaluation|protection|robustness|privacy|time): ", line)}


def test_secagg_plus_summary_shows_the_real_k_t_and_excluded(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--secure", "secagg+",
                         "--dropout", "0.2", "--dp", "user-central", "--target-epsilon", "4", "--json", out], capsys)
    assert rc == 0
    stats = strict_load(out)["rounds"][0]["stats"]
    line = _summary(stdout)["protection"]
    assert f"k={stats['k']} " in line and f"t={stats['t']} " in line and "null" not in line
    result = strict_load(out)
    assert f"excluded {len(result['rounds'][0]['excluded'])}" in line
    assert stdout.count("epsilon") == 1  # the privacy dictionary is printed once
    eps = result["privacy"]["epsilon"]
    assert f"epsilon {eps:.3g}," in _summary(stdout)["privacy"]
    assert "{" not in stdout  # no raw JSON after the table


def test_ckks_security_is_printed_once_with_why(tmp_path, capsys):
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--secure", "ckks"], capsys)
    assert rc == 0
    line = _summary(stdout)["protection"]
    assert "128-bit security required" in line and "HE standard" in line
    assert stdout.count("128") == 1 and "{" not in stdout


def test_cross_silo_dpsgd_prints_one_privacy_line(tmp_path, capsys):
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--setting", "cross-silo",
                         "--silos", "4", "--dp", "dpsgd", "--target-epsilon", "8"], capsys)
    assert rc == 0
    assert len(stdout.strip().splitlines()) < 20 and "{" not in stdout
    assert re.search(r"epsilon \d\.\d\d \(worst of 4 clients\)", _summary(stdout)["privacy"])


def test_progress_appears_as_lines_when_output_is_piped(tmp_path, capsys):
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), "--rounds", "2", "--dim", "8"], capsys)
    assert rc == 0
    assert re.search(r"^round 1/2: 40/40 clients", stderr, re.M) and re.search(r"^round 2/2: .*hr@10=", stderr, re.M)
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--quiet"], capsys)
    assert "round 1/1" not in stderr


# -- strict JSON ------------------------------------------------------------------------------------


def test_json_is_strict_with_a_schema_version(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--json", out], capsys)
    assert rc == 0
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    result = strict_load(out)
    assert isinstance(result["schema_version"], int) and result["privacy"]["epsilon"] == "inf"


def test_strict_replaces_every_non_finite_float():
    value = strict({"a": float("inf"), "b": [float("-inf"), float("nan"), np.float32(1.5)], "c": np.int64(3)})
    assert value == {"a": "inf", "b": ["-inf", None, 1.5], "c": 3}
    json.dumps(value, allow_nan=False)


# -- help ---------------------------------------------------------------------------------------------


def _subparser(parser, *names):
    for name in names:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", [("run",), ("audit", "poisoning")])
def test_help_shows_a_default_for_every_option(path):
    parser = _subparser(build_parser(), *path)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.dest == "help":
            continue
        text = formatter._expand_help(action)
        assert "default" in text, f"{action.option_strings[0]}: {text}"


def test_run_help_names_the_documented_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("federated rounds (default: 10)", "recommender (default: mf-implicit)",
                     "client learning rate (default: 8.0)", "(default: 5)", "(default: 99)"):
        assert expected in text


def test_top_level_help_has_no_restructuredtext(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


# -- refusals: one line, the option, the range, exit 2 -------------------------------------------------


@pytest.mark.parametrize("argv, option", [
    (["--rounds", "0"], "--rounds"), (["--rounds", "ten"], "--rounds"), (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--clients-per-round", "1.5"], "--clients-per-round"),
    (["--clients-per-round", "0"], "--clients-per-round"), (["--dropout", "1"], "--dropout"),
    (["--straggler", "-0.1"], "--straggler"), (["--negatives", "-1"], "--negatives"), (["--seed", "-1"], "--seed"),
    (["--delta", "0"], "--delta"), (["--target-epsilon", "0"], "--target-epsilon"), (["--k", "0"], "--k"),
    (["--byzantine", "2.5"], "--byzantine"), (["--malicious", "1"], "--malicious"), (["--groups", "-1"], "--groups"),
    (["--model", "bert4rec"], "--model"), (["--silo-alpha", "0"], "--silo-alpha"),
    (["--dp", "user-central"], "--noise-multiplier"), (["--attack-scale", "5"], "--attack-scale"),
    (["--weighted"], "--weighted"),
])
def test_every_refusal_is_one_line_naming_the_option_with_exit_2(argv, option, capsys, no_training):
    rc, stdout, stderr = cli(["run", *argv], capsys)
    assert rc == 2 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and option in stderr


def test_audit_lists_are_checked_before_the_sweep(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, _, stderr = cli(["audit", "poisoning", "--fractions", "0.1,x", "--out", tmp_path / "a"], capsys)
    assert rc == 2 and "--fractions" in stderr
    rc, _, stderr = cli(["audit", "poisoning", "--out", tmp_path / "missing" / "a"], capsys)
    assert rc == 2 and "--out" in stderr and not (tmp_path / "missing").exists()


def test_aborted_rounds_are_explained_in_the_summary(tmp_path, capsys):
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--aggregator", "krum",
                         "--byzantine", "30"], capsys)
    assert rc == 0
    line = _summary(stdout)["protection"]
    assert "1 round(s) aborted (round 1: " in line and "needs at least" in line and "NO ROUND WAS APPLIED" in line


def test_a_late_error_keeps_the_rounds_done(tmp_path, capsys, monkeypatch):
    from fedsecure.fl.engine import FederatedTrainer

    real = FederatedTrainer.run_round

    def fail_in_round_2(self, r):
        if r == 2:
            raise ValueError("disk on fire")
        return real(self, r)

    monkeypatch.setattr(FederatedTrainer, "run_round", fail_in_round_2)
    out = tmp_path / "partial.json"
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), "--rounds", "3", "--eval-every", "1",
                         "--dim", "8", "--json", out], capsys)
    assert rc == 2 and "disk on fire" in stderr and "Traceback" not in stderr
    result = strict_load(out)
    assert result["status"] == "failed" and result["rounds_completed"] == 1 and "disk on fire" in result["error"]


def test_audit_ctrl_c_keeps_the_cells_done_as_strict_json(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import fedsecure.audit

    real, calls = fedsecure.audit._cell, []

    def interrupt_second_cell(config, on_done=None, data=None):
        calls.append(config)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, on_done, data)

    monkeypatch.setattr(fedsecure.audit, "_cell", interrupt_second_cell)
    out = tmp_path / "audit"
    rc, _, stderr = cli(["audit", "poisoning", "--data", write_layout(tmp_path, "ml-100k"), "--rounds", "1",
                         "--dim", "8", "--attacks", "scaling", "--aggregators", "fedavg", "--out", out], capsys)
    assert rc == 130 and "Traceback" not in stderr
    record = strict_load(out / "poisoning_audit.json")
    assert record["status"] == "interrupted" and len(record["rows"]) == 1 and record["schema_version"]


def test_a_robust_run_says_which_rule_and_attack_in_one_line(tmp_path, capsys):
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--aggregator", "median",
                         "--attack", "scaling", "--malicious", "0.1"], capsys)
    assert rc == 0
    line = _summary(stdout)["robustness"]
    assert line.startswith(" median, plaintext") and "tolerates f=" in line and "attack scaling" in line
    assert "by 4 malicious clients (10%)" in line and "{" not in stdout


def test_the_privacy_line_rounds_to_three_digits_and_shows_an_audited_bound():
    from fedsecure.cli import privacy_line

    line = privacy_line({"mechanism": "m", "epsilon": 1.994517040789202, "delta": 1e-05, "accountant": "rdp",
                         "epsilon_lower_bound": 0.41234567})
    assert line == "m, epsilon 1.99, delta 1e-05, accountant rdp, audited lower bound 0.412"


def test_a_device_is_never_read_as_data(capsys):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    rc, _, stderr = cli(["run", "--data", "/dev/null", *QUICK], capsys)
    assert rc == 2 and "not a regular file" in stderr


def test_secure_aggregation_with_too_few_clients_is_refused_before_training(tmp_path, capsys):
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--secure", "secagg",
                         "--clients-per-round", "2"], capsys)
    assert rc == 2 and "--secure secagg needs at least 3 clients per round" in stderr and "--clients-per-round" in stderr


def test_a_fraction_that_rounds_to_no_client_is_noted(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _, stderr = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--clients-per-round", "0.001",
                         "--json", out], capsys)
    assert rc == 0 and "--clients-per-round 0.001 -> 1" in stderr
    (adj,) = [a for a in strict_load(out)["adjustments"] if a["option"] == "--clients-per-round"]
    assert adj["requested"] == 0.001 and adj["used"] == 1


def test_audit_mia_help_names_every_attack_and_the_epsilon_audit(capsys):
    rc, stdout, _ = cli(["audit", "mia", "--help"], capsys)
    assert rc == 0
    text = " ".join(stdout.split())
    for name in ("loss", "calibrated", "lira", "interaction", "epsilon"):
        assert name in text, name
    assert "one-run canary audit" in text


def test_audit_mia_runs_end_to_end_and_writes_json_csv_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "mia"
    rc, stdout, stderr = cli(["audit", "mia", "--data", write_layout(tmp_path, "ml-100k"), "--rounds", "2", "--dim", "8",
                              "--shadows", "2", "--attacks", "loss,calibrated,lira,interaction",
                              "--interaction-modes", "plaintext,secagg", "--interaction-clients", "6",
                              "--out", out, "--quiet"], capsys)
    assert rc == 0, stderr
    record = strict_load(out / "mia_audit.json")
    attacks = record["membership"]["interaction"]["attacks"]
    assert {"loss", "calibrated", "lira"} <= set(attacks)
    for m in attacks.values():
        assert 0 <= m["auc"] <= 1 and "epsilon_lb" in m
    assert set(record["interaction"]["modes"]) == {"plaintext", "secagg"}
    for name in ("mia_interaction.csv", "mia_interaction.png", "interaction_inference.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "interaction inference, server view under secagg" in stdout


def test_audit_mia_refuses_an_unknown_attack_in_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, _, stderr = cli(["audit", "mia", "--attacks", "loss,telepathy", "--out", tmp_path / "m"], capsys)
    assert rc == 2 and "--attacks" in stderr and "telepathy" in stderr and "Traceback" not in stderr


def test_sweep_writes_rows_summary_and_curves(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep"
    rc, stdout, stderr = cli(["sweep", "--data", write_layout(tmp_path, "ml-100k"), "--rounds", "2", "--dim", "8",
                              "--epsilons", "4,inf", "--seeds", "0,1", "--out", out, "--quiet"], capsys)
    assert rc == 0, stderr
    record = strict_load(out / "sweep.json")
    rows = record["rows"]
    assert [(r["target_epsilon"], r["seed"]) for r in rows] == [(4.0, 0), (4.0, 1), ("inf", 0), ("inf", 1)]
    dp = [r for r in rows if r["target_epsilon"] == 4.0]
    assert all(r["accountant_epsilon"] <= 4.0 + 1e-9 and r["private_popularity_hr@10"] is not None for r in dp)
    assert all(0 <= r["attack_auc"] <= 1 and r["strongest_attack"] == "loss" for r in rows)
    assert len(record["summary"]) == 2 and record["summary"][0]["hr@10"]["values"]
    for name in ("sweep.csv", "hr_vs_epsilon.png", "hr_vs_attack_tpr.png", "roc.png"):
        assert (out / name).stat().st_size > 0, name


def test_sweep_refuses_a_bad_grid_in_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for argv, option in ((["--epsilons", "1,-2"], "--epsilons"), (["--secure-modes", "rot13"], "--secure-modes"),
                         (["--models", "gpt"], "--models")):
        rc, _, stderr = cli(["sweep", *argv, "--out", tmp_path / "s"], capsys)
        assert rc == 2 and option in stderr and "Traceback" not in stderr, (argv, stderr)


@pytest.mark.parametrize("dp", [["--dp", "user-central", "--target-epsilon", "4"],
                                ["--setting", "cross-silo", "--silos", "4", "--dp", "dpsgd", "--target-epsilon", "8"]])
def test_a_dp_run_reports_the_accountant_the_audited_bound_and_private_popularity_side_by_side(tmp_path, capsys, dp):
    out = tmp_path / "r.json"
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, *dp, "--json", out], capsys)
    assert rc == 0
    result = strict_load(out)
    privacy, private = result["privacy"], result["private_popularity"]
    assert 0 < privacy["epsilon"] <= float(dp[-1]) + 1e-9
    assert isinstance(privacy["epsilon_lower_bound"], float) and privacy["epsilon_lower_bound"] <= privacy["epsilon"]
    # the private comparator is released at the accountant's own (epsilon, delta), evaluated like the model
    assert (private["epsilon"], private["delta"]) == (privacy["epsilon"], privacy["delta"])
    assert 0 <= private["hr@10"] <= 1 and len(private["hr@10_ci95"]) == 2 and private["baseline"]["noise_multiplier"] > 0
    assert private["n_eval_rows"] == result["final"]["n_eval_rows"]
    (line,) = [line for line in stdout.splitlines() if line.startswith("private popularity: ")]
    assert f"hr@10 {private['hr@10']:.4f} [" in line and f"under ε {privacy['epsilon']:.3g}," in line
    assert "audited lower bound" in _summary(stdout)["privacy"]
    if dp[1] == "user-central":  # the white-box audit of the run's own aggregator, beside the accountant too
        assert privacy["aggregator_epsilon_lower_bound"] <= privacy["epsilon"]
        assert "aggregator audit lower bound" in _summary(stdout)["privacy"]


def test_a_run_without_dp_has_no_private_comparator(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, stdout, _ = cli(["run", "--data", write_layout(tmp_path, "ml-100k"), *QUICK, "--json", out], capsys)
    assert rc == 0 and strict_load(out)["private_popularity"] is None and "private popularity" not in stdout
