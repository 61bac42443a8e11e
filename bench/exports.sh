#!/usr/bin/env bash
# bench/exports.sh — the exports side by side with their peers, on a linear udm device over
# a 1 GiB file (and the same file for the peers):
#   FUSE:            fio (libaio, O_DIRECT) on the udm FUSE file with direct I/O (default) and
#                    with --fuse-buffered, on nbdfuse over nbdkit's file plugin, and on the
#                    file itself (the ceiling);
#   NBD multi-conn:  fio's nbd engine with 4 jobs (one connection each) against udm, nbdkit
#                    and qemu-nbd (--shared=16).
# Prints IOPS and MiB/s per job and udm/peer ratios. Not part of CI. Needs root (FUSE).
#
#   bench/exports.sh [RUNTIME_SECONDS]      (default 5 per job; UDM_BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
RT=${1:-5}
for t in fio nbdkit qemu-nbd python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
UDM=${UDM_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/udm}
W=$(mktemp -d /tmp/udm-exports-bench.XXXXXX)
IMG=$W/disk.img
cleanup() {
  for m in "$W"/fuse-direct "$W"/fuse-buffered "$W"/nbdfuse; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true
  done
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none

# Two udm daemons: FUSE with direct I/O (and NBD), FUSE through the page cache.
"$UDM" daemon --socket "$W/c1" --nbd-socket "$W/udm.sock" --fuse "$W/fuse-direct" 2>"$W/udm1.log" &
"$UDM" daemon --socket "$W/c2" --nbd-socket "$W/udm2.sock" --fuse "$W/fuse-buffered" \
  --fuse-buffered 2>"$W/udm2.log" &
nbdkit -U "$W/nbdkit.sock" -f file "$IMG" &
qemu-nbd -k "$W/qemu.sock" -f raw -t --cache=writeback --aio=threads --shared=16 "$IMG" &
for s in udm.sock udm2.sock nbdkit.sock qemu.sock c1 c2; do
  for _ in $(seq 100); do [ -S "$W/$s" ] && break; sleep 0.1; done
done
UDM_SOCKET=$W/c1 "$UDM" create bench --table "0 2097152 linear $IMG 0"
UDM_SOCKET=$W/c2 "$UDM" create bench --table "0 2097152 linear $IMG 0"
HAVE_NBDFUSE=0
if command -v nbdfuse >/dev/null; then
  mkdir -p "$W/nbdfuse"
  nbdfuse -P "$W/nbdfuse.pid" "$W/nbdfuse/bench" "nbd+unix:///?socket=$W/nbdkit.sock" \
    2>"$W/nbdfuse.log" &
  for _ in $(seq 100); do [ -s "$W/nbdfuse.pid" ] && break; sleep 0.1; done
  [ -e "$W/nbdfuse/bench" ] && HAVE_NBDFUSE=1
fi
for _ in $(seq 100); do [ -e "$W/fuse-direct/bench" ] && [ -e "$W/fuse-buffered/bench" ] && break; sleep 0.1; done

declare -A FILE=(
  [udm-fuse]="$W/fuse-direct/bench"
  [udm-fuse-buffered]="$W/fuse-buffered/bench"
  [nbdfuse]="$W/nbdfuse/bench"
  [raw]="$IMG"
)
declare -A URI=(
  [udm]="nbd+unix:///bench?socket=$W/udm.sock"
  [nbdkit]="nbd+unix:///?socket=$W/nbdkit.sock"
  [qemu-nbd]="nbd+unix:///?socket=$W/qemu.sock"
)
# iodepth 1 vs 16 shows what parallel requests bring.
JOBS=("randread 4k 1" "randread 4k 16" "randwrite 4k 1" "randwrite 4k 16" "read 1m 16" "write 1m 16")
FUSE_PEERS=(udm-fuse udm-fuse-buffered raw)
[ $HAVE_NBDFUSE = 1 ] && FUSE_PEERS=(udm-fuse udm-fuse-buffered nbdfuse raw)
NBD_PEERS=(udm nbdkit qemu-nbd)
for j in "${JOBS[@]}"; do
  set -- $j
  for who in "${FUSE_PEERS[@]}"; do
    fio --name=j --filename="${FILE[$who]}" --ioengine=libaio --direct=1 --rw=$1 --bs=$2 \
      --iodepth=$3 --size=1g --time_based --runtime=$RT --output-format=json \
      >"$W/fuse-$who-$1-$2-$3.json" 2>"$W/fuse-$who-$1-$2-$3.err" || echo "fio failed: $who $1 $2" >&2
  done
  for who in "${NBD_PEERS[@]}"; do
    fio --name=j --ioengine=nbd --uri="${URI[$who]}" --rw=$1 --bs=$2 --iodepth=$3 --numjobs=4 \
      --group_reporting --size=1g --time_based --runtime=$RT --output-format=json \
      >"$W/nbd-$who-$1-$2-$3.json" 2>/dev/null || echo "fio failed: $who $1 $2" >&2
  done
done
python3 - "$W" "${FUSE_PEERS[*]}" "${NBD_PEERS[*]}" "${JOBS[@]}" <<'PY'
import json, sys, os
w, fuse_peers, nbd_peers = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
jobs = [tuple(j.split()) for j in sys.argv[4:]]
def get(kind, who, rw, bs, qd):
    try:
        # fio's nbd engine prints "connected" lines before the JSON.
        t = open(os.path.join(w, f"{kind}-{who}-{rw}-{bs}-{qd}.json")).read()
        d = json.loads(t[t.index("{"):])["jobs"][0]
    except Exception:
        return (0.0, 0.0)
    s = d["read"] if "read" in rw else d["write"]
    return s["iops"], s["bw_bytes"] / 2**20
def table(title, kind, peers, base, others):
    print(title)
    print(f"{'job':<19}" + "".join(f"{p:>24}" for p in peers)
          + "".join(f"{base+'/'+o:>{max(12, len(base)+len(o)+3)}}" for o in others))
    for rw, bs, qd in jobs:
        r = {p: get(kind, p, rw, bs, qd) for p in peers}
        cells = "".join(f"{r[p][0]:>11.0f} IOPS {r[p][1]:>6.0f}MiB/s" for p in peers)
        ratios = "".join(f"{(r[base][0]/r[o][0] if r[o][0] else float('nan')):>{max(12, len(base)+len(o)+3)}.2f}"
                         for o in others)
        print(f"{rw+' '+bs+' qd'+qd:<19}{cells}{ratios}")
    print()
table("FUSE file (fio libaio, O_DIRECT)", "fuse", fuse_peers, "udm-fuse",
      [p for p in fuse_peers if p != "udm-fuse"])
table("NBD multi-conn (fio nbd engine, 4 connections x iodepth qd)", "nbd", nbd_peers, "udm",
      [p for p in nbd_peers if p != "udm"])
PY
