#!/usr/bin/env bash
# Installs the system libraries the Rust build links when they are missing: OpenSSL's headers
# and pkg-config, for librdkafka's TLS (rdkafka's `ssl` feature). librdkafka itself, zlib and
# zstd are built from source by their -sys crates (make and a C compiler are enough).
set -euo pipefail

if pkg-config --exists openssl 2>/dev/null; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
packages=(libssl-dev pkg-config make gcc)
# Update the package lists only when the install cannot be resolved from the current ones.
if ! $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
