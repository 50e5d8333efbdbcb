"""A real PostgreSQL server for the store tests: `initdb` + `pg_ctl` in a temp dir on a free
loopback port, as the unprivileged `postgres` user when the tests run as root (initdb refuses
root). Imported by the conftest fixture and by bench/rollout_bench.py."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mqtt_env import free_port


def postgres_bin() -> Path:
    """The directory of Debian's PostgreSQL server binaries (newest version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql; "
                       "as root: .ci/system-deps.sh)")


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster with trust auth on 127.0.0.1:port."""

    port: int = field(default_factory=free_port)
    root: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://edgeq@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr[-2000:]}")

    def start(self) -> Postgres:
        self.root = Path(tempfile.mkdtemp(prefix="edgeq-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data, sockets = self.root / "data", self.root
        binaries = postgres_bin()
        self._run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgeq",
                  "--no-sync", "-E", "UTF8")
        self._run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w",
                  "-o", f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off -c max_connections=50", "start")
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
