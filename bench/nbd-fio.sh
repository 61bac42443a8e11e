#!/usr/bin/env bash
# bench/nbd-fio.sh — fio over NBD against a linear udm device over a 1 GiB file, side by side
# with nbdkit's file plugin and qemu-nbd on the same file, and fio on the file itself (the
# ceiling). Prints IOPS and MiB/s per job and udm/peer ratios. Not part of CI.
#
#   bench/nbd-fio.sh [RUNTIME_SECONDS] [REPEATS]   (default 10 s per job, 3 rounds; UDM_BIN=path
#                                                   skips the build)
# Peers run interleaved (every peer once per job per round) and the median round is shown, so
# background load hits all of them alike.
set -euo pipefail
cd "$(dirname "$0")/.."
RT=${1:-10}
REPS=${2:-3}
for t in fio nbdkit qemu-nbd python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
UDM=${UDM_BIN:-$PWD/target/release/udm}
W=$(mktemp -d /tmp/udm-bench.XXXXXX)
IMG=$W/disk.img
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
# A fully allocated 1 GiB file (no holes, so reads touch real data).
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none

export UDM_SOCKET=$W/control
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/udm.sock" --no-fuse 2>"$W/udm.log" &
nbdkit -U "$W/nbdkit.sock" -f file "$IMG" &
qemu-nbd -k "$W/qemu.sock" -f raw -t --cache=writeback --aio=threads --shared=16 "$IMG" &
for s in udm.sock nbdkit.sock qemu.sock control; do
  for _ in $(seq 100); do [ -S "$W/$s" ] && break; sleep 0.1; done
done
"$UDM" create bench --table "0 2097152 linear $IMG 0"

declare -A URI=(
  [udm]="nbd+unix:///bench?socket=$W/udm.sock"
  [nbdkit]="nbd+unix:///?socket=$W/nbdkit.sock"
  [qemu-nbd]="nbd+unix:///?socket=$W/qemu.sock"
)
JOBS=("randread 4k 16" "randwrite 4k 16" "read 1m 16" "write 1m 16")
run_job() { # name rw bs depth round -> json file
  local who=$1 rw=$2 bs=$3 qd=$4 out=$W/$1-$2-$3-$5.json
  if [ "$who" = raw ]; then
    fio --name=j --filename="$IMG" --ioengine=io_uring --direct=0 --rw=$rw --bs=$bs --iodepth=$qd \
      --size=1g --time_based --runtime=$RT --output-format=json >"$out" 2>/dev/null
  else
    fio --name=j --ioengine=nbd --uri="${URI[$who]}" --rw=$rw --bs=$bs --iodepth=$qd \
      --size=1g --time_based --runtime=$RT --output-format=json >"$out" 2>/dev/null
  fi
  echo "$out"
}
for r in $(seq "$REPS"); do
  for j in "${JOBS[@]}"; do
    set -- $j
    for who in udm nbdkit qemu-nbd raw; do run_job $who "$@" "$r" >/dev/null; done
  done
done
python3 - "$W" "$REPS" <<'PY'
import json, sys, os, statistics
w, reps = sys.argv[1], int(sys.argv[2])
jobs = [("randread","4k"),("randwrite","4k"),("read","1m"),("write","1m")]
peers = ["udm","nbdkit","qemu-nbd","raw"]
def one(who, rw, bs, r):
    t = open(os.path.join(w, f"{who}-{rw}-{bs}-{r}.json")).read()
    d = json.loads(t[t.index("{"):])["jobs"][0]
    s = d["read"] if "read" in rw else d["write"]
    return s["iops"], s["bw_bytes"] / 2**20
def get(who, rw, bs):
    runs = sorted(one(who, rw, bs, r) for r in range(1, reps + 1))
    return runs[len(runs) // 2]
print(f"{'job':<16}" + "".join(f"{p:>22}" for p in peers) + f"{'udm/nbdkit':>12}{'udm/qemu':>10}{'udm/raw':>9}")
for rw, bs in jobs:
    r = {p: get(p, rw, bs) for p in peers}
    cells = "".join(f"{r[p][0]:>10.0f} IOPS {r[p][1]:>6.0f}MiB/s" for p in peers)
    u = r["udm"][0]
    print(f"{rw+' '+bs:<16}{cells}{u/r['nbdkit'][0]:>12.2f}{u/r['qemu-nbd'][0]:>10.2f}{u/r['raw'][0]:>9.2f}")
PY
