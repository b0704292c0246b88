#!/usr/bin/env python3
"""Check Weir's sqllogictest files against a real PostgreSQL.

Usage:
    python3 tests/slt/check_against_postgres.py DSN [FILE.slt ...] [--fresh-db] [--no-type-check]

    DSN          libpq connection string, e.g. "host=/tmp/slt-pg port=5439 user=postgres dbname=postgres"
    FILE.slt     files to run (default: every *.slt next to this script)
    --fresh-db   run each file in its own throw-away database (CREATE/DROP DATABASE)
    --no-type-check  do not check the `query <types>` letters against the result column types

Needs psycopg 3 (`pip install 'psycopg[binary]'`).

It understands the subset of the sqllogictest format (as parsed by the Rust `sqllogictest`
crate 0.29) that these files use:

    # comment
    statement ok | statement count <n> | statement error <regex> | statement error (<SQLSTATE>)
    query <types> [nosort|rowsort|valuesort] [label]   ... ---- results (until an empty line)
    query error <regex> | query error (<SQLSTATE>)
    halt

and compares results the way the crate's default runner does, given a Postgres driver that
runs every record with the simple query protocol (text format):

  * a value is the text the server sent; SQL NULL -> "NULL", the empty string -> "(empty)";
  * `rowsort` sorts the rows (lists of strings) before comparing, `valuesort` sorts all values;
  * each value and each expected line are whitespace-normalised (trim, runs of ASCII whitespace
    -> one space), a row is its values joined with one space; rows must equal expected lines;
  * `statement error <regex>`: the regex is searched (unanchored) in the error text
    "ERROR: <message>[\\nDETAIL: <detail>][\\nHINT: <hint>]" (the Display of tokio-postgres's
    DbError); `(XXXXX)` compares the SQLSTATE instead;
  * `statement count <n>`: rows affected (command tag count), or rows returned for a query.

In addition (stricter than the crate's default column validator) it checks that a query returns
as many columns as it has type letters, and that each letter fits the column's Postgres type:
I = smallint/int/bigint, R = real/double precision/numeric, T = anything else.

Prints one PASS/FAIL line per file and exits 1 if any record did not match (2 on usage errors).
"""

import glob
import os
import re
import sys

try:
    from psycopg import pq
    from psycopg.conninfo import make_conninfo
except ImportError:  # pragma: no cover
    sys.exit("psycopg 3 is needed: pip install 'psycopg[binary]'")

RESULTS_DELIMITER = "----"
SQLSTATE_RE = re.compile(r"^\(([0-9A-Z]{5})\)$")
ASCII_WS = re.compile(r"[ \t\n\x0c\r]+")

# Postgres type OIDs -> sqllogictest type letter.
INT_OIDS = {20, 21, 23}  # int8, int2, int4
FLOAT_OIDS = {700, 701, 1700}  # float4, float8, numeric


class ParseError(Exception):
    pass


class Record:
    def __init__(self, kind, line, sql, **kw):
        self.kind = kind  # "statement" | "query" | "halt"
        self.line = line
        self.sql = sql
        self.expect_ok = kw.get("expect_ok", False)
        self.count = kw.get("count")
        self.error = kw.get("error")  # None | ("any",) | ("regex", re) | ("sqlstate", code)
        self.types = kw.get("types", "")
        self.sort = kw.get("sort")
        self.results = kw.get("results", [])


def parse_error_spec(tokens, lineno):
    joined = " ".join(tokens)
    if not joined:
        return ("any",)
    m = SQLSTATE_RE.match(joined)
    if m:
        return ("sqlstate", m.group(1))
    try:
        return ("regex", re.compile(joined))
    except re.error as e:
        raise ParseError(f"line {lineno}: invalid error regex {joined!r}: {e}")


