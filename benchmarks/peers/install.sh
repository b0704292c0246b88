#!/usr/bin/env bash
# Installs the peer engines that run Weir's benchmark queries (see README.md) into venvs under
# ${WEIR_PEERS_DIR:-$HOME/.cache/weir-peers}:
#
#   flink/  PyFlink (apache-flink; pins its own pyarrow/pandas/numpy, hence its own venv)
#   spark/  PySpark (+ pyarrow, used only to count input rows from Parquet footers)
#   batch/  DataFusion + DuckDB + pyarrow + numpy (the batch "ceiling" references, and the
#           test-data generator)
#
# Idempotent: a venv whose stamp file matches the requested packages is left alone, so a second
# run costs a few seconds. Versions are pinned so that figures from different days compare;
# override with FLINK_SPEC / SPARK_SPEC / BATCH_SPEC (pip requirement strings) to try others.
#
# Usage: benchmarks/peers/install.sh [flink|spark|batch ...]   (default: all three)
set -euo pipefail

PEERS_DIR="${WEIR_PEERS_DIR:-$HOME/.cache/weir-peers}"
PYTHON="${PYTHON:-python3}"

# Newest releases that install and run here (Python 3.11, Java 17), checked when this was written.
FLINK_SPEC="${FLINK_SPEC:-apache-flink==2.3.0}"
SPARK_SPEC="${SPARK_SPEC:-pyspark==4.3.0 pyarrow==26.0.1}"
BATCH_SPEC="${BATCH_SPEC:-datafusion==55.0.0 duckdb==2.0.0 pyarrow==26.0.1 numpy==2.4.6}"

log() { printf '[weir-peers] %s\n' "$*" >&2; }

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || { log "need Python >= 3.9 at $PYTHON"; exit 1; }
command -v java >/dev/null || { log "need a JDK (java on PATH); Flink and Spark need Java 17"; exit 1; }

# install_venv NAME "SPEC" : (re)creates PEERS_DIR/NAME only when its stamp differs from SPEC.
install_venv() {
    local name="$1" spec="$2" venv="$PEERS_DIR/$1"
    local stamp="$venv/.weir-peers-spec"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$spec" && -x "$venv/bin/python" ]]; then
        log "$name: already installed ($spec)"
        return
    fi
    log "$name: installing $spec into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
    # shellcheck disable=SC2086  # SPEC is a list of requirements on purpose
    "$venv/bin/python" -m pip install --quiet $spec
    # The stamp is written last: an interrupted install is redone next time.
    printf '%s' "$spec" >"$stamp"
}

# build_flink_helper : compiles flink/NameOrderedSplitAssigner.java (run_peer.py needs it to read
# the CSV files in name order, see there) against the jars PyFlink ships; redone when the source
# changes.
build_flink_helper() {
    local src="$HERE/flink/NameOrderedSplitAssigner.java" jar="$PEERS_DIR/flink/weir-peers-flink.jar"
    local lib sum
    sum="$(sha256sum "$src" | cut -d' ' -f1)"
    if [[ -f "$jar" && "$(cat "$jar.sha256" 2>/dev/null)" == "$sum" ]]; then
        log "flink: helper jar up to date"
        return
    fi
    command -v javac >/dev/null || { log "flink: need javac (a JDK, not only a JRE)"; exit 1; }
    lib="$("$PEERS_DIR/flink/bin/python" -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))')"
    local classes
    classes="$(mktemp -d)"
    javac -nowarn --release 11 -cp "$lib/*" -d "$classes" "$src"
    jar cf "$jar" -C "$classes" .
    rm -rf "$classes"
    printf '%s' "$sum" >"$jar.sha256"
    log "flink: built $jar"
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$PEERS_DIR"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(flink spark batch)
start=$SECONDS
for t in "${targets[@]}"; do
    case "$t" in
        flink) install_venv flink "$FLINK_SPEC"; build_flink_helper ;;
        spark) install_venv spark "$SPARK_SPEC" ;;
        batch) install_venv batch "$BATCH_SPEC" ;;
        *) log "unknown target $t (flink, spark, batch)"; exit 2 ;;
    esac
done
log "done in $((SECONDS - start)) s; $(du -sh "$PEERS_DIR" | cut -f1) in $PEERS_DIR"

# Versions as the engines report them (what run_peer.py puts in its JSON).
java -version 2>&1 | head -1
for t in "${targets[@]}"; do
    case "$t" in
        flink) "$PEERS_DIR/flink/bin/python" -c 'import importlib.metadata as m; print("apache-flink", m.version("apache-flink"))' ;;
        spark) "$PEERS_DIR/spark/bin/python" -c 'import pyspark; print("pyspark", pyspark.__version__)' ;;
        batch) "$PEERS_DIR/batch/bin/python" -c 'import datafusion, duckdb, pyarrow; print("datafusion", datafusion.__version__); print("duckdb", duckdb.__version__); print("pyarrow", pyarrow.__version__)' ;;
    esac
done
