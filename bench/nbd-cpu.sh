#!/usr/bin/env bash
# bench/nbd-cpu.sh — CPU cost of a fixed amount of NBD I/O, udm against nbdkit's file plugin
# on the same file: the server's CPU-seconds (utime+stime of the whole process, from
# /proc/PID/stat) and fio's own (the client side pays for a chatty server too), per job and
# connection count. Unlike wall-clock ratios these barely move with background load, so they
# show what a change did on a busy shared machine. Not part of CI.
#
#   bench/nbd-cpu.sh [ROUNDS]   (default 3; the median round is shown)
# Environment: UDM_BIN=path skips the build (UDM_BIN2=path adds a second udm binary, e.g. a
# baseline, as peer "udm2"); CONNS="4 1"; JOBS="randread 4k 1 128m;read 1m 16 2g" (rw, block
# size, queue depth per connection, total I/O over all connections).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CONNS=${CONNS:-4 1}
for t in fio nbdkit python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
UDM=${UDM_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/udm}
W=$(mktemp -d /tmp/udm-nbdcpu.XXXXXX)
IMG=$W/disk.img
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none

"$UDM" daemon --socket "$W/c1" --nbd-socket "$W/udm.sock" --no-fuse 2>"$W/udm.log" &
PID_udm=$!
PEERS="udm nbdkit"
if [ -n "${UDM_BIN2:-}" ]; then
  "$UDM_BIN2" daemon --socket "$W/c2" --nbd-socket "$W/udm2.sock" --no-fuse 2>"$W/udm2.log" &
  PID_udm2=$!
  PEERS="udm udm2 nbdkit"
fi
nbdkit -U "$W/nbdkit.sock" -f file "$IMG" &
PID_nbdkit=$!
for s in udm.sock nbdkit.sock c1 ${UDM_BIN2:+udm2.sock c2}; do
  for _ in $(seq 100); do [ -S "$W/$s" ] && break; sleep 0.1; done
done
UDM_SOCKET=$W/c1 "$UDM" create bench --table "0 2097152 linear $IMG 0"
[ -n "${UDM_BIN2:-}" ] && UDM_SOCKET=$W/c2 "$UDM_BIN2" create bench --table "0 2097152 linear $IMG 0"
declare -A URI=(
  [udm]="nbd+unix:///bench?socket=$W/udm.sock"
  [udm2]="nbd+unix:///bench?socket=$W/udm2.sock"
  [nbdkit]="nbd+unix:///?socket=$W/nbdkit.sock"
)
declare -A PID=([udm]=$PID_udm [udm2]=${PID_udm2:-0} [nbdkit]=$PID_nbdkit)
if [ -n "${JOBS:-}" ]; then IFS=';' read -r -a JOBS <<<"$JOBS"; else
  JOBS=("randread 4k 1 128m" "randread 4k 16 256m" "randwrite 4k 1 128m" "randwrite 4k 16 256m"
    "read 1m 16 2g" "write 1m 16 1g")
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
to_bytes() { numfmt --from=iec "${1^^}"; }
# Warm the page cache, as a time-based run would after its first seconds.
cat "$IMG" >/dev/null
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for j in "${JOBS[@]}"; do
    set -- $j
    total=$(to_bytes "$4")
    for c in $CONNS; do
      for who in $PEERS; do
        t0=$(ticks "${PID[$who]}")
        s0=$(date +%s.%N)
        fio --name=j --ioengine=nbd --uri="${URI[$who]}" --rw=$1 --bs=$2 --iodepth=$3 \
          --numjobs=$c --group_reporting --size=1g --io_size=$((total / c)) \
          --output-format=json >"$W/out-$who-$c-$1-$2-$3-$r.json" 2>/dev/null ||
          echo "fio failed: $who $j x$c" >&2
        s1=$(date +%s.%N)
        t1=$(ticks "${PID[$who]}")
        echo "$(( t1 - t0 )) $s0 $s1" >"$W/cpu-$who-$c-$1-$2-$3-$r"
      done
    done
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average: before $LOAD0, after $LOAD1 ($(nproc) cores); median of $ROUNDS rounds"
python3 - "$W" "$ROUNDS" "$PEERS" "$CONNS" "$(getconf CLK_TCK)" "${JOBS[@]}" <<'PY'
import json, sys, os
w, rounds, peers, conns, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
jobs = [tuple(j.split()) for j in sys.argv[6:]]
def one(who, c, rw, bs, qd, r):
    base = f"{who}-{c}-{rw}-{bs}-{qd}-{r}"
    try:
        t = open(os.path.join(w, "out-" + base + ".json")).read()
        d = json.loads(t[t.index("{"):])["jobs"][0]
        ticks, s0, s1 = open(os.path.join(w, "cpu-" + base)).read().split()
    except Exception:
        return None
    s = d["read"] if "read" in rw else d["write"]
    gib = s["io_bytes"] / 2**30
    wall = float(s1) - float(s0)
    client = (d["usr_cpu"] + d["sys_cpu"]) / 100 * d["elapsed"] * int(c)
    return (int(ticks) / hz / gib, client / gib, s["iops"])
def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]
print(f"{'job':<22}" + "".join(f"{p+' srv s/GiB':>16}{p+' fio s/GiB':>16}{p+' IOPS':>12}" for p in peers)
      + "".join(f"{'srv udm/'+p:>14}" for p in peers if p != "udm"))
for c in conns:
    for rw, bs, qd, _ in jobs:
        row = {}
        for p in peers:
            rs = [x for x in (one(p, c, rw, bs, qd, r) for r in range(1, rounds + 1)) if x]
            row[p] = tuple(med([x[i] for x in rs]) for i in range(3)) if rs else (float("nan"),) * 3
        cells = "".join(f"{row[p][0]:>16.3f}{row[p][1]:>16.3f}{row[p][2]:>12.0f}" for p in peers)
        ratios = "".join(f"{row['udm'][0] / row[p][0] if row[p][0] else float('nan'):>14.2f}"
                         for p in peers if p != "udm")
        print(f"{rw+' '+bs+' qd'+qd+' x'+c:<22}{cells}{ratios}")
PY
