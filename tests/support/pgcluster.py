"""Throwaway PostgreSQL servers for tests and benchmarks.

No pytest in here: ``bench/`` scripts import this module too.

    from tests.pgcluster import ThrowawayPostgres   # or: from pgcluster import ...

    with ThrowawayPostgres() as pg:
        engine = sqlalchemy.create_engine(pg.url)            # postgresql+psycopg://postgres@127.0.0.1:<port>/clickstream
        other_url = pg.create_database("scratch")            # another fresh, empty database

What a :class:`ThrowawayPostgres` does:

* ``initdb`` into a new temp directory. When we are root it runs as the ``postgres`` OS user
  (``runuser -u postgres --``), because ``initdb`` refuses root; the directory is chowned to that user.
* ``pg_ctl start`` with settings tuned for throwaway data: ``fsync=off``, ``synchronous_commit=off``,
  ``full_page_writes=off``, ``max_connections=200``. It listens only on ``127.0.0.1`` on a free port,
  and its unix socket lives in the temp directory. Loopback auth is ``trust``, user ``postgres``, no password.
* ``stop()`` does a fast shutdown (``-m immediate``) and deletes the directory. It is also registered with
  :mod:`atexit`, so an interpreter that forgets to call it does not leave a server behind.

Binaries come from ``$PG_BIN``, else the highest ``/usr/lib/postgresql/<version>/bin``, else ``PATH``.

:class:`ExistingPostgres` wraps a server someone else runs (e.g. ``CLICKSTREAM_TEST_PG_URL``) behind the
same small interface: ``url``, ``admin_url``, ``url_for(db)``, ``create_database(name)``, ``drop_database(name)``.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "ExistingPostgres",
    "PostgresNotFound",
    "PostgresServer",
    "ThrowawayPostgres",
    "create_database",
    "drop_database",
    "find_pg_bin",
]

#: Settings written into postgresql.conf of a throwaway cluster. Durability is off: the data is disposable.
TEST_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    # Fewer, cheaper WAL writes; nobody replicates from a test server.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "1h",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "`apt-get install postgresql` (Debian/Ubuntu), or point $PG_BIN at the directory holding initdb and pg_ctl."
)


class PostgresNotFound(RuntimeError):
    """The PostgreSQL server binaries are not installed (or not where we looked)."""


# --------------------------------------------------------------------------------------------- helpers


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,)
    name = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_pg_bin() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``; raises :class:`PostgresNotFound` with an install hint."""
    candidates: list[Path] = []
    env = os.environ.get("PG_BIN")
    if env:
        candidates.append(Path(env))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for c in candidates:
        if all(os.access(c / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return c
    where = f" ($PG_BIN={env!r} has no initdb/pg_ctl)" if env else ""
    raise PostgresNotFound(_INSTALL_HINT + where)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"database name must match {_IDENT.pattern}: {name!r}")
    return name


def _libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://u@h:p/db`` -> ``postgresql://u@h:p/db`` (what psycopg.connect accepts)."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(sqlalchemy_url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(database=dbname).render_as_string(hide_password=False)


def _admin_connect(admin_url: str):
    import psycopg

    return psycopg.connect(_libpq_url(admin_url), autocommit=True, connect_timeout=10)


def create_database(admin_url: str, name: str, *, template: str = "template0") -> str:
    """``CREATE DATABASE name`` on the server of ``admin_url``; returns the new database's SQLAlchemy URL.

    ``template0`` + ``STRATEGY FILE_COPY`` (PostgreSQL 15+) is the fastest way to get an empty database on a
    server with ``fsync=off``: it copies the ~7 MB template directory instead of WAL-logging every page.
    """
    _check_ident(name)
    _check_ident(template)
    with _admin_connect(admin_url) as conn:
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
    return _with_database(admin_url, name)


def drop_database(admin_url: str, name: str, *, missing_ok: bool = True) -> None:
    """Drop ``name``, first terminating every connection to it (leftover pools, leaked sessions)."""
    _check_ident(name)
    with _admin_connect(admin_url) as conn:
        if_exists = " IF EXISTS" if missing_ok else ""
        if conn.info.server_version >= 130000:
            conn.execute(f'DROP DATABASE{if_exists} "{name}" WITH (FORCE)')
        else:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE{if_exists} "{name}"')


# --------------------------------------------------------------------------------------------- servers


class PostgresServer:
    """What tests need from a PostgreSQL server: URLs and database create/drop."""

    #: SQLAlchemy URL of the database used for CREATE/DROP DATABASE.
    admin_url: str
    #: SQLAlchemy URL of the server's main test database.
    url: str

    def url_for(self, dbname: str) -> str:
        return _with_database(self.admin_url, _check_ident(dbname))

    def create_database(self, name: str, *, template: str = "template0") -> str:
        return create_database(self.admin_url, name, template=template)

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        drop_database(self.admin_url, name, missing_ok=missing_ok)

    def stop(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ExistingPostgres(PostgresServer):
    """A server we did not start. ``url`` is where tests may run ``CREATE DATABASE``; it is never stopped."""

    def __init__(self, url: str) -> None:
        self.url = self.admin_url = url

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url

        return f"ExistingPostgres({make_url(self.url).render_as_string(hide_password=True)!r})"


class ThrowawayPostgres(PostgresServer):
    """A private PostgreSQL server in a temp directory, listening on 127.0.0.1:<free port>.

    :param dbname: database created at start; ``url`` points at it.
    :param base_dir: where the temp directory goes (default: ``$TMPDIR``, or ``/tmp`` when running as root
        and ``$TMPDIR`` is not reachable by the ``postgres`` user).
    :param settings: extra/overriding ``postgresql.conf`` settings, values as written in the file
        (quote strings yourself: ``{"timezone": "'UTC'"}``).
    :param bin_dir: directory of ``initdb``/``pg_ctl``; default :func:`find_pg_bin`.
    :param os_user: OS user the server runs as when we are root (default ``postgres``).

    Call :meth:`start` (or use ``with``) and :meth:`stop`.
    """

    user = "postgres"  # database superuser name

    def __init__(
        self,
        dbname: str = "clickstream",
        *,
        base_dir: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        os_user: str = "postgres",
    ) -> None:
        self.dbname = _check_ident(dbname)
        self._base_dir = base_dir
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.os_user = os_user
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.dir: Path | None = None
        self.startup_seconds: float | None = None
        self._running = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- paths and URLs
    @property
    def data_dir(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "postgres.log"

    @property
    def admin_url(self) -> str:  # type: ignore[override]
        return self._url("postgres")

    @property
    def url(self) -> str:  # type: ignore[override]
        return self._url(self.dbname)

    def _url(self, db: str) -> str:
        if self.port is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{db}"

    def __repr__(self) -> str:
        state = f"{self.host}:{self.port}, {self.dir}" if self._running else "stopped"
        return f"ThrowawayPostgres({state})"

    # -- running commands as the right OS user
    @property
    def _as_root(self) -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _cmd(self, exe: str, *args: str) -> list[str]:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / exe), *args]
        if self._as_root:
            runuser = shutil.which("runuser")
            if not runuser:
                raise RuntimeError("running as root but `runuser` (util-linux) is not installed")
            cmd = [runuser, "-u", self.os_user, "--", *cmd]
        return cmd

    def _pg_ctl_start(self, timeout: float) -> None:
        """``pg_ctl start`` on this cluster's data directory and port, waiting up to ``timeout`` s for it."""
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(timeout)),
            "-s",
            timeout=max(120, timeout + 10),
        )

    def _run(self, exe: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        for var in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"):
            env.pop(var, None)
        proc = subprocess.run(
            self._cmd(exe, *args),
            cwd=self.dir,  # the postgres user may not be able to read the caller's cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{exe} failed (exit {proc.returncode}): {' '.join(proc.args)}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n--- log\n{self._log_tail()}"
            )
        return proc

    def _log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AssertionError):
            return "(no log)"

    def _pick_base_dir(self) -> str:
        if self._base_dir is not None:
            return os.fspath(self._base_dir)
        base = tempfile.gettempdir()
        if self._as_root:
            # Every ancestor must be searchable by the postgres user, and the socket path must stay
            # short (sun_path is 107 bytes): fall back to /tmp if $TMPDIR is e.g. under /root.
            p, ok = Path(base).resolve(), True
            for d in [p, *p.parents]:
                if not (d.stat().st_mode & 0o001):
                    ok = False
                    break
            if not ok or len(base) > 60:
                base = "/tmp"
        return base

    # -- lifecycle
    def start(self, attempts: int = 3) -> ThrowawayPostgres:
        """initdb + start + create ``dbname``. Returns self. Safe to call once."""
        if self._running:
            return self
        if self.bin_dir is None:
            self.bin_dir = find_pg_bin()
        for exe in ("initdb", "pg_ctl", "postgres"):
            if not os.access(self.bin_dir / exe, os.X_OK):
                raise PostgresNotFound(f"{self.bin_dir / exe} is missing. {_INSTALL_HINT}")
        t0 = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="clickstream-pg-", dir=self._pick_base_dir()))
        atexit.register(self.stop)
        try:
            if self._as_root:
                try:
                    shutil.chown(self.dir, user=self.os_user, group=None)
                except LookupError:
                    raise RuntimeError(
                        f"running as root but there is no OS user {self.os_user!r} to run PostgreSQL as "
                        "(`apt-get install postgresql` creates it)"
                    ) from None
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            )
            self._running = True  # from here on stop() must try pg_ctl stop
            self._start_watchdog()
            last_error: Exception | None = None
            for _ in range(attempts):  # the free port can be taken between free_port() and listen()
                self.port = free_port(self.host)
                self._write_conf()
                try:
                    self._pg_ctl_start(60)
                    break
                except RuntimeError as e:
                    last_error = e
                    if "could not bind" not in self._log_tail() and "in use" not in self._log_tail():
                        raise
            else:
                raise RuntimeError(f"could not start PostgreSQL after {attempts} attempts") from last_error
            self._wait_ready()
            if self.dbname != "postgres":
                create_database(self.admin_url, self.dbname)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_watchdog(self) -> None:
        """A detached shell that stops the server and removes its directory if this process dies without
        calling stop() (SIGKILL, a killed CI job, a crashed benchmark)."""
        import shlex

        stop = " ".join(
            shlex.quote(a) for a in self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-s")
        )
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.dir))}"
        )
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", script],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not hit by the Ctrl-C / SIGTERM aimed at our process group
        )

    def _write_conf(self) -> None:
        settings = {
            **self.settings,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
        }
        conf = self.data_dir / "postgresql.conf"
        marker = "# --- clickstream ThrowawayPostgres ---\n"
        text = conf.read_text()
        text = text.split(marker)[0]  # idempotent across port retries; later lines win anyway
        text += marker + "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf.write_text(text)  # as root this keeps the file's owner (postgres)

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(_libpq_url(self.admin_url), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections:\n{self._log_tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (immediate shutdown; data is thrown away) and delete its directory. Idempotent."""
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover
            pass
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._running and self.dir is not None:
            self._running = False
            try:
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "-s")
            except Exception:
                # Last resort: signal the postmaster directly so no server outlives us.
                try:
                    pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, 9)
                except Exception:
                    pass
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.port = None

    # -- faults: take the server down and bring it back, keeping its directory, data and port

    def postmaster_pid(self) -> int | None:
        """The pid of the running postmaster (from ``postmaster.pid``), or None when the server is down."""
        if self.dir is None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by the postgres user
            pass
        return pid

    def halt(self, mode: str = "immediate", timeout: float = 30) -> float:
        """Stop the server like a crash (``pg_ctl stop -m immediate``) or a shutdown (``fast``, ``smart``),
        keeping its directory, data and port, so :meth:`resume` brings the same database back. Connections
        are cut; new ones are refused. Returns the seconds it took. :meth:`stop` still cleans up afterwards.

        With ``immediate`` the next start runs crash recovery. Committed data survives it only when commits
        wait for the WAL write: ``synchronous_commit = on`` (the default :data:`TEST_SETTINGS` turn it off).
        """
        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"mode must be immediate, fast or smart, got {mode!r}")
        if not self._running or self.dir is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        t0 = time.monotonic()
        self._run(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "-s",
            timeout=timeout + 10,
        )
        return time.monotonic() - t0

    def crash(self, timeout: float = 30) -> float:
        """Like ``halt("immediate")``, but at once: SIGQUIT straight to the postmaster (what ``pg_ctl stop -m
        immediate`` sends), without the milliseconds ``pg_ctl`` (and ``runuser``) take to start; for races
        that must hit a statement in flight. Returns once the postmaster is gone, with the seconds it took."""
        import signal

        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("PostgreSQL is not running")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGQUIT)
        while self.postmaster_pid() is not None:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the postmaster (pid {pid}) did not exit within {timeout} s of SIGQUIT")
            time.sleep(0.01)
        return time.monotonic() - t0

    def resume(self, timeout: float = 60) -> float:
        """Start the server again after :meth:`halt`, on the same port with the same data; returns once it
        accepts connections (after crash recovery, if any). Returns the seconds it took."""
        if not self._running or self.dir is None or self.port is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        t0 = time.monotonic()
        if self.postmaster_pid() is None:
            self._pg_ctl_start(timeout)
        self._wait_ready(timeout=timeout)
        return time.monotonic() - t0

    def restart(self, mode: str = "immediate", down_s: float = 0.0) -> float:
        """:meth:`halt` with ``mode``, stay down ``down_s`` seconds, :meth:`resume`. Returns the outage's length
        in seconds (from the halt's start to accepting connections again)."""
        t0 = time.monotonic()
        self.halt(mode)
        if down_s > 0:
            time.sleep(down_s)
        self.resume()
        return time.monotonic() - t0

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()


if __name__ == "__main__":  # python tests/pgcluster.py : start a server, print its URL, wait for Ctrl-C / SIGTERM
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.default_int_handler)  # background jobs start with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the with-block's stop() on `kill`
    with ThrowawayPostgres() as pg:
        print(f"{pg.url}  (started in {pg.startup_seconds:.2f}s, dir {pg.dir}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
