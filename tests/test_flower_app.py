"""The example Flower app (``examples/flower_secagg``) run with Flower's own commands, end to end.

* Simulation runtime: ``flower-superlink --simulation`` and ``flwr run`` (Ray
  backend), several simulated SuperNodes, two of which crash before sending
  their masked input; the new global model must equal the plaintext weighted
  mean of the included clients' updates within the quantization bound.
* Deployment runtime (``slow``): ``flower-superlink`` and several
  ``flower-supernode`` processes on loopback with TLS (a CA, server
  certificate and keys generated here with ``cryptography``) and SuperNode
  authentication (P-256 keys registered with ``flwr supernode register``);
  the clients pin the ServerApp's fedsecure signing key; a SuperNode whose
  key is not registered is refused. Every process started here is killed at
  the end, also on failure.

The clients dump their plaintext updates to a test directory
(``dump-updates-dir``, a test-only option of the example) so that the test
can compute the plaintext aggregate itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower_secagg"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _flower_orphans(pids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"--parent-pid" and argv[i + 1].isdigit() and int(argv[i + 1]) in pids:
                found.append(int(entry))
    return found


class Procs:
    """Processes started by a test, each with its log; ``stop()`` kills each and all its descendants."""

    def __init__(self, workdir: Path, env: dict) -> None:
        self.workdir, self.env, self.procs = workdir, env, []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 -- closed in stop()
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                             start_new_session=True)
        self.procs.append((name, p, log))
        return p

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        pids: list[int] = []
        for _, p, _ in self.procs:
            pids += [p.pid] + _children(p.pid)
        # Flower's SuperExec processes outlive a dead parent (they are re-parented to init) and name it:
        # ``--parent-pid <pid>``; take them and their trees too.
        for pid in _flower_orphans(set(pids)):
            pids += [pid] + _children(pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            for _, p, _ in self.procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for _, _, log in self.procs:
            log.close()


def _wait_for(predicate, timeout: float, what: str, procs: Procs | None = None, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = procs.log(name)[-3000:] if procs is not None and name else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env(home: Path) -> dict:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", FLWR_DISABLE_UPDATE_CHECK="1",
               PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    # Each ClientApp / ServerApp process imports fedsecure from this checkout.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_config(**kw) -> str:
    parts = []
    for k, v in kw.items():
        parts.append(f"{k}={json.dumps(v) if isinstance(v, str) else v}")
    return " ".join(parts)


def _check_aggregate(result: dict, dump: Path, *, dropped: int) -> dict:
    """The last round's new global model against the plaintext weighted mean of the included updates."""
    last = result["rounds"][-1]["groups"][0]
    assert "halted" not in last, last
    included = [int(x) for x in last["included"]]
    assert len(last["excluded"]) == dropped, last["excluded"]
    updates, weights = [], []
    for nid in included:
        z = np.load(dump / f"node{nid}.npz")
        updates.append(np.concatenate([z[f"arr_{i}"].ravel().astype(np.float64) for i in range(len(z.files) - 1)]))
        weights.append(min(int(z["n"]), 1000) / 1000)
    w = np.asarray(weights)
    expected = (w[:, None] * np.stack(updates)).sum(0) / w.sum()
    final = np.concatenate([np.asarray(a, dtype=np.float64) for a in result["final"]])
    bound = last["quantization_error_bound"]
    tol = bound * (1 + np.abs(expected)) / (w.sum() - bound) + 2.0**-22 * np.abs(expected)
    assert final.shape == expected.shape
    assert np.all(np.abs(final - expected) <= tol + 1e-12), float(np.max(np.abs(final - expected) - tol))
    return last


