#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: a JDK >= 17 (for the local
# Kafka broker), Prometheus (server + promtool) and Chromium (the report's browser test
# renders the HTML in it headless). Debian/Ubuntu via apt when root; otherwise it says what
# is missing.
set -euo pipefail

need=()
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  need+=(openjdk-17-jre-headless)
fi
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a Prometheus service on :9090; the tests run their own.
  if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
  pkill -x prometheus-node-exporter >/dev/null 2>&1 || true
else
  echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
  exit 1
fi
