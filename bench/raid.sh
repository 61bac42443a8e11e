#!/usr/bin/env bash
# bench/raid.sh — udm's raid target over legs that behave like disks, side by side with
# striped over the same legs and linear over one of them: sequential 1 MiB reads and writes
# (fio over NBD, queue depth 16) for raid1 (2 and 4 legs), raid5, raid6 and raid10; resync
# (raid1, 2 legs) and rebuild (raid5 and raid6, one leg) next to the block copier copying
# one leg onto another; and, with REFVM=1, Linux md (mdadm) on the same shapes in the
# reference VM as a reference line only (TCG emulation: not a timing claim). Median of
# ROUNDS interleaved rounds (peer order rotated each round); prints ratios, the udm
# daemon's CPU-seconds per GiB moved and the load averages. Not in CI.
#
# The model: every data leg is an NBD export served by its own `nbdkit --filter=rate file`
# process on a unix socket, limited to RATE MiB/s (nbdkit's rate filter limits reads and
# writes each to that rate) — a disk, or a disk on another machine, where the leg's
# bandwidth and not the host's CPU is what runs out. The files behind nbdkit stay in the
# page cache, so the rate is the only limit a leg has. The raid metadata devices are small
# local files. Every peer uses the same legs in the same run: linear = leg 0, striped = the
# 4 legs (64 KiB chunks), and the copier reference is udm's `mirror` target resyncing leg 0
# onto leg 1 (its region copies go through the block copier, dm-kcopyd's role), so resync
# and rebuild are compared with the copier between the same kind of legs. No table sets a
# recovery rate: udm then applies md's defaults (speed_limit_max 200000 KiB/s,
# speed_limit_min 1000 KiB/s) as the kernel does; at the default RATE the legs, not the
# ceiling, bound the sync. bench/copier.sh measures the copier on page-cached files.
#
#   bench/raid.sh [LEG_MIB] [ROUNDS] [RUNTIME_S] [RATE_MIB]   (defaults: 128 MiB, 3, 5 s,
#                                      32 MiB/s per leg; UDM_BIN names the binary, else built;
#                                      SYNC_ONLY=1 runs only the sync rates;
#                                      UDM_BIN2 adds a second binary's sync rates, interleaved;
#                                      FIRSTWRITE=1 runs only the first-write measure below)
#
# FIRSTWRITE=1: the first write to a clean region on the blocking path. raid1 (2 legs) and
# raid5 (4 legs) with a write-intent bitmap on the metadata files (region_size 512 = 256 KiB
# per device; a fresh bitmap has every bit set as md's, so the set first runs with a 1 s
# bitmap daemon until leg 0's bits are clear, then is reloaded with daemon_sleep 300 s so no
# bit is cleared during the run; every bit write is made durable, as md's): 4 KiB writes, one in
# each region (fio write with holes: raid1 every 256 KiB, raid5 every 768 KiB of the array =
# 256 KiB per device), first on a fresh set (every write must set its bit and flush the
# bitmap before the data goes out), then the same writes again (bits already dirty: no
# bitmap I/O). IOPS and mean completion latency at queue depth 1 and 16, fresh / dirty.
set -euo pipefail
cd "$(dirname "$0")/.."
LEG=${1:-128}
ROUNDS=${2:-3}
RT=${3:-5}
RATE=${4:-32}
for t in fio python3 nbdkit; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
if [ -z "${UDM_BIN:-}" ]; then
  cargo build --release -q -p udm
fi
UDM=${UDM_BIN:-$PWD/target/release/udm}
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-raid-bench.XXXXXX")
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
export UDM_SOCKET=$W/control
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/nbd.sock" --no-fuse --state-dir "$W/state" 2>"$W/udm.log" &
DPID=$!
if [ -n "${UDM_BIN2:-}" ]; then
  "$UDM_BIN2" daemon --socket "$W/control2" --nbd-socket "$W/nbd2.sock" --no-fuse --state-dir "$W/state2" 2>"$W/udm2.log" &
