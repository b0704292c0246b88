"""The example Grafana dashboard (examples/grafana/weir.json) against a running Weir.

Grafana is not installable here, so the dashboard is checked the way Grafana would use it:

- its JSON is well formed, panel ids are unique and every panel names one of the dashboard's two
  data-source variables (``${DS_PROMETHEUS}``, ``${DS_WEIR}``);
- every metric family its Prometheus expressions (and label_values() variables) use is declared
  with a ``# TYPE`` line on ``/metrics`` (Weir prints HELP/TYPE for every family, even without rows);
- every SQL panel runs over the Postgres wire against the views of examples/chat.sql, with
  ``$__timeFilter(col)`` expanded as Grafana expands it, and returns the columns the panel expects.

The chat example's objects are created under a unique prefix, so that the test does not collide
with other tests of the session (or a second run) that use the example's own names.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "weir.json"
CHAT_SQL = ROOT / "examples" / "chat.sql"

PROMETHEUS = "prometheus"
POSTGRES = "grafana-postgresql-datasource"
DS_UIDS = {PROMETHEUS: "${DS_PROMETHEUS}", POSTGRES: "${DS_WEIR}"}

# The chat example's object names, longest first (the regex alternation tries them in order).
CHAT_NAMES = ["chat_active_60s", "chat_per_min", "chat_zscore", "chat"]

# Grafana expands $__timeFilter(col) to `col BETWEEN '<from>' AND '<to>'` (RFC 3339, UTC).
TIME_FILTER_RE = re.compile(r"\$__timeFilter\(\s*([^)]+?)\s*\)")
FROM, TO = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"

# What each SQL panel must return (a time-series frame needs its time column first, named time).
SQL_PANEL_COLUMNS = {
    "Messages per stream per minute": ["time", "stream_id", "messages"],
    "Distinct chatters per stream per minute": ["time", "stream_id", "chatters"],
    "Messages in the last 60 s (every 10 s)": ["time", "stream_id", "messages"],
    "Last 60 s per stream": ["stream_id", "messages", "chatters"],
    "Messages per minute: z-score": ["time", "stream_id", "z"],
    "Latest anomalies (|z| > 3)": ["time", "stream_id", "messages", "mean_10m", "stddev_10m", "z"],
}


def load_dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows and the panels of collapsed rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(dashboard: dict, ds_type: str) -> list[tuple[dict, dict]]:
    """(panel, target) for every target that queries a data source of ``ds_type``."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("type") == ds_type:
                out.append((panel, target))
    return out


def prometheus_expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for _, t in targets(dashboard, PROMETHEUS)]
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query" and (var.get("datasource") or {}).get("type") == PROMETHEUS:
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def metric_families(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        for name in re.findall(r"\bweir_[a-z0-9_]+", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def chat_renamer(prefix: str):
    """Renames the chat example's objects (whole words only) to ``<prefix>_<name>``."""
    pattern = re.compile(r"\b(" + "|".join(CHAT_NAMES) + r")\b")
    return lambda sql: pattern.sub(lambda m: f"{prefix}_{m.group(1)}", sql)


def sql_statements(script: str) -> list[str]:
    """examples/chat.sql split into statements (no `;` inside its literals or comments)."""
    without_comments = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


# --- the JSON itself -----------------------------------------------------------------------------

def test_dashboard_json_is_well_formed():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 39

    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for p in panels:
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (p["title"], pos)

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == PROMETHEUS
    assert variables["DS_WEIR"]["type"] == "datasource"
    assert variables["DS_WEIR"]["query"] == POSTGRES
    for name in ("source", "view", "sink"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name

    # Every query names one of the two data-source variables.
    for p in panels:
        if p["type"] == "row":
            continue
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
            assert ds is not None and ds["type"] in DS_UIDS and ds["uid"] == DS_UIDS[ds["type"]], (p["title"], ds)

    sql = targets(dashboard, POSTGRES)
    assert sorted(p["title"] for p, _ in sql) == sorted(SQL_PANEL_COLUMNS)
    for panel, target in sql:
        assert target["rawQuery"] is True and target["editorMode"] == "code", panel["title"]
        assert target["format"] in ("time_series", "table"), panel["title"]
        # Only $__timeFilter is used (and expanded below); no other macro.
        assert set(re.findall(r"\$__\w+", target["rawSql"])) <= {"$__timeFilter"}, panel["title"]
        if target["format"] == "time_series":
            assert SQL_PANEL_COLUMNS[panel["title"]][0] == "time", panel["title"]


# --- the Prometheus side -------------------------------------------------------------------------

def test_every_metric_is_exposed(weir):
    if weir.http_port is None:
        pytest.skip("no /metrics: running against an external PostgreSQL")
    dashboard = load_dashboard()
    wanted = metric_families(prometheus_expressions(dashboard))
    assert len(wanted) >= 20, sorted(wanted)  # the regex found the dashboard's metrics

    url = f"http://{weir.host}:{weir.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    declared = set(re.findall(r"^# TYPE (\S+) \S+", text, re.M))

    missing = sorted(wanted - declared)
    assert not missing, f"metric families the dashboard uses that /metrics does not declare: {missing}"

    # The latency panel's quantiles need a real histogram.
    assert re.search(r"^# TYPE weir_statement_duration_seconds histogram$", text, re.M)


# --- the SQL side --------------------------------------------------------------------------------

def test_sql_panels_run_against_the_chat_example(weir, unique_name):
    if weir.http_port is None:
        pytest.skip("CREATE SOURCE ... datagen is Weir's: not run against an external PostgreSQL")
    dashboard = load_dashboard()
    rename = chat_renamer(unique_name("gd"))
    statements = [rename(s) for s in sql_statements(CHAT_SQL.read_text(encoding="utf-8"))]
    assert len(statements) == 4, statements

    # The simple query protocol, as Grafana's Go drivers send panel queries.
    with psycopg.connect(weir.conninfo(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        created: list[tuple[str, str]] = []
        try:
            for stmt in statements:
                conn.execute(stmt)
                kind, name = re.match(r"CREATE (SOURCE|MATERIALIZED VIEW) (\w+)", stmt).groups()
                created.append((kind, name))

            sql = targets(dashboard, POSTGRES)
            assert sql
            for panel, target in sql:
                query = TIME_FILTER_RE.sub(rf"\1 BETWEEN '{FROM}' AND '{TO}'", rename(target["rawSql"]))
                assert "$__" not in query and "{" not in query, query
                try:
                    cur = conn.execute(query)
                except psycopg.Error as e:
                    raise AssertionError(f"panel {panel['title']!r}: {e}\n{query}") from e
                assert cur.description is not None, panel["title"]
                assert [c.name for c in cur.description] == SQL_PANEL_COLUMNS[panel["title"]], panel["title"]
                cur.fetchall()
        finally:
            # Views first, the newest first (it may read an older one), then the source.
            for kind, name in reversed(created):
                conn.execute(f"DROP {kind} IF EXISTS {name}")
