#!/usr/bin/env bash
# The one test command (README.md, .ci/run): Rust unit and integration tests, then the
# real-client suite (psql, psycopg, asyncpg, SQLAlchemy, pgJDBC, Grafana's queries), then a
# replay of the sqllogictest files on a real PostgreSQL 15 (their expected values are Postgres's),
# then the benchmark scripts at a tiny size.
# Installs what it needs, starts the services the connector tests use (tests/services.sh: a
# Kafka broker, NATS with JetStream, ClickHouse, InfluxDB) and stops them on exit; prints how long each stage took.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# shellcheck source=tests/services.sh
source "$root/tests/services.sh"
trap stop_services EXIT

stage() {
    local name="$1"; shift
    local start=$SECONDS
    echo "=== $name"
    "$@"
    echo "=== $name: $((SECONDS - start)) s"
}

rust_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
    else
        cargo test --workspace --no-fail-fast
    fi
}

client_tests() {
    WEIR_BIN="$CARGO_TARGET_DIR/debug/weir" "${WEIR_VENV:-$HOME/.cache/weir-venv}/bin/python" -m pytest tests/clients -q
}

slt_on_postgres() {
    tests/slt/verify-on-postgres.sh
}

# The benchmark scripts at a tiny size (debug build): they run and their checks pass. Real
# figures come from release builds run by hand (benchmarks/README.md).
benchmark_smoke() {
    local data
    data=$(mktemp -d)
    "${WEIR_VENV:-$HOME/.cache/weir-venv}/bin/python" benchmarks/suite.py --smoke --weir "$CARGO_TARGET_DIR/debug/weir" --data "$data"
    local status=$?
    rm -rf "$data"
    return $status
}

stage "build dependencies" tests/build-deps.sh
stage "build" cargo build --workspace --all-targets
stage "client setup (venv, psql, pgJDBC)" tests/clients/setup.sh
stage "services: Kafka" start_kafka
stage "services: NATS" start_nats
stage "services: ClickHouse" start_clickhouse
stage "services: InfluxDB" start_influxdb
stage "services: S3 (moto)" start_s3
stage "rust tests" rust_tests
stage "client tests" client_tests
stage "slt expectations on PostgreSQL 15" slt_on_postgres
stage "benchmark smoke" benchmark_smoke
