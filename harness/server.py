"""A shared MLflow tracking server: PostgreSQL for the records, the server for the artifacts.

Every node of a cluster then records through one HTTP URI (``tracking.uri=http://host:port``):
runs, metrics and artifacts alike, the artifacts being uploaded to and served by the server.
``python -m harness.server`` starts a private PostgreSQL cluster in a project folder (or uses
the database given by ``--db``), the MLflow server on it, and stops both on Ctrl-C or SIGTERM.
Database passwords stay out of sight: kept in files only their owner reads, handed to the
server through its environment, printed as ``***``.
This module only runs processes; it does not import MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from harness import stopping
from harness.paths import project_root

# Database connections of each MLflow server worker: SQLAlchemy's pool and its overflow (MLflow's
# default, 5 + 10, runs out when a few dozen jobs write at once); the local PostgreSQL allows
# enough for 4 workers.
POOL = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "20"}
MAX_CONNECTIONS = 200
DATABASE = "mlflow"
SUPERUSER = "postgres"  # the cluster's superuser, and the system user that runs it as root
DB_SCHEMES = ("postgresql", "mysql", "sqlite")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
PASSWORD_FILE = "password"  # in the local cluster's folder: the superuser's password
TRUST = re.compile(r"^([^#\n]*\s)trust(?=\s|$)", re.MULTILINE)  # a pg_hba.conf rule: no password


class ServerError(RuntimeError):
    """A server could not be started, or its programs are missing."""


def postgres_bindir() -> Path:
    """The folder of PostgreSQL's server programs: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/<version>/bin``, else the one of ``initdb`` on the PATH. Raises
    ServerError naming what to install when there is none."""
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ServerError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
        "apt-get install postgresql (or pass --db with the URI of an existing database)"
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _http(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def redact(uri: str) -> str:
    """``uri`` with its password, if it has one, shown as ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def with_password(uri: str, password: str) -> str:
    """``uri`` (which names a user and no password) with ``password``, percent-encoded."""
    parts = urlsplit(uri)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file ``path`` that only its owner may read or write, from the
    moment it exists (an older file there is removed first)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class _Service:
    """A server process of ours (a subclass defines ``start`` and ``stop``), used as a context
    manager: started on entry, stopped on exit."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalPostgres(_Service):
    """A private PostgreSQL cluster in ``folder``, listening on 127.0.0.1:``port`` only (and a
    unix socket in the folder), with a database ``mlflow``. Every connection, over TCP or the
    socket, must give the superuser's password (scram-sha-256), which is generated for the
    cluster and kept in ``password_file`` (mode 0600, in the folder). Run as root, the cluster
    belongs to and runs as the ``postgres`` system user."""

    def __init__(self, folder: str | Path, port: int = 5433):
        self.folder, self.port = Path(folder).resolve(), port
        self.bindir = postgres_bindir()
        self.log = self.folder / "server.log"
        self.password_file = self.folder / PASSWORD_FILE

    @property
    def password(self) -> str:
        """The superuser's password (there once the cluster has started)."""
        return self.password_file.read_text().strip()

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the ``mlflow`` database, with the password (hand it over
        through the environment; print it through ``redact``), naming the psycopg2 driver (the
        ``server`` extra's; SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3)."""
        return f"postgresql+psycopg2://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        """Create the cluster if the folder holds none, secure it if it lets anyone in without
        a password (a new cluster, or one made by an older version of this module with trust
        authentication) or its password file is gone, start the server and wait until it
        accepts connections, then create the database if missing. Raises ServerError when a
        server already runs in the folder or the start fails (with the log's tail)."""
        self._prepare_folder()
        new = not (self.folder / "PG_VERSION").is_file()
        if new:
            self._initdb()
        if self.running():
            raise ServerError(
                f"a PostgreSQL server already runs in {self.folder}: stop it with "
                f"`{shlex.join(self._command('pg_ctl', '-D', self.folder, 'stop'))}`"
            )
        if not self._secured():
            self._secure()
            if not new:
                print(
                    f"Secured the PostgreSQL in {self.folder}: every connection now needs the "
                    f"password kept in {self.password_file}"
                )
        options = (
            f"-c listen_addresses=127.0.0.1 -c max_connections={MAX_CONNECTIONS} -p {self.port} "
            f"-k {shlex.quote(str(self.folder))}"
        )
        start = ("-D", self.folder, "-l", self.log, "-o", options, "-w", "-t", "60", "start")
        try:  # an interrupt or a failure past this point stops what was started
            self._run("pg_ctl", *start)
            self._create_database()
        except BaseException:
            self.stop()
            raise

    def running(self) -> bool:
        """Whether a server runs in the folder."""
        status = subprocess.run(
            self._command("pg_ctl", "status", "-D", self.folder),
            capture_output=True,
            cwd=self.folder,
        )
        return status.returncode == 0

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended), if it runs."""
        if self.folder.is_dir() and self.running():
            self._run("pg_ctl", "-D", self.folder, "stop", "-m", "fast", "-w")

    def _prepare_folder(self) -> None:
        """Make the folder; as root, give it to the postgres user and check that user can
        reach it (every parent folder must be traversable)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.getuid() != 0:
            return
        shutil.chown(self.folder, SUPERUSER, SUPERUSER)
        self.folder.chmod(0o700)
        reach = subprocess.run(self._command("test", "-w", self.folder))
        if reach.returncode != 0:
            raise ServerError(
                f"PostgreSQL runs as the user {SUPERUSER}, who cannot reach {self.folder}: "
                "every folder above it must be traversable by that user (chmod o+x)"
            )

    def _initdb(self) -> None:
        """Create the cluster. Its rules trust every local connection until ``_secure``
        replaces them, before the server first starts (initdb reads a password only from a
        file, which the postgres user would have to be able to open)."""
        options = ("-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C")
        self._run("initdb", "-D", self.folder, *options)

    def _secured(self) -> bool:
        """Whether the password file is there and no rule of pg_hba.conf trusts a connection."""
        rules = (self.folder / "pg_hba.conf").read_text()
        return self.password_file.is_file() and not TRUST.search(rules)

    def _secure(self) -> None:
        """Give the superuser a new password (in single-user mode: no server listens
        meanwhile), make the rules of pg_hba.conf that trust ask for a password
        (scram-sha-256) instead, and write the password to ``password_file``. ServerError
        (the password masked) if the password cannot be set."""
        password = secrets.token_urlsafe(32)
        statement = (
            "SET password_encryption = 'scram-sha-256'; "
            f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"
        )
        single = self._command("postgres", "--single", "-D", self.folder, "postgres")
        done = subprocess.run(
            single, input=statement, capture_output=True, text=True, cwd=self.folder
        )
        if done.returncode != 0 or "ERROR:" in done.stderr:  # errors do not set its status
            raise ServerError(
                f"could not set the password of {SUPERUSER} in {self.folder}: "
                + (done.stdout + done.stderr).replace(password, "***")
            )
        rules = self.folder / "pg_hba.conf"
        rules.write_text(TRUST.sub(r"\1scram-sha-256", rules.read_text()))
        _write_private(self.password_file, password + "\n")

    def _create_database(self) -> None:
        client = ("-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER)
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        password = {**os.environ, "PGPASSWORD": self.password}
        found = self._run("psql", "-X", *client, "-d", "postgres", "-tAc", query, env=password)
        if found.strip() != "1":
            self._run("createdb", *client, DATABASE, env=password)

    def _command(self, program: str, *args) -> list[str]:
        """``program`` of the cluster's bindir (a system command if not there) with ``args``;
        as root, run as the postgres user (initdb and postgres refuse to run as root)."""
        path = self.bindir / program
        command = [str(path) if path.is_file() else program, *map(str, args)]
        return ["runuser", "-u", SUPERUSER, "--", *command] if os.getuid() == 0 else command

    def _run(self, program: str, *args, env: dict[str, str] | None = None) -> str:
        """Run the program in the folder (with ``env``, if given, for its environment); its
        output, or ServerError with that output and the server log's tail."""
        command = self._command(program, *args)
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, env=env)
        if done.returncode != 0:
            raise ServerError(
                f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                f"{self.log}:\n{_tail(self.log)}"
            )
        return done.stdout


class MlflowServer(_Service):
    """``mlflow server`` on ``backend_uri``, serving the artifacts it stores in the folder
    ``artifacts`` (so every node reaches them through HTTP). Its output goes to ``log``
    (default: ``mlflow-server.log`` beside the artifacts folder). ``backend_uri``, which may
    carry a password, reaches the server through its environment, never its command line."""

    def __init__(
        self,
        backend_uri: str,
        artifacts: str | Path,
        host: str = "127.0.0.1",
        port: int = 5000,
        allowed_hosts: str | None = None,
        workers: int = min(4, os.cpu_count() or 1),
        log: str | Path | None = None,
    ):
        self.backend_uri, self.artifacts = backend_uri, Path(artifacts).resolve()
        self.host, self.port, self.allowed_hosts, self.workers = host, port, allowed_hosts, workers
        self.log = Path(log) if log else self.artifacts.parent / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """The tracking URI; a wildcard bind is named by this machine's host name."""
        return _http(socket.gethostname() if self.host in WILDCARD_HOSTS else self.host, self.port)

    def start(self, timeout: float = 120.0) -> None:
        """Launch the server in its own process group and wait until GET /health answers;
        ServerError (with the log's tail) if the port is taken, or the server exits or does
        not answer within ``timeout`` seconds. MLflow's job runner (GenAI jobs, seven more
        processes) is left off. Each worker keeps up to ``POOL`` database connections (unless
        the environment sets MLflow's variables), so that many nodes writing at once wait for
        the database rather than fail."""
        self._check_port_free()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **POOL,
                    **os.environ,
                    "MLFLOW_BACKEND_STORE_URI": self.backend_uri,
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                },
            )
        try:
            self._wait_healthy(timeout)
        except BaseException:  # stop its workers, if any are left (Ctrl-C does not reach them)
            self.stop()
            raise

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
        command += ["--artifacts-destination", str(self.artifacts)]
        command += ["--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.allowed_hosts:
            command += ["--allowed-hosts", self.allowed_hosts]
        return command

    def _check_port_free(self) -> None:
        """ServerError if something listens on the port already (its /health would pass for
        this server's)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                raise ServerError(f"cannot listen on {self.host}:{self.port}: {error}") from None

    def _wait_healthy(self, timeout: float) -> None:
        local = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        health = f"{_http(local, self.port)}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"mlflow server exited; {self.log}:\n{_tail(self.log)}")
            try:
                urllib.request.urlopen(health, timeout=2).close()
                return
            except OSError:
                time.sleep(0.25)
        raise ServerError(
            f"mlflow server did not answer {health} in {timeout:.0f} s; "
            f"{self.log}:\n{_tail(self.log)}"
        )

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        return self.process.wait()

    def stop(self, grace: float = 30.0) -> None:
        """Terminate the server's process group (SIGTERM, SIGKILL after ``grace`` seconds)."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 1 to 65535")
    return int(text)


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an address to bind, e.g. 127.0.0.1 or 0.0.0.0"
        )
    return text.strip()


