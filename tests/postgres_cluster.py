"""A private PostgreSQL cluster for fault tests: restarted and cut off at will, which the shared
server at 127.0.0.1:5432 (other test sessions, CI) must never be.

    start_postgres() -> PostgresCluster   initdb in a new /tmp folder, started on a free port
    cluster.url                           SQLAlchemy URL of its ``postgres`` database
    cluster.restart(down_seconds=...)     stop (immediate: a crash), stay down, start again
    cluster.terminate_connections()       pg_terminate_backend on every other session
    cluster.stop()                        stop and delete the folder

PostgreSQL refuses to run as root (CI runs as root): the binaries then run as the ``postgres``
user through runuser, in a folder that user owns (pytest's tmp_path lives under a root-only
folder, hence /tmp).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

START_TIMEOUT_SECONDS = 60


def _bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin (Debian), else wherever initdb is."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("no PostgreSQL server binaries: apt-get install postgresql")
    return Path(found).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresCluster:
    root: Path
    port: int
    bin_dir: Path
    as_postgres: bool  # run the binaries as the postgres user (we are root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr}{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        # fsync off: a killed server loses nothing the OS has (only a machine crash would),
        # and commits stay fast on a busy test machine.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "-t", str(START_TIMEOUT_SECONDS), "start")

    def kill(self) -> None:
        """Stop at once, as a crash would (clients' connections drop mid-transaction)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def terminate_connections(self) -> int:
        """End every other session (as an administrator would); how many were ended."""
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                ended = conn.execute(text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )).scalar_one()
        finally:
            engine.dispose()
        return int(ended)

    def stop(self) -> None:
        """Stop it (if running) and delete its folder."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    """A new cluster (trust auth, loopback only), running; ``stop()`` it when done."""
    root = Path(tempfile.mkdtemp(prefix="loraloop-pg-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = PostgresCluster(root, _free_port(), _bin_dir(), as_postgres)
    try:
        cluster._run("initdb", "-D", str(cluster.data_dir), "-U", "postgres", "-A", "trust",
                     "--no-sync", "-E", "UTF8", "--locale=C")
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
