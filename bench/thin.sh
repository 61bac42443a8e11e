#!/usr/bin/env bash
# bench/thin.sh — thin provisioning side by side with linear and with qemu's qcow2, in one run,
# all driven over NBD by fio's nbd engine (one connection, 64 KiB, iodepth 16, one pass each):
#   linear:        a write and a read pass over a linear device on a fully written file;
#   thin:          first writes (every block provisioned on the way, zeroing on as by default),
#                  then a write and a read pass over the now provisioned thin device, then a
#                  write pass over a snapshot of it (every block's sharing broken);
#   qemu:          qemu-nbd over a fresh qcow2 (64 KiB clusters) doing the same: first writes,
#                  provisioned writes and reads, then writes after an internal snapshot
#                  (`qemu-img snapshot -c`, every cluster copied on write);
#   1,000 thins:   `udm message pool 0 "create_thin N"` then `udm create` of a thin device on it,
#                  1,000 times in the same pool, timed apart;
#   tools:         `udm thin thin_check` / `thin_dump` next to the real thin_check / thin_dump
#                  on the same large metadata (made by the real thin_restore from XML: MAPPINGS
#                  mappings over 4 devices, two of them snapshots sharing all their blocks),
#                  best of 3, and whether both dumps are the same bytes.
# Prints MiB/s, seconds and the ratios the thin issue aims at. Not part of CI; no root needed.
#
#   bench/thin.sh [SIZE_MIB] [BLOCK_SECTORS] [MAPPINGS] [THINS] [REPEATS]
#       (defaults 256, 128 = LVM's 64 KiB, 250000, 1000, 3 rounds (median shown) of the fio
#        jobs; UDM_BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
BLOCK=${2:-128}
MAPPINGS=${3:-250000}
THINS=${4:-1000}
REPS=${5:-3}
for t in fio qemu-img qemu-nbd python3 thin_check thin_dump thin_restore; do
  command -v $t >/dev/null || { echo "need $t"; exit 1; }
done
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
UDM=${UDM_BIN:-$TARGET/release/udm}
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-thin-bench.XXXXXX")
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
SECT=$((SIZE << 11))
# The linear file and the pool's data device (the thin device and its broken-away snapshot)
# are written through (not sparse), so neither side pays for file system allocation, and
# written with O_DIRECT, so their page cache starts empty as the new qcow2's does: a file
# filled through the page cache by `head` keeps the small folios of head's writes, and every
# later 64 KiB write to it pays per 4 KiB page (mark_buffer_dirty and filemap_get_entry were
# 30 % of the daemon's provisioned-write profile that way, and absent from qemu-nbd's).
head -c $((SIZE << 20)) /dev/urandom |
  dd of="$W/lin.img" bs=1M iflag=fullblock oflag=direct status=none
dd if=/dev/zero of="$W/data.img" bs=1M count=$((2 * SIZE + 64)) oflag=direct status=none
truncate -s 64M "$W/meta.img"

