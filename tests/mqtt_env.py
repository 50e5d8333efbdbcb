"""Real parts for the fleet tests: a mosquitto broker on a free loopback port and device agents
as real processes. Imported by conftest fixtures and by bench/fleet_bench.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Mosquitto:
    """A mosquitto process with its own config; restartable on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    host: str = "127.0.0.1"
    persistent: bool = True
    defaults: bool = True  # False: only the listener (and `user root`) around extra_conf
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not found: install the Debian package 'mosquitto' "
                               "(.ci/run and `make test` do this as root)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_port(self.port, host=self.host)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read().decode()}") from None
        return self

    def _config(self) -> str:
        # as root, mosquitto drops to the 'mosquitto' user, which cannot open pytest's private
        # temp dirs (config, passwords, persistence): stay root instead
        text = f"listener {self.port} {self.host}\n" + ("user root\n" if os.geteuid() == 0 else "")
        if not self.defaults:
            return text + self.extra_conf + "\n"
        return (text
            + (f"persistence true\npersistence_location {self.workdir}/\n"
               # save after every change: a killed broker keeps collector sessions and queues
               "autosave_interval 1\nautosave_on_changes true\n" if self.persistent
               else "persistence false\n")
            + "max_queued_messages 100000\n"
            f"log_dest file {self.workdir}/mosquitto.log\nlog_type error\nlog_type warning\n"
            + f"{self.extra_conf}\n" + ("" if "allow_anonymous" in self.extra_conf
                                        else "allow_anonymous true\n"))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class ChildProcess:
    """A real child process logging to `log_path`; stopped with SIGTERM, then killed."""

    proc: subprocess.Popen | None
    log_path: Path

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "a")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


@dataclass
class AgentProcess(ChildProcess):
    """`python -m device_agent` as a real process."""

    broker_url: str
    device: str
    data_dir: Path
    trust_key: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    python: tuple[str, ...] = (sys.executable,)
    env: dict[str, str] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self) -> AgentProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn([*self.python, "-m", "device_agent", "--broker", self.broker_url,
                     "--device-id", self.device, "--data-dir", str(self.data_dir),
                     "--trust-key", str(self.trust_key), "--keepalive", "5", *self.args], self.env)
        return self


@dataclass
class CollectorProcess(ChildProcess):
    """`edgeq collect` as a real process."""

    broker_url: str
    db: Path | str  # a SQLite file or a postgresql:// URL
    args: tuple[str, ...] = ()
    name: str = "collector"
    proc: subprocess.Popen | None = None
    log_dir: Path | None = None  # default: beside the SQLite file

    @property
    def log_path(self) -> Path:
        return (self.log_dir or Path(self.db).parent) / f"{self.name}.log"

    def start(self) -> CollectorProcess:
        self._spawn([sys.executable, "-m", "edgeq.cli", "collect", "--broker", self.broker_url,
                     "--db", str(self.db), *self.args])
        return self


def stored_rows(db: Path) -> list[tuple[str, str]]:
    """(report_id, device) of every stored result; [] before the collector made the file."""
    import sqlite3

    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            return list(conn.execute("SELECT report_id, device FROM reports"))
        except sqlite3.OperationalError:
            return []


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `host`: (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, signer, ca: bool, san=None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("edgeq test CA", ca_key, "edgeq test CA", ca_key, True)
    server = cert(host, server_key, "edgeq test CA", ca_key, False,
                  [x509.IPAddress(ipaddress.ip_address(host))])
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


@dataclass
class NetnsLink:
    """A network namespace joined to the host by a veth pair (host side HOST_IP/30)."""

    netns: str
    host_if: str
    host_ip: str
    device_ip: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command inside the namespace."""
        return ("ip", "netns", "exec", self.netns)

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def make_netns_links(count: int) -> list[NetnsLink]:
    """`count` namespaces, each with its own veth link and /30 subnet; traffic stays inside the
    machine. Remove them with remove_netns_links."""
    tag, subnet = os.getpid() % 10000, 200 + os.getpid() % 50
    links = []
    try:
        for k in range(1, count + 1):
            link = NetnsLink(f"edgeq-{tag}-{k}", f"eq{tag}h{k}", f"10.{subnet}.{k}.1",
                             f"10.{subnet}.{k}.2")
            links.append(link)
            device_if = f"eq{tag}d{k}"
            _ip("netns", "add", link.netns)
            _ip("link", "add", link.host_if, "type", "veth", "peer", "name", device_if)
            _ip("link", "set", device_if, "netns", link.netns)
            _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
            _ip("link", "set", link.host_if, "up")
            for args in (("addr", "add", f"{link.device_ip}/30", "dev", device_if),
                         ("link", "set", device_if, "up"), ("link", "set", "lo", "up")):
                _ip("netns", "exec", link.netns, "ip", *args)
    except (subprocess.CalledProcessError, OSError):
        remove_netns_links(links)
        raise
    return links


def remove_netns_links(links: list[NetnsLink]) -> None:
    for link in links:
        for args in (("netns", "del", link.netns), ("link", "del", link.host_if)):
            subprocess.run(["ip", *args], capture_output=True)
