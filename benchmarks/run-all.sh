#!/usr/bin/env bash
# The whole benchmark suite, peers included: builds weir in release, installs the peers if
# needed, runs every workload and records the results in benchmarks/results/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
cargo build --release --bin weir
benchmarks/peers/install.sh
tests/clients/setup.sh   # the venv with psycopg
exec "${WEIR_VENV:-$HOME/.cache/weir-venv}/bin/python" benchmarks/suite.py \
    --weir "$CARGO_TARGET_DIR/release/weir" --peers --record "$@"