fi
S=$((LEG * 2048))           # sectors per leg
BITS=$((RATE * 8 * 1048576))
for i in 0 1 2 3; do
  dd if=/dev/urandom of="$W/f$i" bs=1M count="$LEG" status=none
  truncate -s 1M "$W/m$i"
  nbdkit --exit-with-parent -U "$W/l$i.sock" --filter=rate file "$W/f$i" rate="$BITS" burstiness=0.25 &
done
for _ in $(seq 100); do
  ok=1; [ -n "${UDM_BIN2:-}" ] && [ ! -S "$W/control2" ] && ok=0
  for f in "$W/nbd.sock" "$W/control" "$W/l0.sock" "$W/l1.sock" "$W/l2.sock" "$W/l3.sock"; do [ -S "$f" ] || ok=0; done
  [ $ok = 1 ] && break; sleep 0.1
done
leg() { echo "nbd+unix:///?socket=$W/l$1.sock"; }
devs() { # n -> "n m0 leg0 m1 leg1 ..."
  local s="$1"; for i in $(seq 0 $(($1 - 1))); do s="$s $W/m$i $(leg $i)"; done; echo "$s"
}
zero_meta() { for i in 0 1 2 3; do dd if=/dev/zero of="$W/m$i" bs=1M count=1 conv=notrunc status=none; done; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.3f}')"; }
wait_idle() { # name -> returns when the raid set is idle and in sync (fails after 900 s)
  local n=$1 f
  for _ in $(seq 18000); do
    read -ra f <<<"$("$UDM" status "$n")"
    case "${f[7]:-} ${f[5]:-}" in
      idle*a*) ;;
      idle*) [ "${f[6]%/*}" = "${f[6]#*/}" ] && return 0;;
    esac
    sleep 0.05
  done
  echo "$n never idle: ${f[*]}" >&2; return 1
}
wait_mirror() { # name -> returns when every region is in sync
  local n=$1 f
  for _ in $(seq 18000); do
    read -ra f <<<"$("$UDM" status "$n")"
    [ "${f[6]%/*}" = "${f[6]#*/}" ] && return 0
    sleep 0.05
  done
  echo "$n never in sync: ${f[*]}" >&2; return 1
}
cpu() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }   # daemon CPU, clock ticks
HZ=$(getconf CLK_TCK)
table() { # kind -> table
  case $1 in
    linear) echo "0 $S linear $(leg 0) 0";;
    striped) echo "0 $((4 * S)) striped 4 128 $(leg 0) 0 $(leg 1) 0 $(leg 2) 0 $(leg 3) 0";;
    raid1) echo "0 $S raid raid1 2 0 nosync $(devs 2)";;
    raid1x4) echo "0 $S raid raid1 2 0 nosync $(devs 4)";;
    raid5) echo "0 $((3 * S)) raid raid5_ls 2 128 nosync $(devs 4)";;
    raid6) echo "0 $((2 * S)) raid raid6_zr 1 128 $(devs 4)";;
    raid10) echo "0 $((2 * S)) raid raid10 2 128 nosync $(devs 4)";;
  esac
}
fio_job() { # name rw -> "MiB/s CPU-s/GiB"
  local c0 out
  c0=$(cpu)
  out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///$1?socket=$W/nbd.sock" --rw="$2" --bs=1m \
    --iodepth=16 --time_based --runtime="$RT" --output-format=json 2>/dev/null | sed -n '/^{/,$p')
  python3 -c "
