#!/usr/bin/env bash
# bench/integrity.sh — dm-integrity in udm, side by side over the same kind of file: `linear`,
# `integrity` with crc32c in J (journal) and B (bitmap) modes, plain `crypt`
# (aes-xts-plain64) and, when udm has it, authenticated crypt (aes-gcm-random over an
# integrity device). Every device is read and written with fio over NBD (unix sockets): 4 KiB
# random and 1 MiB sequential, read and write. Median of 3 interleaved rounds (the machine is
# shared and noisy); ratios against linear and the load average are printed. Not part of CI.
#
# The time-based write jobs let `linear` write into the page cache with no flush, while J mode
# must make every byte durable in its journal (a commit) and then write it home. So the
# 1 MiB write also runs as a pair ended by a flush inside the timing ("write 1m qd8 +fsync":
# one pass over the device after a `sync` of its file, fio `--end_fsync=1`, i.e. one NBD
# flush), and the time-based J-mode write is also printed against that durable linear.
#
#   bench/integrity.sh [SIZE_MIB] [RUNTIME_SECONDS]      (defaults: 256 MiB, 5 s per fio job)
#   UDM_BIN=/path/to/udm bench/integrity.sh …            (that binary, no build)
#   JOBS="randread 4k 16;read 1m 8" bench/integrity.sh …   (only these fio jobs: rw bs depth
#                                                          [sync: one pass, ended by a flush])
#   BASE_BIN=/path/to/old/udm bench/integrity.sh …       (also that binary's daemon, same
#                                                          devices, columns DEV@base, interleaved)
#   DEVS_ONLY="lin ij ib" bench/integrity.sh …           (only these devices)
# Besides MiB/s, the daemon's CPU seconds per GiB moved (from /proc, all its threads) are
# printed: on a loaded machine they vary far less than the wall-clock rates.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
RT=${2:-5}
for t in fio python3; do
  command -v $t >/dev/null || { echo "need $t"; exit 1; }
done
if [ -n "${UDM_BIN:-}" ]; then
  UDM=$UDM_BIN