def _database(text: str) -> str:
    scheme = text.split("://", 1)[0].split("+", 1)[0] if "://" in text else ""
    if scheme not in DB_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"{redact(text)!r}: expected a database URI with scheme {', '.join(DB_SCHEMES)} "
            "(e.g. postgresql+psycopg2://user@host:5432/mlflow)"
        )
    if text.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + text[len("postgresql://") :]  # the server extra's driver
    return text


def _password_file(text: str) -> str:
    """The password in the file ``text`` (its first line); the file must be readable by its
    owner only, as libpq asks of ~/.pgpass."""
    path = Path(text)
    try:
        mode, lines = path.stat().st_mode, path.read_text().splitlines()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot read it ({error.strerror})") from None
    if mode & 0o077:
        raise argparse.ArgumentTypeError(
            f"{text!r}: other users can read it (mode {oct(mode & 0o777)}): chmod 600 {text}"
        )
    if not lines or not lines[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: empty, expected the database's password")
    return lines[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 and a message naming its flag. The
    password of ``--db-password-file`` is put into ``db``; a password typed into ``--db``
    gets a note saying where to keep it instead."""
    state = project_root() / ".server"
    parser = argparse.ArgumentParser(
        prog="python -m harness.server",
        description="Run a shared MLflow tracking server (PostgreSQL records, served artifacts).",
    )
    parser.add_argument(
        "--db",
        type=_database,
        help="database URI, e.g. postgresql+psycopg2://user@host/mlflow (default: a local "
        "PostgreSQL in --data); its password is best kept out of it (see --db-password-file)",
    )
    parser.add_argument(
        "--db-password-file",
        dest="db_password",
        metavar="FILE",
        type=_password_file,
        help="a file (mode 0600) holding the password of --db's user",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=state / "postgres",
        help="the local PostgreSQL's folder (%(default)s)",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=state / "artifacts",
        help="the server's artifact store (%(default)s)",
    )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="address to bind (%(default)s)"
    )
    parser.add_argument("--port", type=_port, default=5000, help="the server's port (%(default)s)")
    parser.add_argument(
        "--db-port", type=_port, default=5433, help="the local PostgreSQL's port (%(default)s)"
    )
    parser.add_argument("--allowed-hosts", help="Host headers the server accepts (mlflow's flag)")
    args = parser.parse_args(argv)
    given = urlsplit(args.db or "")
    if args.db_password and not given.username:
        parser.error("argument --db-password-file: needs --db with a user name (user@host)")
    if args.db_password and given.password is not None:
        parser.error("argument --db-password-file: --db already has a password; give it once")
    if args.db_password:
        args.db = with_password(args.db, args.db_password)
    elif given.password is not None:
        print(
            "Note: a password in --db is on the command line, where every user of this machine "
            "sees it (ps): keep it in a file given by --db-password-file (mode 0600)",
            file=sys.stderr,
        )
    return args


def _announce(server: MlflowServer, backend: str) -> None:
    """Say where the server is and how to record into it."""
    print(f"MLflow server {server.uri} on {backend}")
    print(f"  artifacts in {server.artifacts}, log {server.log}")
    print(f"Record into it with tracking=server and HARNESS_SERVER_URI={server.uri},")
    print(f"  or tracking.uri={server.uri}, or MLFLOW_TRACKING_URI={server.uri}")
    if server.host in WILDCARD_HOSTS and not server.allowed_hosts:
        name = f"{socket.gethostname()}:{server.port}"
        print(
            "Note: MLflow refuses API calls whose Host header is not localhost or a private IP "
            f"address (/health answers anyway); to use {server.uri} from other nodes, start it "
            f"with --allowed-hosts '{name},localhost:*,127.0.0.1:*' (the flag replaces "
            "MLflow's default list)"
        )
    print("Ctrl-C stops it.", flush=True)


def serve(args: argparse.Namespace) -> int:
    """Start the database (unless ``--db``) and the server, print the tracking URI, block until
    Ctrl-C or SIGTERM (0) or the server's own exit (1), and stop both."""
    signal.signal(signal.SIGTERM, stopping.interrupt)
    try:
        with contextlib.ExitStack() as stack:
            backend = args.db or stack.enter_context(LocalPostgres(args.data, args.db_port)).uri
            server = MlflowServer(backend, args.artifacts, args.host, args.port, args.allowed_hosts)
            stack.enter_context(server)
            _announce(server, redact(backend))
            status = server.wait()
            print(f"mlflow server exited ({status}); {server.log}:\n{_tail(server.log)}")
            return 1
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return serve(args)
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
