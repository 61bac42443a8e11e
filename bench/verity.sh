#!/usr/bin/env bash
# bench/verity.sh — dm-verity in udm: read throughput of a `verity` device vs a `linear` device
# over the same data file (fio over NBD), and the time to hash/verify the whole image: `udm
# verity format|verify` vs `veritysetup format|verify`. The data file stays in the page cache,
# so the read figures measure udm's overhead (hashing, tree walks, NBD), not the disk. Not part
# of CI.
#
#   bench/verity.sh [SIZE_MIB] [RUNTIME_SECONDS] [ROUNDS]  (defaults: 1024 MiB, 10 s per fio
#                                                           job, 3 rounds)
# Three devices per job, interleaved, once per job per round (the median round is shown, with
# the load average and each daemon's CPU-seconds per GiB read):
#   linear   `linear` over the data file (spliced from the page cache);
#   verity   `verity` with the verified-block cache (blocks read and verified once are then
#            served from memory, as the page cache above a kernel dm-verity device serves
#            buffered readers; 4 KiB blocks live in a memfd that 1 MiB replies splice from):
#            warmed by one untimed pass before each round, so the column is cached reads;
#   cold     `verity` in a second daemon run with UDM_VERITY_DATA_CACHE=0: every read is
#            read and hashed again (what a first read costs, and what O_DIRECT readers of a
#            kernel dm-verity device pay every time).
# Then "first pass": one sequential 1 MiB pass over the whole device right after opening it
# (verified-block cache empty, hash blocks too), linear vs verity.
# Environment: UDM_BIN=path skips the build; UDM_BEFORE=path adds a "before" column: the
# same verity device in a third daemon run from that binary (A/B in one run, every job and
# the first pass).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
RT=${2:-10}
ROUNDS=${3:-3}
for t in fio veritysetup python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then
  cargo build --release -q -p udm
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fi
UDM=${UDM_BIN:-$TARGET/release/udm}
"$UDM" verity --version >/dev/null 2>&1 || { echo "this udm has no 'verity' command (main.rs not wired)"; exit 1; }
W=$(mktemp -d /tmp/udm-verity-bench.XXXXXX)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
DATA=$W/data.img
dd if=/dev/urandom of="$DATA" bs=1M count="$SIZE" status=none

secs() { # command… -> wall seconds
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}
echo "image: $SIZE MiB, 4 KiB blocks, sha256; $(nproc) cores"
T_UF=$(secs "$UDM" verity format "$DATA" "$W/udm.hash" --salt 00 --uuid 12345678-1234-1234-1234-123456789abc)
T_VF=$(secs veritysetup format "$DATA" "$W/vs.hash" --salt 00 --uuid 12345678-1234-1234-1234-123456789abc)
cmp -s "$W/udm.hash" "$W/vs.hash" && SAME=identical || SAME=DIFFERENT
ROOT=$("$UDM" verity dump "$W/udm.hash" >/dev/null; "$UDM" verity format "$DATA" "$W/udm2.hash" --salt 00 \
  --uuid 12345678-1234-1234-1234-123456789abc | awk '/^Root hash/{print $3}')
T_UV=$(secs "$UDM" verity verify "$DATA" "$W/udm.hash" "$ROOT")
T_VV=$(secs veritysetup verify "$DATA" "$W/udm.hash" "$ROOT")
printf '%-34s %8s s   (hash devices %s)\n' "udm verity format" "$T_UF" "$SAME"
printf '%-34s %8s s\n' "veritysetup format" "$T_VF"
printf '%-34s %8s s\n' "udm verity verify" "$T_UV"
printf '%-34s %8s s\n' "veritysetup verify" "$T_VV"

export UDM_SOCKET=$W/control
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/udm.sock" --no-fuse --state-dir "$W/s1" 2>"$W/udm.log" &
PID_main=$!
UDM_VERITY_DATA_CACHE=0 "$UDM" daemon --socket "$W/control2" --nbd-socket "$W/cold.sock" \
  --no-fuse --state-dir "$W/s2" 2>"$W/cold.log" &