else
  cargo build --release -q -p udm
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  UDM=${UDM:-$TARGET/release/udm}
fi
W=$(mktemp -d /tmp/udm-integrity-bench.XXXXXX)
cleanup() {
  for b in "$UDM:$W" "${BASE_BIN:-}:$W/base"; do
    [ -n "${b%%:*}" ] && UDM_SOCKET=${b#*:}/control "${b%%:*}" daemon stop --force >/dev/null 2>&1 || true
  done
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"
}
trap cleanup EXIT

declare -A DPID SOCK
SECT=$((SIZE * 2048))
KEY=$(printf '%0128x' 7)
# setup BINARY DIR SUFFIX: a daemon of BINARY in DIR with every device; prints its devices.
setup() {
  local U=$1 D=$2 X=$3 devs="lin ij ib cry" dev P
  mkdir -p "$D"
  export UDM_SOCKET=$D/control
  "$U" daemon --socket "$D/control" --nbd-socket "$D/udm.sock" --no-fuse >/dev/null 2>"$D/udm.log" &
  for _ in $(seq 100); do [ -S "$D/udm.sock" ] && [ -S "$D/control" ] && break; sleep 0.1; done
  # Backing files: the data size plus room for superblock, journal and tags.
  for d in lin ij ib cry ac; do truncate -s $((SIZE + SIZE / 8 + 16))M "$D/$d.img"; done
  exec 3>&1 1>&2
  "$U" create lin --table "0 $SECT linear $D/lin.img 0"
  "$U" create cry --table "0 $SECT crypt aes-xts-plain64 $KEY 0 $D/cry.img 0"
  for m in J B; do
    dev=i$(echo $m | tr JB jb)
    "$U" integrity format -q --no-wipe $([ $m = B ] && echo -B) "$D/$dev.img"
    "$U" integrity open $([ $m = B ] && echo -B) "$D/$dev.img" "$dev"
  done
  # Authenticated crypt, when the crypt target takes integrity tags.
  if "$U" integrity format -q --no-wipe -t 28 --integrity none "$D/ac.img" 2>/dev/null &&
     P=$("$U" integrity dump "$D/ac.img" | awk '/provided_data_sectors/{print $2}') &&
     "$U" create acd --table "0 $P integrity $D/ac.img 0 28 J 0" 2>/dev/null &&
     "$U" create ac --table "0 $P crypt capi:gcm(aes)-random $(printf '%064x' 9) 0 /dev/mapper/acd 0 1 integrity:28:aead" 2>/dev/null; then
    devs="$devs ac"
  else
    echo "(authenticated crypt not available in $U: column omitted)" >&2
  fi
  for d in $devs; do echo "$d$X" >&3; done
} </dev/null
DEVS=$(setup "$UDM" "$W" "")
[ -n "${BASE_BIN:-}" ] && DEVS="$DEVS $(setup "$BASE_BIN" "$W/base" "@base")"
# setup ran in a subshell: find the daemons again.
DPID[new]=$(pgrep -f -- "--socket $W/control " | head -1)
SOCK[new]=$W/udm.sock
if [ -n "${BASE_BIN:-}" ]; then
  DPID[base]=$(pgrep -f -- "--socket $W/base/control " | head -1)
  SOCK[base]=$W/base/udm.sock
fi
if [ -n "${DEVS_ONLY:-}" ]; then
  keep=
  for d in $DEVS; do for o in $DEVS_ONLY; do [ "${d%@base}" = "$o" ] && keep="$keep $d"; done; done
  DEVS=$keep
fi
DEVS=$(echo $DEVS)
uri() { local x=new; [[ $1 == *@base ]] && x=base; echo "nbd+unix:///${1%@base}?socket=${SOCK[$x]}"; }
img() { if [[ $1 == *@base ]]; then echo "$W/base/${1%@base}.img"; else echo "$W/$1.img"; fi; }
pid() { local x=new; [[ $1 == *@base ]] && x=base; echo "${DPID[$x]}"; }
# Fill every device once so reads check real tags.
for d in $DEVS; do
  fio --name=fill --ioengine=nbd --uri="$(uri $d)" --rw=write --bs=1m \
    --iodepth=8 --size=$((SIZE - 8))m --output-format=json >/dev/null 2>&1
done

# Daemon CPU time so far, in clock ticks (utime + stime of every thread).
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
run() { # export rw bs depth [sync] -> "MiB/s daemon-CPU-seconds-per-GiB"
  local t0 t1 out
  # Page the backing file in first: on a shared machine builds evict it within seconds,
  # and a peer whose file was evicted would measure the disk instead.
  cat "$(img $1)" >/dev/null
  # With "sync": one pass over the device ended by a flush (inside fio's timing), after a
  # sync of the backing file so no pass pays for an earlier one's writeback.
  local mode=(--time_based --runtime=$RT)
  if [ "${5:-}" = sync ]; then
    sync -f "$(img $1)"
    mode=(--end_fsync=1)
  fi
  local p; p=$(pid $1)
  t0=$(ticks $p)
  out=$(fio --name=j --ioengine=nbd --uri="$(uri $1)" --rw=$2 --bs=$3 \
    --iodepth=$4 --size=$((SIZE - 8))m "${mode[@]}" --output-format=json 2>/dev/null)
  t1=$(ticks $p)
  echo "$out" | python3 -c 'import json,sys; t=sys.stdin.read(); d=json.loads(t[t.index("{"):]); j=d["jobs"][0]
b=j["read"]["io_bytes"]+j["write"]["io_bytes"]; bw=(j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20
print(round(bw, 1), round((int(sys.argv[1]))/int(sys.argv[2])/max(b/2**30, 1e-9), 2))' $((t1 - t0)) "$(getconf CLK_TCK)"
}
echo "== fio over NBD, ${SIZE} MiB devices, MiB/s, median of 3 interleaved rounds; load: $(cut -d' ' -f1-3 /proc/loadavg)"
JOBS=${JOBS:-randread 4k 16;randwrite 4k 16;read 1m 8;write 1m 8;write 1m 8 sync}
IFS=';' read -r -a JOBL <<<"$JOBS"
declare -A R C
for round in 1 2 3; do
  for job in "${JOBL[@]}"; do
    for d in $DEVS; do
      set -- $(run $d $job)
      R["$job|$d"]="${R["$job|$d"]:-} $1"
      C["$job|$d"]="${C["$job|$d"]:-} $2"
    done
  done
done
med() { echo $1 | tr ' ' '\n' | sort -n | sed -n 2p; }
table() { # array-name title
  local -n A=$1
  echo "-- $2"
  printf '%-22s' job; for d in $DEVS; do printf '%10s' $d; done; for d in $DEVS; do [ $d = lin ] || printf '%14s' "$d/lin"; done; echo
  for job in "${JOBL[@]}"; do
    set -- $job
    printf '%-22s' "$1 $2 qd$3${4:+ +fsync}"
    meds=()
    for d in $DEVS; do
      m=$(med "${A["$job|$d"]}")
      meds+=("$m"); printf '%10s' "$m"
    done
    for i in "${!meds[@]}"; do
      [ $i -eq 0 ] && continue
      python3 -c "print(f'{${meds[$i]}/max(${meds[0]},0.01):14.2f}', end='')"
    done
    echo
  done
}
table R "MiB/s (ratios: higher is better)"
table C "daemon CPU seconds per GiB moved (ratios: lower is better)"
# The time-based J-mode write against the durable linear (both jobs run).
W1="write 1m 8"; WS="write 1m 8 sync"
if [[ ";$JOBS;" == *";$W1;"* && ";$JOBS;" == *";$WS;"* && " $DEVS " == *" lin "* ]]; then
  ld=$(med "${R["$WS|lin"]}")
  for d in $DEVS; do
    [[ ${d%@base} == ij ]] || continue
    python3 -c "print(f'$d write 1m qd8 (time-based) / lin write 1m qd8 +fsync: {$(med "${R["$W1|$d"]}")/max($ld,0.01):.2f}')"
  done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