export UDM_STATE_DIR=$W/state # the daemon's saved state stays in the scratch dir
"$UDM" daemon --socket "$W/ctl" --nbd-socket "$W/nbd.sock" --no-fuse 2>"$W/udm.log" &
DPID=$!
for _ in $(seq 100); do [ -S "$W/ctl" ] && [ -S "$W/nbd.sock" ] && break; sleep 0.1; done
u() { UDM_SOCKET=$W/ctl "$UDM" "$@"; }
mk() { u create "$1" --table "$2" >/dev/null; }
now() { date +%s.%N; }
# CPU seconds (user + system, every thread, live or ended) a process has used so far.
cpu() { python3 -c "import os, sys; f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split(); print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))" "$1"; }
# One fio pass over SIZE MiB; prints MiB/s and the CPU seconds the server (pid) used for it.
pass() { # uri rw server-pid   (after a sync, so no pass pays for the previous one's writeback)
  sync -f "$W/meta.img"
  local c0 bw c1
  c0=$(cpu "$3")
  bw=$(fio --name=j --ioengine=nbd --uri="$1" --rw="$2" --bs=64k --iodepth=16 --size=${SIZE}m \
    --output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read(); d = json.loads(t[t.index("{"):])["jobs"][0]
s = d["read"] if d["read"]["io_bytes"] else d["write"]
print("%.1f" % (s["bw_bytes"] / 2**20))')
  c1=$(cpu "$3")
  echo "$bw $(python3 -c "print(f'{$c1 - $c0:.2f}')")"
}
uri() { echo "nbd+unix:///$1?socket=$W/nbd.sock"; }

qnbd() { # start qemu-nbd on the qcow2
  qemu-nbd -k "$W/q.sock" -f qcow2 -t --cache=writeback --aio=threads "$W/q.qcow2" &
  QPID=$!
  for _ in $(seq 100); do [ -S "$W/q.sock" ] && break; sleep 0.1; done
}
qstop() { kill $QPID; wait $QPID 2>/dev/null || true; rm -f "$W/q.sock"; }
QURI="nbd+unix:///?socket=$W/q.sock"
declare -A RES # job -> MiB/s of every round, space separated
declare -A CPU # job -> server CPU seconds of every round
run() { # job uri rw server-pid
  local o
  o=$(pass "$2" "$3" "$4")
  RES[$1]="${RES[$1]:-} ${o% *}"
  CPU[$1]="${CPU[$1]:-} ${o#* }"
}

mk lin "0 $SECT linear $W/lin.img 0"
mk pool "0 $(((2 * SIZE + 64) << 11)) thin-pool $W/meta.img $W/data.img $BLOCK 1024"
# Rounds, each with a fresh thin device (and snapshot) and a fresh qcow2; within a round
# every udm job runs right next to its qcow2 peer, so background load hits both alike; the
# median round is shown. qemu: first writes allocate clusters; after an internal snapshot
# (`qemu-img snapshot -c`, qemu-nbd stopped for it) every cluster is copied on write.
for r in $(seq "$REPS"); do
  rm -f "$W/q.qcow2"
  qemu-img create -q -f qcow2 "$W/q.qcow2" ${SIZE}M
  qnbd
  u message pool 0 "create_thin 0"
  mk t0 "0 $SECT thin /dev/mapper/pool 0"
  run lin_w "$(uri lin)" write $DPID
  run t_first "$(uri t0)" write $DPID
  run q_first "$QURI" write $QPID
  run t_w "$(uri t0)" write $DPID
  run q_w "$QURI" write $QPID
  run lin_r "$(uri lin)" read $DPID
  run t_r "$(uri t0)" read $DPID
  run q_r "$QURI" read $QPID
  qstop
  qemu-img snapshot -c s1 "$W/q.qcow2"
  qnbd
  u suspend t0
  u message pool 0 "create_snap 1 0"
  u resume t0
  mk s1 "0 $SECT thin /dev/mapper/pool 1"
  run t_snap "$(uri s1)" write $DPID
  run q_snap "$QURI" write $QPID
  qstop
  u remove s1
  u remove t0
  u message pool 0 "delete 1"
  u message pool 0 "delete 0"
done
u remove lin
med() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" ${RES[$1]}; }
medc() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" ${CPU[$1]}; }
LIN_W=$(med lin_w); LIN_R=$(med lin_r)
T_FIRST=$(med t_first); T_W=$(med t_w); T_R=$(med t_r); T_SNAP=$(med t_snap)
Q_FIRST=$(med q_first); Q_W=$(med q_w); Q_R=$(med q_r); Q_SNAP=$(med q_snap)
rm -f "$W/q.qcow2" "$W/lin.img"

# 1,000 thin devices in the same pool: the messages, then the activations.
t0=$(now)
for i in $(seq 2 $((THINS + 1))); do u message pool 0 "create_thin $i"; done
t1=$(now)
for i in $(seq 2 $((THINS + 1))); do mk "v$i" "0 2097152 thin /dev/mapper/pool $i"; done
t2=$(now)
N_CREATE=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
N_ACT=$(python3 -c "print(f'{$t2 - $t1:.2f}')")
N_LIVE=$(u ls | grep -c '^v' || true)
kill $DPID
wait $DPID 2>/dev/null || true
rm -f "$W/data.img"


# Large metadata: MAPPINGS mappings, devices 0 and 1 with their own scattered blocks, 2 and 3
# snapshots of them (every block shared), made by the real thin_restore.
python3 - "$MAPPINGS" "$BLOCK" >"$W/big.xml" <<'PY'
import random, sys
n, bs = int(sys.argv[1]), int(sys.argv[2])
per = n // 4
rng = random.Random(20261205)
blocks = rng.sample(range(2 * per * 2), 2 * per)  # half the data blocks used, scattered
print(f'<superblock uuid="" time="1" transaction="4" flags="0" version="2" '
      f'data_block_size="{bs}" nr_data_blocks="{4 * per}">')
for dev in range(4):
    own = blocks[(dev % 2) * per:(dev % 2 + 1) * per]
    print(f'  <device dev_id="{dev}" mapped_blocks="{per}" transaction="{dev}" '
          f'creation_time="{dev // 2}" snap_time="1">')
    for o, d in enumerate(own):
        print(f'    <single_mapping origin_block="{o}" data_block="{d}" time="0"/>')
    print('  </device>')
print('</superblock>')
PY
truncate -s 256M "$W/big.meta"
thin_restore -q -i "$W/big.xml" -o "$W/big.meta" >/dev/null
rm -f "$W/big.xml"
best() { # command… -> best wall seconds of 3 (output discarded; a failure stops the bench)
  local b=""
  for _ in 1 2 3; do
    local a z
    a=$(now)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    z=$(now)
    b=$(python3 -c "print(f'{min($z - $a, ${b:-1e9}):.3f}')")
  done
  echo "$b"
}
RC_CHECK=$(best thin_check "$W/big.meta")
UC_CHECK=$(best "$UDM" thin thin_check "$W/big.meta")
RC_DUMP=$(best thin_dump "$W/big.meta")
UC_DUMP=$(best "$UDM" thin thin_dump "$W/big.meta")
thin_dump "$W/big.meta" >"$W/real.xml"
"$UDM" thin thin_dump "$W/big.meta" >"$W/udm.xml"
SAME=$(cmp -s "$W/real.xml" "$W/udm.xml" && echo yes || echo NO)


r() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "== thin bench: ${SIZE} MiB, median of $REPS rounds, block ${BLOCK} sectors, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-36s %10s %10s %10s\n' "work (fio nbd, 64k qd16)" "MiB/s" "vs linear" "udm/qcow2"
printf '%-36s %10s %10s\n' "linear write" "$LIN_W" "1.00"
printf '%-36s %10s %10s %10s\n' "thin write, provisioned" "$T_W" "$(r "$T_W" "$LIN_W")" "$(r "$T_W" "$Q_W")"
printf '%-36s %10s %10s %10s\n' "thin first writes (provisioning)" "$T_FIRST" "$(r "$T_FIRST" "$LIN_W")" "$(r "$T_FIRST" "$Q_FIRST")"
printf '%-36s %10s %10s %10s\n' "thin snapshot writes (break sharing)" "$T_SNAP" "$(r "$T_SNAP" "$LIN_W")" "$(r "$T_SNAP" "$Q_SNAP")"
printf '%-36s %10s %10s\n' "qcow2 write, allocated" "$Q_W" "$(r "$Q_W" "$LIN_W")"
printf '%-36s %10s %10s\n' "qcow2 first writes" "$Q_FIRST" "$(r "$Q_FIRST" "$LIN_W")"
printf '%-36s %10s %10s\n' "qcow2 writes after snapshot -c" "$Q_SNAP" "$(r "$Q_SNAP" "$LIN_W")"
printf '%-36s %10s %10s\n' "linear read" "$LIN_R" "1.00"
printf '%-36s %10s %10s %10s\n' "thin read, provisioned" "$T_R" "$(r "$T_R" "$LIN_R")" "$(r "$T_R" "$Q_R")"
printf '%-36s %10s %10s\n' "qcow2 read, allocated" "$Q_R" "$(r "$Q_R" "$LIN_R")"
echo "rounds (udm jobs: the udm daemon's CPU; q_*: qemu-nbd's):"
for k in lin_w t_w t_first t_snap q_w q_first q_snap lin_r t_r q_r; do
  printf '  %-8s MiB/s:%s  server CPU s:%s (median %s)\n' "$k" "${RES[$k]}" "${CPU[$k]}" "$(medc $k)"
done
echo "$THINS thins in one pool: create_thin messages ${N_CREATE} s, activations ${N_ACT} s ($N_LIVE live)"
printf '%-36s %10s %10s %10s\n' "metadata: $MAPPINGS mappings" "real s" "udm s" "real/udm"
printf '%-36s %10s %10s %10s\n' "thin_check" "$RC_CHECK" "$UC_CHECK" "$(r "$RC_CHECK" "$UC_CHECK")"
printf '%-36s %10s %10s %10s\n' "thin_dump (identical XML: $SAME)" "$RC_DUMP" "$UC_DUMP" "$(r "$RC_DUMP" "$UC_DUMP")"
echo "aims: provisioned thin >= 0.9x linear: $(r "$T_W" "$LIN_W");" \
  "first writes >= 0.5x linear: $(r "$T_FIRST" "$LIN_W");" \
  "faster than qcow2 on every job (udm/qcow2 > 1): $(r "$T_W" "$Q_W") $(r "$T_FIRST" "$Q_FIRST") $(r "$T_SNAP" "$Q_SNAP");" \
  "tools at least as fast (real/udm >= 1): $(r "$RC_CHECK" "$UC_CHECK") $(r "$RC_DUMP" "$UC_DUMP")"
