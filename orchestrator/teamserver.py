"""A team's tracking server on one machine: PostgreSQL for runs and models, `mlflow server` proxying artifacts.

    python -m orchestrator.teamserver --dir ~/orchestrator-team --port 5000

starts (and on Ctrl-C stops) a PostgreSQL cluster under `<dir>/postgres` (initialized on first use; as root
it runs as the `postgres` user, since PostgreSQL refuses to run as root) and `mlflow server` on it with
`--serve-artifacts`, artifacts under `<dir>/artifacts`. Clients (sweeps, Ray workers, the UI) then need only
`tracking.uri=http://HOST:PORT`: no shared disk. Searches (`search.strategy=optuna`) on any machine share their
studies through the same PostgreSQL: the server prints the `search.storage=...` URL to give them (a database of
its own, reached with a generated password). The test fixture starts the same two processes.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DB = "mlflow"
STUDY_DB, STUDY_ROLE = "optuna", "search"  # Optuna's studies, and the role other machines log in as
# MLflow 3's server also starts a job runner and eight task consumers (GenAI evaluation jobs) that nothing here
# uses; each imports MLflow, which costs seconds of CPU at every start.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them off PATH, under /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise SystemExit(f"PostgreSQL's {name} was not found: apt-get install postgresql")
    return found


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Root runs PostgreSQL's commands as the `postgres` user (the server refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """A PostgreSQL cluster in `data` on `port` (its socket in `data`): the MLflow database, reachable from
    127.0.0.1 only, and the searches' study database (`STUDY_DB`, role `STUDY_ROLE` with a generated password
    kept in `<data>/../search.password`), reachable from `host` too, so searches on several machines share
    their studies."""

    data: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def _password_file(self) -> Path:
        return self.data.parent / "search.password"

    @property
    def study_uri(self) -> str:
        """The Optuna storage URL clients give as `search.storage`. It carries no password (the resolved config
        is logged to MLflow): clients on other machines set PGPASSWORD to the password file's content."""
        where = socket.getfqdn() if self.host in ("0.0.0.0", "::", "*") else self.host
        return f"postgresql+psycopg://{STUDY_ROLE}@{where}:{self.port}/{STUDY_DB}"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the MLflow database (psycopg 3)."""
        user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{DB}"

    def start(self) -> None:
        """initdb on first use, start the server, create the MLflow database if missing."""
        self.data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            self.data.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(_as_pg_user([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-E", "UTF8"]),
                           check=True, capture_output=True)
        hba = self.data / "pg_hba.conf"
        rule = f"host {STUDY_DB} {STUDY_ROLE} all scram-sha-256"  # from other machines: the study db, by password
        if rule not in hba.read_text():
            hba.write_text(hba.read_text() + f"\n{rule}\n")
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)
        listen = "*" if self.host in ("0.0.0.0", "::", "*") else ",".join(dict.fromkeys(["127.0.0.1", self.host]))
        opts = f"-p {self.port} -k {self.data} -c listen_addresses='{listen}'"
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                                    str(self.data / "server.log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)
        if self._sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{STUDY_ROLE}'") != "1":
            self._sql(f"CREATE ROLE {STUDY_ROLE} LOGIN")
        self._sql(f"ALTER ROLE {STUDY_ROLE} PASSWORD '{self._password_file.read_text().strip()}'")
        for name, owner in ((DB, None), (STUDY_DB, STUDY_ROLE)):
            if self._sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
                subprocess.run(_as_pg_user([_pg_bin("createdb"), "-h", str(self.data), "-p", str(self.port),
                                            *(["-O", owner] if owner else []), name]),
                               check=True, capture_output=True)

    def _sql(self, statement: str) -> str:
        """One statement through psql as the superuser; its output, stripped."""
        return subprocess.run(_as_pg_user([_pg_bin("psql"), "-h", str(self.data), "-p", str(self.port), "-tAc",
                                           statement, "postgres"]),
                              check=True, capture_output=True, text=True).stdout.strip()

    def stop(self) -> None:
        """Fast shutdown (ongoing transactions are rolled back; committed runs stay)."""
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)


def start_mlflow(backend_uri: str, artifacts: Path, port: int, host: str = "127.0.0.1",
                 timeout: float = 120) -> subprocess.Popen:
    """`mlflow server` on `backend_uri` with proxied artifacts; returns once /health answers."""
    artifacts.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--backend-store-uri",
         backend_uri, "--serve-artifacts", "--artifacts-destination", str(artifacts), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, **SERVER_ENV})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2):
                return proc
        time.sleep(0.5)
    stop_mlflow(proc)
    raise RuntimeError(f"mlflow server did not answer on {host}:{port} within {timeout:.0f}s")


def stop_mlflow(proc: subprocess.Popen) -> None:
    """Stop the server and its workers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@contextlib.contextmanager
def team_server(folder: Path, port: int, pg_port: int, host: str = "127.0.0.1") -> Iterator[tuple[str, str]]:
    """PostgreSQL + `mlflow server --serve-artifacts` for the duration of the block; yields (the tracking URI,
    the searches' study storage URL)."""
    pg = Postgres(folder / "postgres", pg_port, host)
    pg.start()
    try:
        proc = start_mlflow(pg.uri, folder / "artifacts", port, host)
        try:
            yield f"http://{host}:{port}", pg.study_uri
        finally:
            stop_mlflow(proc)
    finally:
        pg.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the team server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where PostgreSQL's data and the artifacts live")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (the study database is "
                        "served on --host too)")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to serve on (0.0.0.0: the network)")
    args = parser.parse_args(argv)
    with team_server(args.dir.resolve(), args.port, args.pg_port, args.host) as (uri, studies):
        print(f"MLflow on PostgreSQL, artifacts proxied: tracking.uri={uri} (Ctrl-C stops it)", flush=True)
        print(f"searches share their studies with: search.storage={studies} (other machines: PGPASSWORD=<the "
              f"content of {args.dir.resolve() / 'search.password'}>)", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})  # then the block's exit stops both servers


if __name__ == "__main__":
    main()
