#!/usr/bin/env bash
# bench/snapshot.sh — classic snapshots side by side with linear and with qemu's qcow2 overlay,
# in one run, all driven over NBD by fio's nbd engine (one connection, 64 KiB, iodepth 16):
#   origin writes:   one sequential pass over a linear device, then over snapshot-origin with
#                    0, 1 and 4 persistent snapshots (every chunk's first write copies it into
#                    each snapshot's COW first), all on the same origin file;
#   snapshot writes: a pass over a fresh snapshot itself (every chunk allocated in its COW);
#   snapshot reads:  a pass over the 1-snapshot COW's snapshot (every chunk now in the COW);
#   merge:           snapshot-merge of that COW back into the origin, timed until the status
#                    counts down, next to the block copier (copy_speed) copying the same size,
#                    alone (page cache) and with one fdatasync of its output (the fair peer: a
#                    merge must flush the origin before it clears exceptions);
#   disk:            fio writing SIZE MiB with O_DIRECT into a fresh sparse file beside the
#                    COWs: the rate at which the disk takes new data, which bounds every job
#                    that must make its COW durable (k snapshots write k times SIZE);
#   qemu:            qemu-nbd over a qcow2 overlay on a raw base of the same size (writes
#                    allocate in the overlay, the base stays the "snapshot"), a read pass over
#                    it, and `qemu-img commit` as its merge.
# Each round runs every job (with UDM_BASE set, each udm job also with that binary, the two
# binaries' order alternating per round); the table shows medians over the rounds, with the
# server's CPU-seconds and its fdatasync/fsync calls (perf, when it may count syscalls) per
# job. Prints MiB/s and the ratios the snapshot issue aims at. Not part of CI.
#
#   bench/snapshot.sh [SIZE_MIB] [CHUNK_SECTORS] [ROUNDS]
#     defaults 256, 8 (LVM's 4 KiB), 3; UDM_BIN=path skips the builds; UDM_BASE=path adds a
#     "before" binary side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
CHUNK=${2:-8}
ROUNDS=${3:-3}
for t in fio qemu-img qemu-nbd python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
# With UDM_BIN given, an existing copy_speed is used as it is.
if [ -z "${UDM_BIN:-}" ] || [ ! -x "$TARGET/release/examples/copy_speed" ]; then
  cargo build --release -q -p udm-core --example copy_speed
fi
UDM_NEW=${UDM_BIN:-$TARGET/release/udm}
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-snapshot-bench.XXXXXX")
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
SECT=$((SIZE << 20 >> 9))
COWB=$(((SIZE + SIZE / 16 + 4) << 20)) # data + exception areas + header, with room to spare
head -c $((SIZE << 20)) /dev/urandom >"$W/origin.img"
cp "$W/origin.img" "$W/base.raw"
O=$W/origin.img
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# perf counts the server's fdatasync/fsync calls if this kernel lets us trace syscalls.
PERF=0
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1; then PERF=1; fi

