#!/usr/bin/env bash
# bench/verity.sh — dm-verity in udm: verified sequential read throughput of a `verity` device
# vs a `linear` device over the same data file (fio over NBD, 1 MiB reads, queue depth 16), and
# the time to hash/verify the whole image: `udm verity format|verify` vs `veritysetup
# format|verify`. The data file stays in the page cache, so the read figures measure udm's
# overhead (hashing, tree walks, NBD), not the disk. Not part of CI.
#
#   bench/verity.sh [SIZE_MIB] [RUNTIME_SECONDS] [ROUNDS]  (defaults: 1024 MiB, 10 s per fio
#                                                           job, 3 rounds)
# linear and verity run once per job per round (interleaved); the median round is shown, with
# the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
RT=${2:-10}
ROUNDS=${3:-3}
for t in fio veritysetup python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
cargo build --release -q -p udm
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
UDM=${UDM:-$TARGET/release/udm}
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
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/udm.sock" 2>"$W/udm.log" &
for _ in $(seq 100); do [ -S "$W/udm.sock" ] && [ -S "$W/control" ] && break; sleep 0.1; done
SECT=$((SIZE * 2048))
"$UDM" create lin --table "0 $SECT linear $DATA 0"
"$UDM" verity open "$DATA" ver "$W/udm.hash" "$ROOT"
run() { # device rw bs depth -> MiB/s
  fio --name=j --ioengine=nbd --uri="nbd+unix:///$1?socket=$W/udm.sock" --rw=$2 --bs=$3 \
    --iodepth=$4 --size=${SIZE}m --time_based --runtime=$RT --output-format=json 2>/dev/null |
    # (fio's nbd engine prints "connected to NBD server" before the JSON)
    python3 -c 'import json,sys; t=sys.stdin.read(); d=json.loads(t[t.index("{"):]); print(round(d["jobs"][0]["read"]["bw_bytes"]/2**20))'
}
JOBS=("read 1m 16" "read 4k 16" "randread 4k 16" "randread 4k 1")
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for i in "${!JOBS[@]}"; do
    set -- ${JOBS[$i]}
    echo "$i $(run lin "$@") $(run ver "$@")" >>"$W/results"
  done
done
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg); median of $ROUNDS rounds"
python3 - "$W/results" "${JOBS[@]}" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
for i, j in enumerate(sys.argv[2:]):
    rw, bs, qd = j.split()
    rs = sorted(([int(x) for x in r[1:]] for r in rows if int(r[0]) == i),
                key=lambda v: v[1] / max(v[0], 1))
    L, V = rs[len(rs) // 2]
    print(f"{rw+' '+bs+' qd'+qd:<22} linear {L:>6} MiB/s   verity {V:>6} MiB/s   verity/linear {V/max(L,1):.2f}")
PY
"$UDM" status ver
"$UDM" verity close ver
