#!/usr/bin/env bash
# bench/exports.sh — the exports side by side with their peers, on a linear udm device over
# a 1 GiB file (and the same file for the peers):
#   FUSE:   fio (libaio, O_DIRECT) on the udm FUSE file with direct I/O (default) and with
#           --fuse-buffered, on nbdfuse over nbdkit's file plugin, and on the file itself (the
#           ceiling);
#   NBD:    fio's nbd engine against udm, nbdkit and qemu-nbd (--shared=16), once with 4 jobs
#           (one connection each: multi-conn) and once with a single connection.
# Every peer runs once per job per round (interleaved, so background load hits all alike; the
# order of the peers turns by one each round, and write jobs are followed by a sync, so no
# peer always runs in the write-back of the job before) and the median of the rounds is
# shown, with udm/peer ratios and the load average. For the NBD jobs the servers' CPU time per
# I/O (user + system of the whole server process over the run, from /proc/PID/stat) is shown
# too: what a request costs the server, which load on the machine changes much less than the
# wall-clock rates. The image is read into the page cache before
# every run (the servers read it buffered; "raw" is O_DIRECT on the file, i.e. the disk).
# Not part of CI. Needs root (FUSE).
#
#   bench/exports.sh [RUNTIME_SECONDS] [ROUNDS]   (default 5 s per job, 3 rounds)
# Environment: UDM_BIN=path skips the build; UDM_BASE=path adds a second udm binary (e.g. the
# build before a change) as NBD peer "udm-base", for before/after ratios in one run;
# CONNS="4 1" picks the NBD connection counts (CONNS="" none); NO_FUSE=1 skips the FUSE table;
# JOBS="randread 4k 1;read 1m 16" picks the jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
RT=${1:-5}
ROUNDS=${2:-3}
CONNS=${CONNS-4 1}
NO_FUSE=${NO_FUSE:-0}
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
FUSE1=(--fuse "$W/fuse-direct")
[ "$NO_FUSE" = 1 ] && FUSE1=(--no-fuse)
"$UDM" daemon --socket "$W/c1" --nbd-socket "$W/udm.sock" "${FUSE1[@]}" 2>"$W/udm1.log" &
declare -A PID=([udm]=$!)
if [ "$NO_FUSE" != 1 ]; then
  "$UDM" daemon --socket "$W/c2" --nbd-socket "$W/udm2.sock" --fuse "$W/fuse-buffered" \
    --fuse-buffered 2>"$W/udm2.log" &
fi
if [ -n "${UDM_BASE:-}" ]; then
  "$UDM_BASE" daemon --socket "$W/c3" --nbd-socket "$W/udm-base.sock" --no-fuse \
    --state-dir "$W/state3" 2>"$W/udm3.log" &
  PID[udm-base]=$!
fi
nbdkit -U "$W/nbdkit.sock" -f file "$IMG" &
PID[nbdkit]=$!
qemu-nbd -k "$W/qemu.sock" -f raw -t --cache=writeback --aio=threads --shared=16 "$IMG" &
PID[qemu-nbd]=$!
# CPU clock ticks (user + system, all threads) a process has used so far.
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
SOCKS="udm.sock nbdkit.sock qemu.sock c1"
[ "$NO_FUSE" != 1 ] && SOCKS="$SOCKS udm2.sock c2"
[ -n "${UDM_BASE:-}" ] && SOCKS="$SOCKS udm-base.sock c3"
for s in $SOCKS; do
  for _ in $(seq 100); do [ -S "$W/$s" ] && break; sleep 0.1; done
done
UDM_SOCKET=$W/c1 "$UDM" create bench --table "0 2097152 linear $IMG 0"
[ "$NO_FUSE" != 1 ] && UDM_SOCKET=$W/c2 "$UDM" create bench --table "0 2097152 linear $IMG 0"
[ -n "${UDM_BASE:-}" ] && UDM_SOCKET=$W/c3 "$UDM_BASE" create bench --table "0 2097152 linear $IMG 0"
HAVE_NBDFUSE=0
if [ "$NO_FUSE" != 1 ] && command -v nbdfuse >/dev/null; then
  mkdir -p "$W/nbdfuse"
  nbdfuse -P "$W/nbdfuse.pid" "$W/nbdfuse/bench" "nbd+unix:///?socket=$W/nbdkit.sock" \
    2>"$W/nbdfuse.log" &
  for _ in $(seq 100); do [ -s "$W/nbdfuse.pid" ] && break; sleep 0.1; done
  [ -e "$W/nbdfuse/bench" ] && HAVE_NBDFUSE=1
fi
if [ "$NO_FUSE" != 1 ]; then
  for _ in $(seq 100); do [ -e "$W/fuse-direct/bench" ] && [ -e "$W/fuse-buffered/bench" ] && break; sleep 0.1; done
fi

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
  [udm-base]="nbd+unix:///bench?socket=$W/udm-base.sock"
)
# iodepth 1 vs 16 shows what parallel requests bring.
if [ -n "${JOBS:-}" ]; then IFS=';' read -r -a JOBS <<<"$JOBS"; else
  JOBS=("randread 4k 1" "randread 4k 16" "randwrite 4k 1" "randwrite 4k 16" "read 1m 16" "write 1m 16")
fi
FUSE_PEERS=()
if [ "$NO_FUSE" != 1 ]; then
  FUSE_PEERS=(udm-fuse udm-fuse-buffered raw)
  [ $HAVE_NBDFUSE = 1 ] && FUSE_PEERS=(udm-fuse udm-fuse-buffered nbdfuse raw)