now() { date +%s.%N; }
mibs() { python3 -c "print(f'{$SIZE / ($2 - $1):.1f}')"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Results: one line per (job, binary, round) in $W/results: "job bin MiB/s CPU-s syncs".
RES=$W/results
: >"$RES"
# Run "$@" (which prints MiB/s) while watching process $PID; record it under job $JOB, bin $BIN.
measure() { # job bin pid cmd...
  local job=$1 bin=$2 pid=$3
  shift 3
  local c0 c1 v n=- pp=
  if [ $PERF = 1 ]; then
    perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$pid" \
      -o "$W/perf.out" 2>/dev/null &
    pp=$!
    sleep 0.2
  fi
  c0=$(cpu_ticks "$pid")
  v=$("$@")
  c1=$(cpu_ticks "$pid")
  if [ -n "$pp" ]; then
    kill -INT $pp
    wait $pp 2>/dev/null || true
    n=$(awk -F, '/syscalls/ {s += $1} END {print s + 0}' "$W/perf.out")
  fi
  echo "$job $bin $v $(python3 -c "print(f'{($c1 - $c0) / $(getconf CLK_TCK):.2f}')") $n" >>"$RES"
}
# One fio pass over SIZE MiB; prints MiB/s (after a sync, so no pass pays for the previous
# one's writeback).
pass() { # uri rw [sync: one NBD flush at the end, inside the timing]
  sync -f "$O"
  local end=()
  [ "${3:-}" = sync ] && end=(--end_fsync=1)
  fio --name=j --ioengine=nbd --uri="$1" --rw="$2" --bs=64k --iodepth=16 --size=${SIZE}m \
    "${end[@]}" --output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read(); d = json.loads(t[t.index("{"):])["jobs"][0]
s = d["read"] if d["read"]["io_bytes"] else d["write"]
print("%.1f" % (s["bw_bytes"] / 2**20))'
}

# Every udm job with binary $1 (named $2), on a fresh daemon.
udm_jobs() {
  local UDM=$1 B=$2
  rm -f "$W/ctl" "$W/nbd.sock"
  "$UDM" daemon --socket "$W/ctl" --nbd-socket "$W/nbd.sock" --no-fuse 2>"$W/udm.log" &
  local D=$!
  for _ in $(seq 100); do [ -S "$W/ctl" ] && [ -S "$W/nbd.sock" ] && break; sleep 0.1; done
  u() { UDM_SOCKET=$W/ctl "$UDM" "$@"; }
  mk() { u create "$1" --table "$2" >/dev/null; }
  uri() { echo "nbd+unix:///$1?socket=$W/nbd.sock"; }
  for c in s1 s1b s4a s4b s4c s4d sw; do rm -f "$W/$c.cow"; truncate -s $COWB "$W/$c.cow"; done

  mk lin "0 $SECT linear $O 0"
  # One unmeasured pass first: the first overwrite of a freshly written file runs at about half
  # the speed of later ones on this host, and every later job overwrites an already-overwritten file.
  pass "$(uri lin)" write >/dev/null
  measure linear-write "$B" $D pass "$(uri lin)" write
  measure linear-write-sync "$B" $D pass "$(uri lin)" write sync
  measure linear-read "$B" $D pass "$(uri lin)" read
  u remove lin
  mk o0 "0 $SECT snapshot-origin $O"
  measure origin-write-0 "$B" $D pass "$(uri o0)" write
  u remove o0
  mk s1 "0 $SECT snapshot $O $W/s1.cow P $CHUNK"
  mk o1 "0 $SECT snapshot-origin $O"
  measure origin-write-1 "$B" $D pass "$(uri o1)" write
  # The same with a flush at the end, into a second fresh snapshot (s1 has every chunk now,
  # so this pass copies into s1b alone: one snapshot's work again).
  mk s1b "0 $SECT snapshot $O $W/s1b.cow P $CHUNK"
  measure origin-write-1-sync "$B" $D pass "$(uri o1)" write sync
  u remove o1
  u remove s1b
  rm -f "$W/s1b.cow"
  measure snap-read "$B" $D pass "$(uri s1)" read
  u remove s1
  for c in s4a s4b s4c s4d; do mk $c "0 $SECT snapshot $O $W/$c.cow P $CHUNK"; done
  mk o4 "0 $SECT snapshot-origin $O"
  measure origin-write-4 "$B" $D pass "$(uri o4)" write
  u remove o4
  for c in s4a s4b s4c s4d; do u remove $c; rm -f "$W/$c.cow"; done
  mk sw "0 $SECT snapshot $O $W/sw.cow P $CHUNK"
  measure snap-write "$B" $D pass "$(uri sw)" write
  u remove sw
  rm -f "$W/sw.cow"

  # Merge the 1-snapshot COW (SIZE MiB of exceptions) back into the origin.
  sync -f "$O"
  merge() {
    local t0 t1 a m
    t0=$(now)
    mk m "0 $SECT snapshot-merge $O $W/s1.cow P $CHUNK"
    while :; do
      read -r a m < <(u status m | awk '{split($4, x, "/"); print x[1], $5}')
      [ "$a" = "$m" ] && break
      # Polled finely: the merge of 256 MiB takes about 0.2 s, and each poll's overshoot
      # (half the interval on average) counts against it.
      sleep 0.01
    done
    t1=$(now)
    mibs "$t0" "$t1"
  }
  measure merge "$B" $D merge
  u remove m
  rm -f "$W/s1.cow"
  kill $D
  wait $D 2>/dev/null || true
}

copier() { # with "sync": one fdatasync of the output at the end
  local t0 t1
  rm -f "$W/copy.out"
  sync -f "$O"
  truncate -s $((SIZE << 20)) "$W/copy.out"
  t0=$(now)
  "$TARGET/release/examples/copy_speed" "$O" "$W/copy.out" 128 16 >/dev/null
  if [ "${1:-}" = sync ]; then
    python3 -c "import os; f = os.open('$W/copy.out', os.O_RDWR); os.fdatasync(f)"
  fi
  t1=$(now)
  mibs "$t0" "$t1"
  rm -f "$W/copy.out"
}

disk() { # one direct sequential pass into a fresh sparse file; prints MiB/s
  rm -f "$W/disk.out"
  fio --name=d --filename="$W/disk.out" --rw=write --bs=1m --direct=1 --ioengine=psync \
    --size=${SIZE}m --output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read(); d = json.loads(t[t.index("{"):])["jobs"][0]
print("%.1f" % (d["write"]["bw_bytes"] / 2**20))'
  rm -f "$W/disk.out"
}

qemu_jobs() { # a qcow2 overlay (64 KiB clusters, its default) on the raw base
  rm -f "$W/top.qcow2" "$W/qemu.sock"
  qemu-img create -q -f qcow2 -b "$W/base.raw" -F raw "$W/top.qcow2"
  qemu-nbd -k "$W/qemu.sock" -f qcow2 -t --cache=writeback --aio=threads "$W/top.qcow2" &
  local Q=$!
  for _ in $(seq 100); do [ -S "$W/qemu.sock" ] && break; sleep 0.1; done
  measure qemu-write qemu $Q pass "nbd+unix:///?socket=$W/qemu.sock" write
  measure qemu-read qemu $Q pass "nbd+unix:///?socket=$W/qemu.sock" read
  kill $Q
  wait $Q 2>/dev/null || true
  local t0 t1
  t0=$(now)
  qemu-img commit -q "$W/top.qcow2"
  t1=$(now)
  echo "qemu-commit qemu $(mibs "$t0" "$t1") - -" >>"$RES"
}

for r in $(seq "$ROUNDS"); do
  if [ -n "${UDM_BASE:-}" ]; then
    if [ $((r % 2)) = 1 ]; then
      udm_jobs "$UDM_NEW" new
      udm_jobs "$UDM_BASE" base
    else
      udm_jobs "$UDM_BASE" base
      udm_jobs "$UDM_NEW" new
    fi
  else
    udm_jobs "$UDM_NEW" new
  fi
  echo "copier copier $(copier) - -" >>"$RES"
  echo "copier-sync copier $(copier sync) - -" >>"$RES"
  echo "disk disk $(disk) - -" >>"$RES"
  qemu_jobs
  echo "round $r done (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done

echo "== snapshot bench: ${SIZE} MiB, chunk ${CHUNK} sectors, fio nbd 64k qd16, $(nproc) cores," \
  "median of $ROUNDS rounds; load $LOAD0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
python3 - "$RES" "${UDM_BASE:+base}" <<'EOF'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    job, b, v, cpu, n = line.split()
    rows.setdefault((job, b), []).append((float(v), cpu, n))
def med(job, b, i=0):
    r = rows.get((job, b))
    if not r:
        return None
    vals = [float(x[i]) for x in r if x[i] != "-"]
    return st.median(vals) if vals else None
bins = ["new"] + (["base"] if sys.argv[2] else [])
ref = {"origin-write-1-sync": "linear-write-sync", "linear-write-sync": "linear-write",
       "origin-write": "linear-write", "snap-write": "linear-write", "qemu-write": "linear-write",
       "snap-read": "linear-read", "qemu-read": "linear-read", "merge": "copier",
       "qemu-commit": "copier", "copier-sync": "copier"}
def refjob(job):
    return next((r for k, r in ref.items() if job.startswith(k)), None)
jobs = ["linear-write", "linear-write-sync", "origin-write-0", "origin-write-1",
        "origin-write-1-sync", "origin-write-4", "snap-write",
        "qemu-write", "linear-read", "snap-read", "qemu-read", "copier", "copier-sync", "merge",
        "qemu-commit", "disk"]
print(f"{'job':16} {'bin':6} {'MiB/s':>8} {'ratio':>6} {'CPU-s':>6} {'syncs':>6}   rounds (MiB/s)")
for job in jobs:
    for b in (bins if (job, "new") in rows else [next(k[1] for k in rows if k[0] == job)]):
        v = med(job, b)
        if v is None:
            continue
        rj = refjob(job)
        base = med(rj, b if (rj, b) in rows else "copier") if rj else None
        ratio = f"{v / base:.2f}" if base else "1.00"
        cpu, n = med(job, b, 1), med(job, b, 2)
        cpu = f"{cpu:.2f}" if cpu is not None else "-"
        n = f"{n:.0f}" if n is not None else "-"
        rs = " ".join(f"{x[0]:.0f}" for x in rows[(job, b)])
        print(f"{job:16} {b:6} {v:8.1f} {ratio:>6} {cpu:>6} {n:>6}   {rs}")
for b in bins:
    def r(a, c):
        x, y = med(a, b), med(c, b if (c, b) in rows else "copier")
        return x / y if x and y else float("nan")
    o0, o1, o4 = (med(f"origin-write-{k}", b) for k in (0, 1, 4))
    grow = (1 / o4 - 1 / o0) / max(1 / o1 - 1 / o0, 1e-9)
    print(f"aims ({b}): origin write 1 snapshot >= 0.5x linear: {r('origin-write-1', 'linear-write'):.2f}"
          f" (each ended by a flush: {r('origin-write-1-sync', 'linear-write-sync'):.2f});"
          f" merge >= copier/2: {r('merge', 'copier'):.2f}x copier"
          f" ({med('merge', b) / med('copier-sync', 'copier'):.2f}x copier+fdatasync);"
          f" 4 vs 1 snapshot extra cost (sub-linear if < 4): {grow:.2f}")
    # Each snapshot's COW takes a copy of every chunk written, so k snapshots make k times the
    # bytes durable: how close each job runs to the disk, and the least 4-vs-1 cost the disk
    # allows given this 1-snapshot rate (the 4-snapshot pass at the disk's full rate).
    d = med("disk", "disk")
    if d:
        least = (4 / d - 1 / o0) / max(1 / o1 - 1 / o0, 1e-9)
        print(f"disk ({b}): COW bytes at {o1 / d:.2f}x (1 snapshot) and {4 * o4 / d:.2f}x"
              f" (4 snapshots) the disk's direct write rate ({d:.0f} MiB/s); the 4 vs 1 extra"
              f" cost can be no lower than {least:.2f} on this disk")
EOF