def parse_file(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records = []
    i = 0
    n = len(lines)

    def read_sql(start):
        """SQL runs until an empty line or the results delimiter. Returns (sql, has_results, next)."""
        if start >= n:
            raise ParseError(f"line {start}: unexpected end of file, SQL expected")
        out = [lines[start]]
        j = start + 1
        while j < n:
            line = lines[j]
            if line == "":
                return "\n".join(out), False, j + 1
            if line == RESULTS_DELIMITER:
                return "\n".join(out), True, j + 1
            out.append(line)
            j += 1
        return "\n".join(out), False, j

    while i < n:
        line = lines[i]
        lineno = i + 1
        if line.startswith("#") or line == "":
            i += 1
            continue
        tokens = line.split()
        if not tokens:
            i += 1
            continue
        head = tokens[0]
        if head == "halt" and len(tokens) == 1:
            records.append(Record("halt", lineno, ""))
            i += 1
        elif head == "statement":
            rest = tokens[1:]
            kw = {}
            if rest == ["ok"]:
                kw["expect_ok"] = True
            elif len(rest) == 2 and rest[0] == "count":
                try:
                    kw["count"] = int(rest[1])
                except ValueError:
                    raise ParseError(f"line {lineno}: bad count {rest[1]!r}")
            elif rest and rest[0] == "error":
                kw["error"] = parse_error_spec(rest[1:], lineno)
            else:
                raise ParseError(f"line {lineno}: unsupported statement line {line!r}")
            sql, has_results, i = read_sql(i + 1)
            if has_results:
                raise ParseError(f"line {lineno}: statement has results (unsupported here)")
            records.append(Record("statement", lineno, sql, **kw))
        elif head == "query":
            rest = tokens[1:]
            kw = {}
            if rest and rest[0] == "error":
                kw["error"] = parse_error_spec(rest[1:], lineno)
            elif rest:
                kw["types"] = rest[0]
                if len(rest) > 1 and rest[1] in ("nosort", "rowsort", "valuesort"):
                    kw["sort"] = rest[1]
                    extra = rest[2:]
                else:
                    extra = rest[1:]
                if len(extra) > 1:
                    raise ParseError(f"line {lineno}: unsupported query options {extra!r}")
            sql, has_results, i = read_sql(i + 1)
            results = []
            if has_results:
                if "error" in kw:
                    raise ParseError(f"line {lineno}: multi-line errors are not supported here")
                while i < n and lines[i] != "":
                    results.append(lines[i])
                    i += 1
                i += 1
            kw["results"] = results
            records.append(Record("query", lineno, sql, **kw))
        else:
            raise ParseError(f"line {lineno}: unsupported line {line!r}")
    return records


def normalize(s):
    return ASCII_WS.sub(" ", s.strip())


def error_text(res):
    """What tokio-postgres's DbError Display gives: 'SEVERITY: message' plus DETAIL/HINT lines."""

    def field(code):
        v = res.error_field(code)
        return v.decode("utf-8", "replace") if v is not None else None

    severity = field(pq.DiagnosticField.SEVERITY_NONLOCALIZED) or field(pq.DiagnosticField.SEVERITY) or "ERROR"
    msg = field(pq.DiagnosticField.MESSAGE_PRIMARY)
    if msg is None:
        return res.error_message.decode("utf-8", "replace").strip(), None
    text = f"{severity}: {msg}"
    detail = field(pq.DiagnosticField.MESSAGE_DETAIL)
    hint = field(pq.DiagnosticField.MESSAGE_HINT)
    if detail is not None:
        text += f"\nDETAIL: {detail}"
    if hint is not None:
        text += f"\nHINT: {hint}"
    return text, field(pq.DiagnosticField.SQLSTATE)


def cell(res, r, c):
    v = res.get_value(r, c)  # None for SQL NULL, b"" for the empty string
    if v is None:
        return "NULL"
    s = bytes(v).decode("utf-8")
    return "(empty)" if s == "" else s


def type_letter(oid):
    if oid in INT_OIDS:
        return "I"
    if oid in FLOAT_OIDS:
        return "R"
    return "T"


def run_sql(conn, sql):
    """Simple query protocol, like tokio-postgres simple_query. Returns a dict."""
    res = conn.exec_(sql.encode("utf-8"))
    st = res.status
    if st == pq.ExecStatus.TUPLES_OK:
        rows = [[cell(res, r, c) for c in range(res.nfields)] for r in range(res.ntuples)]
        oids = [res.ftype(c) for c in range(res.nfields)]
        return {"kind": "rows", "rows": rows, "oids": oids}
    if st in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY):
        ct = res.command_tuples
        return {"kind": "complete", "count": ct if ct is not None else 0,
                "tag": (res.command_status or b"").decode()}
    if st == pq.ExecStatus.FATAL_ERROR:
        text, sqlstate = error_text(res)
        return {"kind": "error", "text": text, "sqlstate": sqlstate}
    return {"kind": "error", "text": f"unexpected result status {st!r}", "sqlstate": None}


def match_error(spec, out):
    if spec[0] == "any":
        return True
    if spec[0] == "regex":
        return spec[1].search(out["text"]) is not None
    return out["sqlstate"] == spec[1]


def describe_spec(spec):
    return {"any": lambda: "(any error)", "regex": lambda: f"(regex) {spec[1].pattern}",
            "sqlstate": lambda: f"(sqlstate) {spec[1]}"}[spec[0]]()