fi
NBD_PEERS=(udm nbdkit qemu-nbd)
[ -n "${UDM_BASE:-}" ] && NBD_PEERS+=(udm-base)
# The peers in the order of round $1: turned by one each round.
turn() {
  local r=$1; shift
  local n=$# i
  for ((i = 0; i < n; i++)); do
    local k=$(( (i + r) % n + 1 ))
    printf '%s ' "${!k}"
  done
}
# After a write job, wait for its write-back, so the next run does not pay for it.
settle() { case $1 in *write*) sync ;; esac; }
# Before every run, read the image once, so every peer starts with it in the page cache: the
# servers read it buffered, and other work on the machine (or a peer's O_DIRECT writes, which
# drop cached pages) would otherwise leave some runs served from the disk and some from memory.
warm() { cat "$IMG" >/dev/null; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for j in "${JOBS[@]}"; do
    set -- $j
    for who in $(turn "$r" "${FUSE_PEERS[@]}"); do
      warm
      fio --name=j --filename="${FILE[$who]}" --ioengine=libaio --direct=1 --rw=$1 --bs=$2 \
        --iodepth=$3 --size=1g --time_based --runtime=$RT --output-format=json \
        >"$W/fuse-$who-$1-$2-$3-$r.json" 2>"$W/fuse-$who-$1-$2-$3.err" || echo "fio failed: $who $1 $2" >&2
      settle "$1"
    done
    for c in $CONNS; do
      for who in $(turn "$r" "${NBD_PEERS[@]}"); do
        warm
        t0=$(ticks "${PID[$who]}")
        fio --name=j --ioengine=nbd --uri="${URI[$who]}" --rw=$1 --bs=$2 --iodepth=$3 --numjobs=$c \
          --group_reporting --size=1g --time_based --runtime=$RT --output-format=json \
          >"$W/nbd$c-$who-$1-$2-$3-$r.json" 2>/dev/null || echo "fio failed: $who $1 $2 x$c" >&2
        echo $(( $(ticks "${PID[$who]}") - t0 )) >"$W/nbd$c-$who-$1-$2-$3-$r.ticks"
        settle "$1"
      done
    done
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average: before $LOAD0, after $LOAD1 ($(nproc) cores); median of $ROUNDS rounds, ${RT}s per job"
python3 - "$W" "$ROUNDS" "${FUSE_PEERS[*]:-}" "${NBD_PEERS[*]}" "$CONNS" "$(getconf CLK_TCK)" \
  "${JOBS[@]}" <<'PY'
import json, sys, os
w, rounds = sys.argv[1], int(sys.argv[2])
fuse_peers, nbd_peers, conns = sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()
hz = int(sys.argv[6])
jobs = [tuple(j.split()) for j in sys.argv[7:]]
def one(kind, who, rw, bs, qd, r):
    try:
        # fio's nbd engine prints "connected" lines before the JSON.
        t = open(os.path.join(w, f"{kind}-{who}-{rw}-{bs}-{qd}-{r}.json")).read()
        d = json.loads(t[t.index("{"):])["jobs"][0]
    except Exception:
        return (0.0, 0.0, 0)
    s = d["read"] if "read" in rw else d["write"]
    return s["iops"], s["bw_bytes"] / 2**20, s["total_ios"]
def cpu_per_io(kind, who, rw, bs, qd):
    # Median over the rounds of the server's CPU microseconds per I/O.
    runs = []
    for r in range(1, rounds + 1):
        try:
            t = int(open(os.path.join(w, f"{kind}-{who}-{rw}-{bs}-{qd}-{r}.ticks")).read())
        except Exception:
            continue
        ios = one(kind, who, rw, bs, qd, r)[2]
        if ios:
            runs.append(t * 1e6 / hz / ios)
    runs.sort()
    return runs[len(runs) // 2] if runs else float("nan")
def get(kind, who, rw, bs, qd):
    runs = sorted(one(kind, who, rw, bs, qd, r) for r in range(1, rounds + 1))
    return runs[len(runs) // 2]
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
def cpu_table(title, kind, peers, base, others):
    # CPU per I/O: a peer/udm ratio above 1 means udm spends less per request.
    print(title)
    print(f"{'job':<19}" + "".join(f"{p:>12}" for p in peers)
          + "".join(f"{o+'/'+base:>{max(12, len(base)+len(o)+3)}}" for o in others))
    for rw, bs, qd in jobs:
        c = {p: cpu_per_io(kind, p, rw, bs, qd) for p in peers}
        cells = "".join(f"{c[p]:>9.1f} us" for p in peers)
        ratios = "".join(f"{(c[o]/c[base] if c[base] else float('nan')):>{max(12, len(base)+len(o)+3)}.2f}"
                         for o in others)
        print(f"{rw+' '+bs+' qd'+qd:<19}{cells}{ratios}")
    print()
if fuse_peers:
    table("FUSE file (fio libaio, O_DIRECT)", "fuse", fuse_peers, "udm-fuse",
          [p for p in fuse_peers if p != "udm-fuse"])
for c in conns:
    title = (f"NBD multi-conn (fio nbd engine, {c} connections x iodepth qd)" if c != "1"
             else "NBD single connection (fio nbd engine, 1 connection x iodepth qd)")
    table(title, f"nbd{c}", nbd_peers, "udm", [p for p in nbd_peers if p != "udm"])
    cpu_table(f"  server CPU per I/O ({c} connection{'s' if c != '1' else ''}; user+system, median)",
              f"nbd{c}", nbd_peers, "udm", [p for p in nbd_peers if p != "udm"])
PY
