#!/usr/bin/env bash
# Runs every benchmark in bench/ against the built binary and prints the
# tables that go into bench/RESULTS.md. Numbers are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
export UNDERSTUDY_BENCH=1
export UNDERSTUDY_BIN=${UNDERSTUDY_BIN:-$PWD/bin/understudy}
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(date -u +%FT%TZ))"
go test -count=1 -v -timeout 60m -run "${BENCH_RUN:-.}" ./bench/ 2>&1 | grep -v '^=== RUN\|^--- \|^PASS\|^ok '
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(date -u +%FT%TZ))"
