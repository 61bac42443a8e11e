#!/usr/bin/env bash
# bench/raid.sh — udm's raid target over 4 file legs: sequential 1 MiB reads and writes (fio
# over NBD, queue depth 16) for raid1/5/6/10 side by side with striped over the same 4 legs
# and linear over one; resync (raid1, 2 legs) and rebuild (raid5, 4 legs, one leg) rates next
# to the block copier copying the same amount; and, with REFVM=1, Linux md (mdadm) on the
# same shapes in the reference VM as a reference line only (TCG emulation: not a timing
# claim). Median of ROUNDS interleaved rounds; prints ratios and the load average. Not in CI.
#
#   bench/raid.sh [LEG_MIB] [ROUNDS] [RUNTIME_S]    (defaults: 256 MiB, 3, 5 s; UDM_BIN skips
#                                                    the build)
set -euo pipefail
cd "$(dirname "$0")/.."
LEG=${1:-256}
ROUNDS=${2:-3}
RT=${3:-5}
for t in fio python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then
  cargo build --release -q -p udm
  cargo build --release -q -p udm-core --example copy_speed
fi
UDM=${UDM_BIN:-$PWD/target/release/udm}
TARGET=$(dirname "$UDM")
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-raid-bench.XXXXXX")
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
export UDM_SOCKET=$W/control
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/nbd.sock" --no-fuse --state-dir "$W/state" 2>"$W/udm.log" &
for _ in $(seq 100); do [ -S "$W/nbd.sock" ] && [ -S "$W/control" ] && break; sleep 0.1; done
S=$((LEG * 2048))           # sectors per leg
for i in 0 1 2 3; do
  dd if=/dev/urandom of="$W/d$i" bs=1M count="$LEG" status=none
  truncate -s 1M "$W/m$i"
done
devs() { # n -> "n m0 d0 m1 d1 ..."
  local s="$1"; for i in $(seq 0 $(($1 - 1))); do s="$s $W/m$i $W/d$i"; done; echo "$s"
}
zero_meta() { for i in 0 1 2 3; do dd if=/dev/zero of="$W/m$i" bs=1M count=1 conv=notrunc status=none; done; }
wait_idle() { # name -> seconds waited (fails after 600 s)
  local n=$1 t0 f
  t0=$(date +%s.%N)
  for _ in $(seq 12000); do
    read -ra f <<<"$("$UDM" status "$n")"
    case "${f[7]:-} ${f[5]:-}" in
      idle*a*) ;;
      idle*) [ "${f[6]%/*}" = "${f[6]#*/}" ] && { python3 -c "import time; print(f'{time.time() - $t0:.3f}')"; return 0; };;
    esac
    sleep 0.05
  done
  echo "$n never idle: ${f[*]}" >&2; return 1
}
table() { # kind -> table
  case $1 in
    linear) echo "0 $S linear $W/d0 0";;
    striped) echo "0 $((4 * S)) striped 4 128 $W/d0 0 $W/d1 0 $W/d2 0 $W/d3 0";;
    raid1) echo "0 $S raid raid1 2 0 nosync $(devs 4)";;
    raid5) echo "0 $((3 * S)) raid raid5_ls 2 128 nosync $(devs 4)";;
    raid6) echo "0 $((2 * S)) raid raid6_zr 1 128 $(devs 4)";;
    raid10) echo "0 $((2 * S)) raid raid10 2 128 nosync $(devs 4)";;
  esac
}
fio_mibs() { # name rw -> MiB/s
  fio --name=b --ioengine=nbd --uri="nbd+unix:///$1?socket=$W/nbd.sock" --rw="$2" --bs=1m \
    --iodepth=16 --time_based --runtime="$RT" --output-format=json 2>/dev/null |
    sed -n '/^{/,$p' | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(round((j['read']['bw']+j['write']['bw'])/1024))"
}
KINDS=(linear striped raid1 raid5 raid6 raid10)
declare -A R
for round in $(seq "$ROUNDS"); do
  for k in "${KINDS[@]}"; do
    zero_meta
    "$UDM" create "$k" --table "$(table "$k")"
    case $k in raid*) wait_idle "$k" >/dev/null;; esac
    R[$k-read-$round]=$(fio_mibs "$k" read)
    R[$k-write-$round]=$(fio_mibs "$k" write)
    "$UDM" remove "$k"
  done
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1 / max($2, 1):.2f}')"; }
echo "== udm raid over 4 file legs of ${LEG} MiB ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)); fio seq 1 MiB qd16 over NBD, MiB/s, median of $ROUNDS"
printf '%-8s %8s %8s %12s %12s\n' kind read write read/linear write/striped
declare -A M
for k in "${KINDS[@]}"; do
  for rw in read write; do
    vals=(); for r in $(seq "$ROUNDS"); do vals+=("${R[$k-$rw-$r]}"); done
    M[$k-$rw]=$(med "${vals[@]}")
  done
