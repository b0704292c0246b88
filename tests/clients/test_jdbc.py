"""pgJDBC (Debian's libpostgresql-jdbc-java) against Weir, through JdbcTest.java.

JdbcTest.java is a single-file Java program (Java 11+ runs it without a separate compile step);
it prints one line per check and exits non-zero if any failed. Here it gets the server's port.

Without `java` the test is skipped with a loud message, except under CI (CI=true), where a missing
JDK is a broken setup and fails the test: tests/clients/setup.sh installs everything it needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JAR = Path(os.environ.get("WEIR_PGJDBC_JAR", "/usr/share/java/postgresql.jar"))
SOURCE = Path(__file__).with_name("JdbcTest.java")


def test_pgjdbc_metadata_and_prepared_statements(weir):
    java = shutil.which("java")
    if java is None:
        msg = ("java not found: the pgJDBC client test did NOT run. "
               "Install a JDK (tests/clients/setup.sh does) to run it.")
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI=true: refusing to skip)", pytrace=False)
        print(f"\n*** {msg} ***", file=sys.stderr)
        pytest.skip(msg)
    if not JAR.is_file():
        pytest.fail(f"pgJDBC jar not found at {JAR}: apt-get install libpostgresql-jdbc-java "
                    "(tests/clients/setup.sh) or set WEIR_PGJDBC_JAR", pytrace=False)

    # pgJDBC sends the JVM's zone as the TimeZone startup parameter: use a non-UTC one, as on a
    # developer's desktop. JdbcTest compares instants, so its checks do not depend on it.
    proc = subprocess.run(
        [java, "-Duser.timezone=Europe/Berlin", "-cp", str(JAR), str(SOURCE), str(weir.port), weir.host],
        capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout
    failed = [line for line in out.splitlines() if not line.startswith("ok ")]
    assert proc.returncode == 0, (
        f"JdbcTest exited {proc.returncode}\n" + "\n".join(failed[-80:]) + f"\nstderr:\n{proc.stderr[-4000:]}"
    )
    assert "JdbcTest finished:" in out and "failures=0" in out, out[-2000:]
    # It really checked things (metadata, 8 select runs with rows...), not just connected.
    assert sum(1 for line in out.splitlines() if line.startswith("ok ")) >= 100, out[-2000:]
