#!/usr/bin/env bash
# bench/nbd-read.sh — large NBD reads through udm's generic (bio) reply path, against the
# spliced linear fast path, to show where the cap on computed reads lies. One 1 MiB
# sequential read job at queue depth 16 over one NBD connection (fio's nbd engine) from:
#   lin      linear over a file, splice fast path (the reference)
#   lin-bio  the same device served by a daemon started with UDM_NBD_NO_SPLICE=1 (every read
#            is a bio: page-cache read into a buffer, reply written from it)
#   zero     the zero target (no I/O at all: the reply path alone)
#   crypt    aes-xts-plain64 over the same file (decryption on top of lin-bio)
# The three bio-path exports run twice: lending large reply buffers to the socket (the
# default, `crates/udm-nbd/src/lend.rs`) and copying them (a daemon started with
# UDM_NBD_NO_LEND=1, tagged "copy:"). With UDM_BASE=path lin, lin-bio, zero and crypt also
# run on a second binary (e.g. the build before a change), so before/after ratios come from
# one run. Each export runs once per round (interleaved); the median round (by MiB/s) is
# shown with the server's and the client's (fio's) CPU-seconds per GiB and the load
# average: on 2 shared cores the sum of both bounds the rate. Not part of CI.
#
#   bench/nbd-read.sh [SIZE_MIB] [RUNTIME_SECONDS] [ROUNDS]   (defaults: 512, 5, 3)
# Environment: UDM_BIN=path skips the build; UDM_BASE=path adds the "before" binary;
# JOB="read 1m 16" picks rw, block size and queue depth.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-512}
RT=${2:-5}
ROUNDS=${3:-3}
read -r RW BS QD <<<"${JOB:-read 1m 16}"
for t in fio python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
UDM=${UDM_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/udm}
W=$(mktemp -d /tmp/udm-nbd-read.XXXXXX)
IMG=$W/disk.img
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE" status=none
SECT=$((SIZE * 2048))
KEY=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')

declare -A PID
start() { # tag binary nosplice [nolend]
  local tag=$1 bin=$2 ns=$3 nl=${4:-0}
  UDM_NBD_NO_SPLICE=$ns UDM_NBD_NO_LEND=$nl "$bin" daemon --socket "$W/$tag.ctl" --nbd-socket "$W/$tag.sock" \
    --no-fuse 2>"$W/$tag.log" &
  PID[$tag]=$!
  for _ in $(seq 100); do [ -S "$W/$tag.sock" ] && [ -S "$W/$tag.ctl" ] && break; sleep 0.1; done
  UDM_SOCKET=$W/$tag.ctl "$bin" create lin --table "0 $SECT linear $IMG 0"
  UDM_SOCKET=$W/$tag.ctl "$bin" create zero --table "0 $SECT zero"
  UDM_SOCKET=$W/$tag.ctl "$bin" create crypt --table "0 $SECT crypt aes-xts-plain64 $KEY 0 $IMG 0"
}
SERVERS=(new new-ns copy-ns)
start new "$UDM" 0
start new-ns "$UDM" 1
start copy-ns "$UDM" 1 1
if [ -n "${UDM_BASE:-}" ]; then
  start base "$UDM_BASE" 0
  start base-ns "$UDM_BASE" 1
  SERVERS+=(base base-ns)
fi
# (server export label)
CASES=()
for s in "${SERVERS[@]}"; do
  case $s in
    *-ns) CASES+=("$s lin ${s%-ns}:lin-bio" "$s zero ${s%-ns}:zero" "$s crypt ${s%-ns}:crypt") ;;
    *) CASES+=("$s lin $s:lin") ;;
  esac
done

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
run() { # server export -> "MiB/s server-CPU-s/GiB client-CPU-s/GiB"
  local pid=${PID[$1]} c0 out
  c0=$(cpu "$pid")
  out=$(/usr/bin/time -f "%U %S" -o "$W/time" fio --name=j --ioengine=nbd --uri="nbd+unix:///$2?socket=$W/$1.sock" --rw="$RW" \
    --bs="$BS" --iodepth="$QD" --size="${SIZE}m" --time_based --runtime="$RT" \
    --output-format=json 2>/dev/null)
  python3 -c 'import json,sys; t=sys.argv[1]; j=json.loads(t[t.index("{"):])["jobs"][0]
b=j["read"]["io_bytes"]+j["write"]["io_bytes"]; c=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4])
u,s=map(float,open(sys.argv[5]).read().split()[-2:]); g=max(b/2**30,1e-9)
print(round((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20), round(c/g,2), round((u+s)/g,2))' \
    "$out" "$c0" "$(cpu "$pid")" "$(getconf CLK_TCK)" "$W/time"
}
cat "$IMG" >/dev/null
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    set -- $c
    echo "$3 $(run "$1" "$2")" >>"$W/results"
  done
done
echo "== $RW $BS qd$QD, one NBD connection, ${SIZE} MiB, MiB/s (server, client CPU-s/GiB), median of $ROUNDS"
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
python3 - "$W/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
order, by = [], {}
for name, mib, cpu, cli in rows:
    if name not in by:
        order.append(name); by[name] = []
    by[name].append((float(mib), float(cpu), float(cli)))
med = {}
for name in order:
    v = sorted(by[name])
    med[name] = v[len(v) // 2]
    runs = " ".join(f"{m:.0f}" for m, _, _ in by[name])
    lin = med.get(name.split(":")[0].replace("copy", "new") + ":lin", (1, 0, 0))[0]
    m = med[name]
    print(f"{name:<16} {m[0]:>7.0f} ({m[1]:4.2f}, {m[2]:4.2f})  /lin {m[0]/lin:5.2f}   rounds: {runs}")
PY
