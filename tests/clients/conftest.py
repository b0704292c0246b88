"""Shared fixtures for the real-client tests: one Weir server per test session.

The server binary comes from ``WEIR_BIN`` (default
``${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}/debug/weir``). It is started as

    weir serve --data-dir <tmp> --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0

and must print exactly one line on stdout once it listens:

    weir ready pg=127.0.0.1:<port> http=127.0.0.1:<port>

Logs go to stderr (kept in a file; the lines a failing test produced are attached to its report).
At the end of the session it gets SIGTERM and must exit with code 0.

``WEIR_TEST_EXTERNAL_PG=HOST:PORT`` skips starting Weir and runs the suite against a server that is
already running, e.g. a real PostgreSQL with a database and a superuser both named ``weir``: that is
how the tests themselves are checked against the reference behaviour.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import uuid
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

READY_RE = re.compile(
    r"^weir ready pg=(?P<pg_host>[0-9.]+):(?P<pg_port>\d+) http=(?P<http_host>[0-9.]+):(?P<http_port>\d+)"
    r" flight=(?P<flight_host>[0-9.]+):(?P<flight_port>\d+)$"
)
READY_TIMEOUT_S = float(os.environ.get("WEIR_READY_TIMEOUT", "60"))
STOP_TIMEOUT_S = float(os.environ.get("WEIR_STOP_TIMEOUT", "30"))

# Every client connects as this user to this database (Weir accepts any user, no password).
USER = "weir"
DBNAME = "weir"


class Server(NamedTuple):
    """What the ``weir`` fixture yields: (host, port, http_port, flight_port) with helpers."""

    host: str
    port: int
    http_port: Optional[int]
    flight_port: Optional[int] = None

    def conninfo(self, **extra: object) -> str:
        """libpq connection string (psycopg, psycopg2). sslmode=prefer: libpq sends an
        SSLRequest first and must get 'N', as with a real client's defaults."""
        params = {
            "host": self.host,
            "port": self.port,
            "user": USER,
            "dbname": DBNAME,
            "sslmode": "prefer",
            "connect_timeout": 10,
        }
        params.update(extra)
        return " ".join(f"{k}={v}" for k, v in params.items())

    def flight_uri(self) -> str:
        """The Arrow Flight SQL endpoint (ADBC's ``uri``)."""
        return f"grpc://{self.host}:{self.flight_port}"

    def url(self, scheme: str = "postgresql") -> str:
        return f"{scheme}://{USER}@{self.host}:{self.port}/{DBNAME}?sslmode=prefer&connect_timeout=10"