PID_cold=$!
SOCKS="udm.sock control cold.sock control2"
if [ -n "${UDM_BEFORE:-}" ]; then
  "$UDM_BEFORE" daemon --socket "$W/control3" --nbd-socket "$W/before.sock" --no-fuse \
    --state-dir "$W/s3" 2>"$W/before.log" &
  PID_before=$!
  SOCKS="$SOCKS before.sock control3"
fi
for s in $SOCKS; do
  for _ in $(seq 100); do [ -S "$W/$s" ] && break; sleep 0.1; done
done
SECT=$((SIZE * 2048))
"$UDM" create lin --table "0 $SECT linear $DATA 0"
"$UDM" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
UDM_SOCKET=$W/control2 "$UDM" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
[ -n "${UDM_BEFORE:-}" ] && UDM_SOCKET=$W/control3 "$UDM_BEFORE" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
run() { # device rw bs depth [fio args] -> "MiB/s daemon-CPU-s-per-GiB"
  local dev=$1 sock=udm.sock pid=$PID_main c0 out
  [ "$dev" = cold ] && { dev=ver; sock=cold.sock; pid=$PID_cold; }
  [ "$dev" = before ] && { dev=ver; sock=before.sock; pid=$PID_before; }
  c0=$(cpu $pid)
  out=$(fio --name=j --ioengine=nbd --uri="nbd+unix:///$dev?socket=$W/$sock" --rw=$2 --bs=$3 \
    --iodepth=$4 --size=${SIZE}m ${5:---time_based --runtime=$RT} --output-format=json 2>/dev/null)
  # (fio's nbd engine prints "connected to NBD server" before the JSON)
  python3 -c 'import json,sys; t=sys.argv[1]; d=json.loads(t[t.index("{"):])["jobs"][0]["read"]
c=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); print(round(d["bw_bytes"]/2**20), round(c/(d["io_bytes"]/2**30),3))' \
    "$out" "$c0" "$(cpu $pid)" "$(getconf CLK_TCK)"
}
JOBS=("read 1m 16" "read 4k 16" "randread 4k 16" "randread 4k 1")
# Warm the verified-block cache (one pass), so the "verity" column is what cached reads cost.
run ver read 1m 16 " " >/dev/null
B() { [ -n "${UDM_BEFORE:-}" ] && run before "$@" || echo 0 0; }
B read 1m 16 " " >/dev/null
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for i in "${!JOBS[@]}"; do
    set -- ${JOBS[$i]}
    echo "$i $(run lin "$@") $(run ver "$@") $(run cold "$@") $(B "$@")" >>"$W/results"
  done
  # First pass: reopen (empty cache), one sequential pass over the whole device.
  "$UDM" verity close ver
  "$UDM" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
  if [ -n "${UDM_BEFORE:-}" ]; then
    UDM_SOCKET=$W/control3 "$UDM_BEFORE" verity close ver
    UDM_SOCKET=$W/control3 "$UDM_BEFORE" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
  fi
  echo "${#JOBS[@]} $(run lin read 1m 16 " ") $(run ver read 1m 16 " ") 0 0 $(B read 1m 16 " ")" >>"$W/results"
  # Warm it again, so the next round's "verity" column is cached reads only.
  run ver read 1m 16 " " >/dev/null
  B read 1m 16 " " >/dev/null
done
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg); median of $ROUNDS rounds"
echo "(MiB/s, then daemon CPU-seconds per GiB read in brackets; ratios to linear)"
python3 - "$W/results" "${JOBS[@]}" "first-pass 1m 16" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
for i, j in enumerate(sys.argv[2:]):
    rw, bs, qd = j.split()
    rs = sorted(([float(x) for x in r[1:]] for r in rows if int(r[0]) == i),
                key=lambda v: v[2] / max(v[0], 1))
    L, Lc, V, Vc, C, Cc, B, Bc = rs[len(rs) // 2]
    line = f"{rw+' '+bs+' qd'+qd:<22} linear {L:>6.0f} ({Lc:.2f})  verity {V:>6.0f} ({Vc:.2f}) {V/max(L,1):.2f}x"
    if C:
        line += f"  cold {C:>6.0f} ({Cc:.2f}) {C/max(L,1):.2f}x"
    if B:
        line += f"  before {B:>6.0f} ({Bc:.2f}) {B/max(L,1):.2f}x"
    print(line)
PY
"$UDM" status ver
"$UDM" verity close ver