def check_record(conn, rec, type_check):
    """Returns None if the record passes, else a message."""
    out = run_sql(conn, rec.sql)
    if rec.kind == "statement":
        if rec.error is not None:
            if out["kind"] != "error":
                return "statement succeeded but an error was expected"
            if not match_error(rec.error, out):
                return (f"error mismatch\n  expected: {describe_spec(rec.error)}\n"
                        f"  actual:   {out['text']!r} (SQLSTATE {out['sqlstate']})")
            return None
        if out["kind"] == "error":
            return f"statement failed: {out['text']!r} (SQLSTATE {out['sqlstate']})"
        if rec.count is not None:
            got = len(out["rows"]) if out["kind"] == "rows" else out["count"]
            if got != rec.count:
                return f"statement count mismatch: expected {rec.count}, got {got}"
        return None

    # query
    if rec.error is not None:
        if out["kind"] != "error":
            return "query succeeded but an error was expected"
        if not match_error(rec.error, out):
            return (f"error mismatch\n  expected: {describe_spec(rec.error)}\n"
                    f"  actual:   {out['text']!r} (SQLSTATE {out['sqlstate']})")
        return None
    if out["kind"] == "error":
        return f"query failed: {out['text']!r} (SQLSTATE {out['sqlstate']})"
    if out["kind"] == "complete":
        if rec.results:
            return "query returned no rows description (a statement), but results were expected"
        return None
    rows = out["rows"]
    if type_check:
        actual_types = "".join(type_letter(o) for o in out["oids"])
        if len(actual_types) != len(rec.types) or actual_types != rec.types:
            return f"column types mismatch: expected {rec.types}, actual {actual_types} (oids {out['oids']})"
    if rec.sort == "rowsort":
        rows = sorted(rows)
    elif rec.sort == "valuesort":
        rows = sorted([v] for row in rows for v in row)
    actual_lines = [" ".join(normalize(v) for v in row) for row in rows]
    expected_lines = [normalize(l) for l in rec.results]
    if actual_lines != expected_lines:
        exp = "\n".join("    " + l for l in rec.results) or "    (nothing)"
        act = "\n".join("    " + " ".join(row) for row in rows) or "    (nothing)"
        return f"query result mismatch\n  expected:\n{exp}\n  actual:\n{act}"
    return None


def connect(dsn):
    conn = pq.PGconn.connect(dsn.encode())
    if conn.status != pq.ConnStatus.OK:
        raise RuntimeError(conn.error_message.decode(errors="replace").strip())
    return conn


def run_file(dsn, path, fresh_db, type_check):
    name = os.path.basename(path)
    try:
        records = parse_file(path)
    except ParseError as e:
        return [f"parse error: {e}"], 0
    admin = None
    dbname = None
    if fresh_db:
        admin = connect(dsn)
        dbname = "slt_" + re.sub(r"[^a-z0-9_]", "_", name.lower().rsplit(".", 1)[0])
        run_sql(admin, f'DROP DATABASE IF EXISTS "{dbname}"')
        out = run_sql(admin, f'CREATE DATABASE "{dbname}"')
        if out["kind"] == "error":
            admin.finish()
            return [f"cannot create database {dbname}: {out['text']}"], 0
        file_dsn = make_conninfo(dsn, dbname=dbname)
    else:
        file_dsn = dsn
    failures = []
    ran = 0
    conn = connect(file_dsn)
    try:
        for rec in records:
            if rec.kind == "halt":
                break
            ran += 1
            msg = check_record(conn, rec, type_check)
            if msg is not None:
                sql = "\n".join("    " + l for l in rec.sql.split("\n"))
                failures.append(f"{name}:{rec.line}: {msg}\n  sql:\n{sql}")
    finally:
        conn.finish()
        if admin is not None:
            run_sql(admin, f'DROP DATABASE IF EXISTS "{dbname}"')
            admin.finish()
    return failures, ran


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = {a for a in argv[1:] if a.startswith("--")}
    unknown = flags - {"--fresh-db", "--no-type-check"}
    if not args or unknown:
        print(__doc__, file=sys.stderr)
        return 2
    dsn, files = args[0], args[1:]
    if not files:
        here = os.path.dirname(os.path.abspath(__file__))
        files = sorted(glob.glob(os.path.join(here, "*.slt")))
    try:
        probe = connect(dsn)
    except Exception as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        return 2
    ver = run_sql(probe, "SELECT version()")
    probe.finish()
    if ver["kind"] == "rows":
        print(f"server: {ver['rows'][0][0]}")
    any_fail = False
    for path in files:
        failures, ran = run_file(dsn, path, "--fresh-db" in flags, "--no-type-check" not in flags)
        name = os.path.basename(path)
        if failures:
            any_fail = True
            if ran == 0:
                print(f"FAIL {name} (not run)")
            else:
                print(f"FAIL {name} ({len(failures)} of {ran} records failed)")
            for f in failures:
                print("  " + f.replace("\n", "\n  "))
        else:
            print(f"PASS {name} ({ran} records)")
    return 1 if any_fail else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