def weir_bin() -> Path:
    explicit = os.environ.get("WEIR_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(Path.home(), ".cache", "weir-target")
    return Path(target) / "debug" / "weir"


class _Running:
    """The started server process and where its stderr goes."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, stdout_lines: "queue.Queue[str]"):
        self.proc = proc
        self.log_path = log_path
        self.stdout_lines = stdout_lines

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, max_lines: int = 200) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = data.splitlines()
        if len(lines) > max_lines:
            lines = [f"... ({len(lines) - max_lines} earlier lines cut)"] + lines[-max_lines:]
        return "\n".join(lines)

    def log_tail(self, max_lines: int = 60) -> str:
        return self.log_since(0, max_lines)


_running: Optional[_Running] = None


def _start(tmp_dir: Path, extra_args: tuple[str, ...] = (), extra_env: Optional[dict] = None) -> tuple[_Running, Server]:
    binary = weir_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        # A failure, not a skip: a CI run that never built the server must not pass quietly.
        pytest.fail(
            f"Weir binary not found at {binary}: build it first (cargo build) or point WEIR_BIN at it",
            pytrace=False,
        )
    data_dir = tmp_dir / "data"
    data_dir.mkdir()
    log_path = tmp_dir / "weir.stderr.log"
    log = open(log_path, "wb")
    cmd = [
        str(binary), "serve",
        "--data-dir", str(data_dir),
        "--pg-addr", "127.0.0.1:0",
        "--http-addr", "127.0.0.1:0",
        "--flight-addr", "127.0.0.1:0",
        *extra_args,
    ]
    env = dict(os.environ)
    env.update(extra_env or {})
    env.setdefault("RUST_BACKTRACE", "1")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env, cwd=tmp_dir
    )
    log.close()

    lines: "queue.Queue[str]" = queue.Queue()

    def pump() -> None:  # keeps draining stdout so the server never blocks on a full pipe
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines.put(None)  # type: ignore[arg-type]  # EOF

    threading.Thread(target=pump, name="weir-stdout", daemon=True).start()
    running = _Running(proc, log_path, lines)

    def give_up(why: str) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pytest.fail(
            f"{why}\ncommand: {' '.join(cmd)}\nexit code: {proc.returncode}\n"
            f"--- weir stderr (tail) ---\n{running.log_tail()}",
            pytrace=False,
        )

    try:
        first = lines.get(timeout=READY_TIMEOUT_S)
    except queue.Empty:
        give_up(f"weir printed no ready line within {READY_TIMEOUT_S:.0f}s")
    if first is None:
        give_up("weir exited (stdout closed) before printing its ready line")
    m = READY_RE.match(first)
    if not m:
        give_up(
            "the first stdout line is not the ready line "
            f"'weir ready pg=127.0.0.1:<port> http=127.0.0.1:<port> flight=127.0.0.1:<port>': {first!r}"
        )
    server = Server(m["pg_host"], int(m["pg_port"]), int(m["http_port"]), int(m["flight_port"]))
    if server.host != "127.0.0.1" or server.port == 0 or server.http_port == 0 or server.flight_port == 0:
        give_up(f"ready line does not report the bound loopback ports: {first!r}")
    return running, server


def _stop(running: _Running) -> None:
    proc = running.proc
    early = proc.poll()
    if early is not None:
        pytest.fail(
            f"weir exited during the test session with code {early}\n"
            f"--- weir stderr (tail) ---\n{running.log_tail()}",
            pytrace=False,
        )
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"weir did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM\n"
            f"--- weir stderr (tail) ---\n{running.log_tail()}",
            pytrace=False,
        )
    # Anything printed on stdout after the ready line breaks the "exactly one line" contract.
    extra = []
    while True:
        try:
            line = running.stdout_lines.get(timeout=5)
        except queue.Empty:
            break
        if line is None:
            break
        extra.append(line)
    assert code == 0, (
        f"weir exited with code {code} after SIGTERM (expected a clean stop, 0)\n"
        f"--- weir stderr (tail) ---\n{running.log_tail()}"
    )
    assert not extra, f"weir printed more than the ready line on stdout: {extra[:5]!r}"


@pytest.fixture(scope="session")
def weir(tmp_path_factory: pytest.TempPathFactory):
    """The server: yields Server(host, port, http_port, flight_port); stops it with SIGTERM at the end."""
    global _running
    external = os.environ.get("WEIR_TEST_EXTERNAL_PG")
    if external:
        host, _, port = external.rpartition(":")
        yield Server(host or "127.0.0.1", int(port), None)
        return
    running, server = _start(tmp_path_factory.mktemp("weir"))
    _running = running
    try:
        yield server
    finally:
        _running = None
        _stop(running)


SUPERUSER_PASSWORD = "client-tests-pw-7d1f"


def run_jdbc_auth(server: Server, *url_parameters: str) -> subprocess.CompletedProcess:
    """Runs JdbcAuth.java (pgJDBC: a wrong password, then the superuser's) against ``server``.
    Without java or the pgJDBC jar the test is skipped, except under CI, where it fails."""
    import shutil

    java = shutil.which("java")
    jar = Path(os.environ.get("WEIR_PGJDBC_JAR", "/usr/share/java/postgresql.jar"))
    if java is None or not jar.is_file():
        msg = "java or the pgJDBC jar is missing: a pgJDBC login test did NOT run (tests/clients/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI=true: refusing to skip)", pytrace=False)
        pytest.skip(msg)
    source = Path(__file__).with_name("JdbcAuth.java")
    return subprocess.run(
        [java, "-cp", str(jar), str(source), server.host, str(server.port), SUPERUSER_PASSWORD, *url_parameters],
        capture_output=True, text=True, timeout=120,
    )


def asyncpg_fetchval(server: Server, sql: str, password: str, ssl: object) -> object:
    """The value of `sql`, over a new asyncpg connection as user weir (``ssl``: False or an
    SSLContext)."""
    import asyncio

    import asyncpg

    async def main() -> object:
        conn = await asyncpg.connect(host=server.host, port=server.port, user=USER, database=DBNAME, password=password, ssl=ssl)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(main())


@pytest.fixture(scope="session")
def weir_password(tmp_path_factory: pytest.TempPathFactory):
    """A second server with password authentication (SCRAM-SHA-256), whose superuser ``weir``
    has the password ``SUPERUSER_PASSWORD``: yields (Server, its log file)."""
    if os.environ.get("WEIR_TEST_EXTERNAL_PG"):
        pytest.skip("password authentication is tested against Weir only")
    running, server = _start(
        tmp_path_factory.mktemp("weir-password"),
        ("--auth", "password"),
        # Statements are logged at debug: the log test checks they are redacted.
        {"WEIR_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD, "WEIR_LOG": "info,weir=debug"},
    )
    try:
        yield server, running.log_path
    finally:
        _stop(running)


@pytest.fixture(scope="session")
def weir_tls(tmp_path_factory: pytest.TempPathFactory):
    """A third server with TLS from a self-signed certificate and password authentication:
    yields (Server, the certificate's path, to trust it as a root)."""
    if os.environ.get("WEIR_TEST_EXTERNAL_PG"):
        pytest.skip("TLS is tested against Weir only")
    tmp = tmp_path_factory.mktemp("weir-tls")
    running, server = _start(tmp, ("--auth", "password", "--tls-self-signed"), {"WEIR_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD})
    try:
        yield server, tmp / "data" / "tls" / "self-signed.crt"
    finally:
        _stop(running)


@pytest.fixture
def unique_name():
    """unique_name("t_psql") -> "t_psql_1a2b3c4d": a fresh lower-case table name per call."""

    def make(prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:8]}"

    return make


# --- attach the server's stderr lines written during a failing test to its report -------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    item._weir_log_offset = _running.log_size() if _running else None  # type: ignore[attr-defined]
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    offset = getattr(item, "_weir_log_offset", None)
    if report.when == "call" and report.failed and _running is not None and offset is not None:
        text = _running.log_since(offset)
        if text:
            report.sections.append(("weir stderr during this test", text))
        if _running.proc.poll() is not None:
            report.sections.append(("weir process", f"exited with code {_running.proc.returncode}"))