@pytest.mark.slow
def test_example_app_in_flower_simulation_runtime_with_dropouts(tmp_path):
    home, dump = tmp_path / "flwr-home", tmp_path / "updates"
    home.mkdir()
    dump.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    procs = Procs(tmp_path, _env(home))
    try:
        procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--port", str(port),
                                  "--disable-runtime-dependency-installation"])
        _wait_for(lambda: _port_open(port), 60, "the SuperLink", procs, "superlink")
        result_file = tmp_path / "result.json"
        cfg = _run_config(**{"num-server-rounds": 1, "min-nodes": 7, "drop-partitions": "1,4",
                             "drop-stage": "masked_input", "result-file": str(result_file),
                             "dump-updates-dir": str(dump), "timeout": 60.0})
        run = subprocess.run([str(BIN / "flwr"), "run", str(APP), "sim", "--run-config", cfg,
                              "--federation-config", "num-supernodes=7", "--stream"],
                             env=procs.env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
        assert result_file.exists(), f"no result\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}"
        last = _check_aggregate(json.loads(result_file.read_text()), dump, dropped=2)
        assert len(last["included"]) == 5
        assert all("masked_input" in why for why in last["excluded"].values())
    finally:
        procs.stop()


# ---------------------------------------------------------------------------------------------- deployment
def _tls(dirpath: Path) -> dict[str, Path]:
    """A CA, and a SuperLink certificate for 127.0.0.1 / localhost signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsecure test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": dirpath / "ca.crt", "cert": dirpath / "server.pem", "key": dirpath / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def _node_keys(dirpath: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode authentication key pair (P-256, OpenSSH format), as ``flwr supernode register`` expects."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = dirpath / name, dirpath / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH))
    os.chmod(priv, 0o600)
    return priv, pub


@pytest.mark.slow
def test_example_app_on_a_tls_authenticated_flower_deployment(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    n = 3
    home, dump = tmp_path / "flwr-home", tmp_path / "updates"
    home.mkdir()
    dump.mkdir()
    tls = _tls(tmp_path)
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{tls["ca"]}"\n')
    # fedsecure's own server key: the ServerApp signs each round with it, the SuperNodes pin its public half.
    server_key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "fedsecure-server.pem"
    key_file.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    server_pub = server_key.public_key().public_bytes_raw().hex()
    procs = Procs(tmp_path, _env(home))
    try:
        procs.start("superlink", [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(tls["ca"]),
                                  "--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"]),
                                  "--enable-supernode-auth", "--port", str(port),
                                  "--disable-runtime-dependency-installation"])
        _wait_for(lambda: _port_open(port), 60, "the SuperLink", procs, "superlink")
        for i in range(n):
            priv, pub = _node_keys(tmp_path, f"node{i}")
            reg = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(pub), "deploy"], env=procs.env,
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert reg.returncode == 0, reg.stdout + reg.stderr
            procs.start(f"supernode{i}", [
                str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}", "--root-certificates",
                str(tls["ca"]), "--auth-supernode-private-key", str(priv), "--port", str(_free_port()),
                "--node-config", f'partition-id={i} num-partitions={n} fedsecure-server-key="{server_pub}"'])
        rogue_priv, _ = _node_keys(tmp_path, "rogue")  # never registered
        rogue = procs.start("rogue", [
            str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(tls["ca"]),
            "--auth-supernode-private-key", str(rogue_priv), "--port", str(_free_port()), "--max-retries", "2",
            "--node-config", f"partition-id=0 num-partitions={n}"])
        result_file = tmp_path / "result.json"
        cfg = _run_config(**{"num-server-rounds": 1, "min-nodes": n, "result-file": str(result_file),
                             "dump-updates-dir": str(dump), "server-key-file": str(key_file), "timeout": 90.0})
        run = subprocess.run([str(BIN / "flwr"), "run", str(APP), "deploy", "--run-config", cfg, "--stream"],
                             env=procs.env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result_file.exists(), (f"no result\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}\n"
                                      + procs.log("superlink")[-3000:])
        result = json.loads(result_file.read_text())
        last = _check_aggregate(result, dump, dropped=0)
        assert len(last["included"]) == n  # exactly the registered nodes: the rogue never joined
        assert len(result["loss"]) == 1
        # The unregistered SuperNode was refused by the SuperLink.
        _wait_for(lambda: rogue.poll() is not None, 60, "the unregistered SuperNode to give up", procs, "rogue")
        assert rogue.returncode != 0
        assert "failed to activate supernode" in procs.log("rogue").lower(), procs.log("rogue")[-2000:]
        # ... because the SuperLink does not know its key (Flower's ApiError 2004, HTTP 412)
        assert "Attempted to register SuperNode with public key" in procs.log("superlink")
    finally:
        procs.stop()
