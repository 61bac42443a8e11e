#!/usr/bin/env bash
# bench/copier.sh — udm's block copier (kcopyd) copying one file to another vs
# `cp --reflink=never` of the same file, in the same run. The source stays in the page cache
# (read once first) and neither side syncs, so the figures compare the copy paths, not a disk.
# Not part of CI.
#
#   bench/copier.sh [SIZE_MIB] [ROUNDS] [CHUNK_KIB] [BUFFERS]   (defaults: 1024 MiB, 3, 128, 16)
#
# 128 KiB chunks are the largest a file backing serves inline from the page cache; bigger
# chunks go through the I/O pool and measured 2-4x slower on a loaded 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
ROUNDS=${2:-3}
CHUNK=${3:-128}
BUFS=${4:-16}
cargo build --release -q -p udm-core --example copy_speed
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-copier-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT

head -c $((SIZE << 20)) /dev/urandom >"$W/src"
cat "$W/src" >/dev/null
gibs() { python3 -c "print(f'{$1 / $2 / 2**30:.2f}')"; }
echo "== copy ${SIZE} MiB file to file ($(nproc) cores), GiB/s; copier: ${CHUNK} KiB chunks x ${BUFS} buffers"
printf '%-6s %10s %10s\n' round cp copier
for r in $(seq "$ROUNDS"); do
  rm -f "$W/cp.out" "$W/copier.out"
  t0=$(date +%s.%N)
  cp --reflink=never "$W/src" "$W/cp.out"
  t1=$(date +%s.%N)
  CP=$(gibs $((SIZE << 20)) "($t1 - $t0)")
  truncate -s $((SIZE << 20)) "$W/copier.out"
  CO=$("$TARGET/release/examples/copy_speed" "$W/src" "$W/copier.out" "$CHUNK" "$BUFS" | awk '{print $4}')
  cmp -s "$W/src" "$W/copier.out" || { echo "copier output differs from the source"; exit 1; }
  printf '%-6s %10s %10s\n' "$r" "$CP" "$CO"
done