done
for k in "${KINDS[@]}"; do
  printf '%-8s %8s %8s %12s %12s\n' "$k" "${M[$k-read]}" "${M[$k-write]}" \
    "$(ratio "${M[$k-read]}" "${M[linear-read]}")" "$(ratio "${M[$k-write]}" "${M[striped-write]}")"
done
echo "raid5 full-stripe writes vs striped over 3 legs (n-1): $(ratio "${M[raid5-write]}" "$(python3 -c "print(${M[striped-write]} * 3 / 4)")")"

echo "== resync (raid1, 2 legs) and rebuild (raid5_ls, leg 1 of 4) vs the block copier, MiB/s"
echo "   (no max_recovery_rate in the tables: udm syncs unthrottled, as the kernel would with"
echo "    speed_limit_max raised; the kernel's default ceiling is 200000 KiB/s per device)"
printf '%-6s %8s %8s %8s\n' round resync rebuild copier
for round in $(seq "$ROUNDS"); do
  zero_meta
  "$UDM" create rs --table "0 $S raid raid1 1 0 $(devs 2)"
  T=$(wait_idle rs); "$UDM" remove rs
  RS=$(python3 -c "print(round($LEG / $T))")
  zero_meta
  "$UDM" create rb --table "0 $((3 * S)) raid raid5_ls 2 128 nosync $(devs 4)"
  wait_idle rb >/dev/null
  "$UDM" suspend rb; "$UDM" load rb --table "0 $((3 * S)) raid raid5_ls 3 128 rebuild 1 $(devs 4)"; "$UDM" resume rb
  T=$(wait_idle rb); "$UDM" remove rb
  RB=$(python3 -c "print(round($LEG / $T))")
  rm -f "$W/copy.out"; truncate -s "${LEG}M" "$W/copy.out"
  CO=$("$TARGET/examples/copy_speed" "$W/d0" "$W/copy.out" 128 16 | awk '{print $4}')
  CO=$(python3 -c "print(round($CO * 1024))")
  printf '%-6s %8s %8s %8s\n' "$round" "$RS" "$RB" "$CO"
done

if [ "${REFVM:-0}" = 1 ]; then
  echo "== Linux md in refvm (TCG emulation; reference line only, not a timing claim), 64 MiB legs, dd 1 MiB direct, MiB/s"
  for i in 0 1 2 3; do truncate -s 64M "$W/v$i"; done
  ../shared/refvm/run.sh --timeout 600 --disk "$W/v0" --disk "$W/v1" --disk "$W/v2" --disk "$W/v3" -- '
    rate() { python3 -c "print(round(64 / $1))" 2>/dev/null || awk "BEGIN{print int(64/$1)}"; }
    for lv in 1 5 6 10; do
      mdadm --create /dev/md0 --run --quiet --level=$lv --raid-devices=4 --assume-clean --metadata=1.2 /dev/vda /dev/vdb /dev/vdc /dev/vdd 2>/dev/null
      t0=$(date +%s.%N); dd if=/dev/zero of=/dev/md0 bs=1M count=48 oflag=direct status=none; t1=$(date +%s.%N)
      dd if=/dev/md0 of=/dev/null bs=1M count=48 iflag=direct status=none; t2=$(date +%s.%N)
      echo "md raid$lv write $(awk "BEGIN{print int(48/($t1-$t0))}") read $(awk "BEGIN{print int(48/($t2-$t1))}")"
      mdadm --stop /dev/md0 >/dev/null 2>&1; mdadm --zero-superblock /dev/vd[abcd] 2>/dev/null || true
    done' 2>&1 | grep '^md ' || echo "(refvm run failed)"
fi