import json,sys
j=json.loads(sys.argv[1])['jobs'][0]
b=j['read']['io_bytes']+j['write']['io_bytes']
bw=(j['read']['bw']+j['write']['bw'])/1024
print(round(bw), f'{($(cpu) - $c0) / $HZ / max(b / 2**30, 1e-9):.3f}')" "$out"
}
sync_round() { # tag binary -> raid1 resync and raid5/raid6 rebuild rates into R[...$tag-$round]
  local tg=$1 B=$2 lv ty len p t0
  zero_meta
  t0=$(now); "$B" create rs --table "0 $S raid raid1 1 0 $(devs 2)"
  UDM=$B wait_idle rs; R[resync$tg-$round]=$(python3 -c "print(round($LEG / $(since "$t0")))"); "$B" remove rs
  for lv in raid5 raid6; do
    zero_meta
    if [ $lv = raid5 ]; then ty=raid5_ls; len=$((3 * S)); p="2 128 nosync"; else ty=raid6_zr; len=$((2 * S)); p="1 128"; fi
    "$B" create rb --table "0 $len raid $ty $p $(devs 4)"
    UDM=$B wait_idle rb
    "$B" suspend rb; "$B" load rb --table "0 $len raid $ty 3 128 rebuild 1 $(devs 4)"
    t0=$(now); "$B" resume rb
    UDM=$B wait_idle rb; R[$lv-rebuild$tg-$round]=$(python3 -c "print(round($LEG / $(since "$t0")))"); "$B" remove rb
  done
}
if [ "${FIRSTWRITE:-0}" = 1 ]; then
  fw_job() { # name skip_kib qd -> "IOPS clat_us" (one write per region: S/512 of them)
    fio --name=b --ioengine=nbd --uri="nbd+unix:///$1?socket=$W/nbd.sock" --rw="write:$2k" --bs=4k \
      --number_ios=$((S / 512)) --iodepth="$3" --output-format=json 2>/dev/null | sed -n '/^{/,$p' | python3 -c "
import json,sys
w=json.load(sys.stdin)['jobs'][0]['write']
print(round(w['iops']), round(w['clat_ns']['mean'] / 1000))"
  }
  wait_clean_bits() { # until leg 0's bitmap (after its 256-byte superblock at 4 KiB) is all clear
    for _ in $(seq 600); do
      python3 -c "
import sys
b = open('$W/m0', 'rb').read()[4096 + 256:4096 + 256 + $S // 512 // 8]
sys.exit(0 if not any(b) else 1)" && return 0
      sleep 0.05
    done
    echo "bitmap never cleared" >&2; return 1
  }
  declare -A F
  for round in $(seq "$ROUNDS"); do
    for k in raid1 raid5; do
      for qd in 1 16; do
        zero_meta
        if [ $k = raid1 ]; then
          t="0 $S raid raid1 6 0 nosync region_size 512 daemon_sleep DS $(devs 2)"; skip=252
        else
          t="0 $((3 * S)) raid raid5_ls 6 128 nosync region_size 512 daemon_sleep DS $(devs 4)"; skip=764
        fi
        # A fresh bitmap has every bit set (as md's): let a 1 s bitmap daemon clear them,
        # then reload with a 300 s one so no bit is cleared during the two passes.
        "$UDM" create fw --table "${t/DS/1000}"
        wait_idle fw
        wait_clean_bits
        "$UDM" suspend fw; "$UDM" load fw --table "${t/DS/300000}"; "$UDM" resume fw
        read -r F[$k-$qd-fresh-iops-$round] F[$k-$qd-fresh-lat-$round] <<<"$(fw_job fw $skip $qd)"
        read -r F[$k-$qd-dirty-iops-$round] F[$k-$qd-dirty-lat-$round] <<<"$(fw_job fw $skip $qd)"
        "$UDM" remove fw
      done
    done
  done
  med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  fmed() { local vals=(); for r in $(seq "$ROUNDS"); do vals+=("${F[$1-$r]}"); done; med "${vals[@]}"; }
  echo "== first write to a clean region vs a dirty one: 4 KiB writes, one per 256 KiB device region,"
  echo "   bitmap on local metadata files, legs ${RATE} MiB/s NBD; $(nproc) cores, load before $LOAD0,"
  echo "   after $(cut -d' ' -f1-3 /proc/loadavg); median of $ROUNDS rounds (fresh pass, then dirty pass, each round)"
  printf '%-6s %3s %11s %11s %12s %12s %12s\n' kind qd fresh-IOPS dirty-IOPS fresh-lat-us dirty-lat-us fresh/dirty
  for k in raid1 raid5; do
    for qd in 1 16; do
      fi_=$(fmed "$k-$qd-fresh-iops"); di=$(fmed "$k-$qd-dirty-iops")
      printf '%-6s %3s %11s %11s %12s %12s %12s\n' $k $qd "$fi_" "$di" "$(fmed "$k-$qd-fresh-lat")" \
        "$(fmed "$k-$qd-dirty-lat")" "$(python3 -c "print(f'{$fi_ / max($di, 1e-9):.2f}')")"
    done
  done
  exit 0
fi
KINDS=(linear striped raid1 raid1x4 raid5 raid6 raid10)
[ "${SYNC_ONLY:-0}" = 1 ] && KINDS=()
declare -A R
for round in $(seq "$ROUNDS"); do
  # Rotate the peer order each round.
  nk=${#KINDS[@]}; [ "$nk" -gt 0 ] || nk=1
  order=("${KINDS[@]:$(( (round - 1) % nk ))}" "${KINDS[@]:0:$(( (round - 1) % nk ))}")
  for k in ${KINDS[@]+"${order[@]}"}; do
    zero_meta
    "$UDM" create "$k" --table "$(table "$k")"
    case $k in raid*) wait_idle "$k";; esac
    read -r R[$k-read-$round] R[$k-rcpu-$round] <<<"$(fio_job "$k" read)"
    read -r R[$k-write-$round] R[$k-wcpu-$round] <<<"$(fio_job "$k" write)"
    "$UDM" remove "$k"
  done
  # Sync: the copier (mirror resync leg 0 -> leg 1), raid1 resync, raid5/raid6 rebuild.
  zero_meta
  t0=$(now); "$UDM" create cp --table "0 $S mirror core 1 4096 2 $(leg 0) 0 $(leg 1) 0"
  wait_mirror cp; R[copier-$round]=$(python3 -c "print(round($LEG / $(since "$t0")))"); "$UDM" remove cp
  tags=(""); [ -n "${UDM_BIN2:-}" ] && tags=("" 2)
  (( round % 2 == 0 )) && [ ${#tags[@]} = 2 ] && tags=(2 "")
  for tg in "${tags[@]}"; do
    if [ -z "$tg" ]; then B=$UDM; export UDM_SOCKET=$W/control; else B=$UDM_BIN2; export UDM_SOCKET=$W/control2; fi
    sync_round "$tg" "$B"
  done
  export UDM_SOCKET=$W/control
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
medof() { local vals=(); for r in $(seq "$ROUNDS"); do vals+=("${R[$1-$r]}"); done; med "${vals[@]}"; }
ratio() { python3 -c "print(f'{$1 / max($2, 1e-9):.2f}')"; }
echo "== udm raid over 4 NBD legs (nbdkit rate filter, ${RATE} MiB/s each, ${LEG} MiB), $(nproc) cores,"
echo "   load before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg); fio seq 1 MiB qd16 over NBD,"
echo "   MiB/s and udm CPU-s/GiB, median of $ROUNDS interleaved rounds"
if [ ${#KINDS[@]} -gt 0 ]; then
printf '%-8s %7s %7s %9s %9s %12s %14s\n' kind read write rd-cpu wr-cpu read/linear write/striped
declare -A M
for k in "${KINDS[@]}"; do
  for x in read write rcpu wcpu; do M[$k-$x]=$(medof "$k-$x"); done
done
for k in "${KINDS[@]}"; do
  printf '%-8s %7s %7s %9s %9s %12s %14s\n' "$k" "${M[$k-read]}" "${M[$k-write]}" "${M[$k-rcpu]}" \
    "${M[$k-wcpu]}" "$(ratio "${M[$k-read]}" "${M[linear-read]}")" "$(ratio "${M[$k-write]}" "${M[striped-write]}")"
done
for r in $(seq "$ROUNDS"); do rr+=("$(ratio "${R[raid1-read-$r]}" "${R[linear-read-$r]}")"); done
echo "raid1 (2 legs) reads / one leg: $(ratio "${M[raid1-read]}" "${M[linear-read]}") (rounds ${rr[*]}; aim >= 1.5)"
echo "raid1 (4 legs) reads / one leg: $(ratio "${M[raid1x4-read]}" "${M[linear-read]}")"
echo "raid5 full-stripe writes / striped over 3 legs (n-1): $(ratio "${M[raid5-write]}" "$(python3 -c "print(${M[striped-write]} * 3 / 4)")") (aim >= 0.6)"
fi
echo "== sync rates, MiB/s per leg (no recovery rate in the tables), median of $ROUNDS"
printf '%-6s %8s %8s %9s %9s\n' round copier resync r5-rebld r6-rebld
for r in $(seq "$ROUNDS"); do
  printf '%-6s %8s %8s %9s %9s\n' "$r" "${R[copier-$r]}" "${R[resync-$r]}" "${R[raid5-rebuild-$r]}" "${R[raid6-rebuild-$r]}"
  [ -n "${UDM_BIN2:-}" ] && printf '%-6s %8s %8s %9s %9s\n' "$r (2)" "" "${R[resync2-$r]}" "${R[raid5-rebuild2-$r]}" "${R[raid6-rebuild2-$r]}"
done
C=$(medof copier)
printf '%-6s %8s %8s %9s %9s\n' median "$C" "$(medof resync)" "$(medof raid5-rebuild)" "$(medof raid6-rebuild)"
echo "resync / copier $(ratio "$(medof resync)" "$C"), raid5 rebuild / copier $(ratio "$(medof raid5-rebuild)" "$C"), raid6 rebuild / copier $(ratio "$(medof raid6-rebuild)" "$C")"
if [ -n "${UDM_BIN2:-}" ]; then
  printf '%-6s %8s %8s %9s %9s\n' "median2" "$C" "$(medof resync2)" "$(medof raid5-rebuild2)" "$(medof raid6-rebuild2)"
  echo "UDM_BIN2: resync / copier $(ratio "$(medof resync2)" "$C"), raid5 rebuild / copier $(ratio "$(medof raid5-rebuild2)" "$C"), raid6 rebuild / copier $(ratio "$(medof raid6-rebuild2)" "$C")"
fi
echo "load after sync $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${REFVM:-0}" = 1 ]; then
  echo "== Linux md in refvm (TCG emulation; reference line only, not a timing claim), 64 MiB legs, dd 1 MiB direct, MiB/s"
  for i in 0 1 2 3; do truncate -s 64M "$W/v$i"; done
  ../shared/refvm/run.sh --timeout 600 --disk "$W/v0" --disk "$W/v1" --disk "$W/v2" --disk "$W/v3" -- '
    for lv in 1 5 6 10; do
      mdadm --create /dev/md0 --run --quiet --level=$lv --raid-devices=4 --assume-clean --metadata=1.2 /dev/vda /dev/vdb /dev/vdc /dev/vdd 2>/dev/null
      t0=$(date +%s.%N); dd if=/dev/zero of=/dev/md0 bs=1M count=48 oflag=direct status=none; t1=$(date +%s.%N)
      dd if=/dev/md0 of=/dev/null bs=1M count=48 iflag=direct status=none; t2=$(date +%s.%N)
      echo "md raid$lv write $(awk "BEGIN{print int(48/($t1-$t0))}") read $(awk "BEGIN{print int(48/($t2-$t1))}")"
      mdadm --stop /dev/md0 >/dev/null 2>&1; mdadm --zero-superblock /dev/vd[abcd] 2>/dev/null || true
    done' 2>&1 | grep '^md ' || echo "(refvm run failed)"
fi
