#!/usr/bin/env bash
# bench/snapshot.sh — classic snapshots side by side with linear and with qemu's qcow2 overlay,
# in one run, all driven over NBD by fio's nbd engine (one connection, 64 KiB, iodepth 16):
#   origin writes:  one sequential pass over a linear device, then over snapshot-origin with
#                   0, 1 and 4 persistent snapshots (every chunk's first write copies it into
#                   each snapshot's COW first), all on the same origin file;
#   snapshot reads: a pass over the 1-snapshot COW's snapshot (every chunk now in the COW);
#   merge:          snapshot-merge of that COW back into the origin, timed until the status
#                   counts down, next to the block copier (copy_speed) copying the same size;
#   qemu:           qemu-nbd over a qcow2 overlay on a raw base of the same size (writes
#                   allocate in the overlay, the base stays the "snapshot"), a read pass over
#                   it, and `qemu-img commit` as its merge.
# Prints MiB/s and the ratios the snapshot issue aims at. Not part of CI; no root needed.
#
#   bench/snapshot.sh [SIZE_MIB] [CHUNK_SECTORS]   (defaults 256, 8 = LVM's 4 KiB; UDM_BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
CHUNK=${2:-8}
for t in fio qemu-img qemu-nbd python3; do command -v $t >/dev/null || { echo "need $t"; exit 1; }; done
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${UDM_BIN:-}" ]; then cargo build --release -q -p udm; fi
cargo build --release -q -p udm-core --example copy_speed
UDM=${UDM_BIN:-$TARGET/release/udm}
W=$(mktemp -d "${TMPDIR:-/tmp}/udm-snapshot-bench.XXXXXX")
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
SECT=$((SIZE << 11))
COWB=$(((SIZE + SIZE / 16 + 4) << 20)) # data + exception areas + header, with room to spare
head -c $((SIZE << 20)) /dev/urandom >"$W/origin.img"
cp "$W/origin.img" "$W/base.raw"
for c in s1 s4a s4b s4c s4d; do truncate -s $COWB "$W/$c.cow"; done

"$UDM" daemon --socket "$W/ctl" --nbd-socket "$W/nbd.sock" --no-fuse 2>"$W/udm.log" &
for _ in $(seq 100); do [ -S "$W/ctl" ] && [ -S "$W/nbd.sock" ] && break; sleep 0.1; done
u() { UDM_SOCKET=$W/ctl "$UDM" "$@"; }
mk() { u create "$1" --table "$2" >/dev/null; }
now() { date +%s.%N; }
mibs() { python3 -c "print(f'{$SIZE / ($2 - $1):.1f}')"; }
# One fio pass over SIZE MiB; prints MiB/s.
pass() { # uri rw   (after a sync, so no pass pays for the previous one's writeback)
  sync -f "$W/origin.img"
  fio --name=j --ioengine=nbd --uri="$1" --rw="$2" --bs=64k --iodepth=16 --size=${SIZE}m \
    --output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read(); d = json.loads(t[t.index("{"):])["jobs"][0]
s = d["read"] if d["read"]["io_bytes"] else d["write"]
print("%.1f" % (s["bw_bytes"] / 2**20))'
}
uri() { echo "nbd+unix:///$1?socket=$W/nbd.sock"; }
O=$W/origin.img

mk lin "0 $SECT linear $O 0"
LIN_W=$(pass "$(uri lin)" write)
LIN_R=$(pass "$(uri lin)" read)
u remove lin
mk o0 "0 $SECT snapshot-origin $O"
O0=$(pass "$(uri o0)" write)
u remove o0
mk s1 "0 $SECT snapshot $O $W/s1.cow P $CHUNK"
mk o1 "0 $SECT snapshot-origin $O"
O1=$(pass "$(uri o1)" write)
u remove o1
SR=$(pass "$(uri s1)" read)
u remove s1
for c in s4a s4b s4c s4d; do mk $c "0 $SECT snapshot $O $W/$c.cow P $CHUNK"; done
mk o4 "0 $SECT snapshot-origin $O"
O4=$(pass "$(uri o4)" write)
u remove o4
for c in s4a s4b s4c s4d; do u remove $c; rm -f "$W/$c.cow"; done

# Merge the 1-snapshot COW (SIZE MiB of exceptions) back into the origin.
sync -f "$W/origin.img"
t0=$(now)
mk m "0 $SECT snapshot-merge $O $W/s1.cow P $CHUNK"
while :; do
  read -r a m < <(u status m | awk '{split($4, x, "/"); print x[1], $5}')
  [ "$a" = "$m" ] && break
  sleep 0.05
done
t1=$(now)
MERGE=$(mibs "$t0" "$t1")
u remove m
rm -f "$W/s1.cow"

# The block copier on the same amount of data (file to file, page cache warm). Like
# bench/copier.sh it never syncs; the merge must flush the origin before it clears
# exceptions, so the copier is also timed with one fdatasync of its output at the end.
truncate -s $((SIZE << 20)) "$W/copy.out"
CP_GIB=$("$TARGET/release/examples/copy_speed" "$O" "$W/copy.out" 128 16 | awk '{print $4}')
COPIER=$(python3 -c "print(f'{$CP_GIB * 1024:.1f}')")
rm -f "$W/copy.out"
sync -f "$O"
truncate -s $((SIZE << 20)) "$W/copy.out"
t0=$(now)
"$TARGET/release/examples/copy_speed" "$O" "$W/copy.out" 128 16 >/dev/null
python3 -c "import os; f = os.open('$W/copy.out', os.O_RDWR); os.fdatasync(f)"
t1=$(now)
COPIER_SYNC=$(mibs "$t0" "$t1")
rm -f "$W/copy.out"

# qemu: a qcow2 overlay (64 KiB clusters, its default) on the raw base.
qemu-img create -q -f qcow2 -b "$W/base.raw" -F raw "$W/top.qcow2"
qemu-nbd -k "$W/qemu.sock" -f qcow2 -t --cache=writeback --aio=threads "$W/top.qcow2" &
QPID=$!
for _ in $(seq 100); do [ -S "$W/qemu.sock" ] && break; sleep 0.1; done
Q="nbd+unix:///?socket=$W/qemu.sock"
QW=$(pass "$Q" write)
QR=$(pass "$Q" read)
kill $QPID
wait $QPID 2>/dev/null || true
t0=$(now)
qemu-img commit -q "$W/top.qcow2"
t1=$(now)
QM=$(mibs "$t0" "$t1")

r() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "== snapshot bench: ${SIZE} MiB, chunk ${CHUNK} sectors, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %10s %10s\n' "work (fio nbd, 64k qd16)" "MiB/s" "ratio"
printf '%-34s %10s %10s\n' "linear write" "$LIN_W" "1.00"
printf '%-34s %10s %10s\n' "origin write, 0 snapshots" "$O0" "$(r "$O0" "$LIN_W")"
printf '%-34s %10s %10s\n' "origin write, 1 snapshot" "$O1" "$(r "$O1" "$LIN_W")"
printf '%-34s %10s %10s\n' "origin write, 4 snapshots" "$O4" "$(r "$O4" "$LIN_W")"
printf '%-34s %10s %10s\n' "qemu-nbd qcow2 overlay write" "$QW" "$(r "$QW" "$LIN_W")"
printf '%-34s %10s %10s\n' "linear read" "$LIN_R" "1.00"
printf '%-34s %10s %10s\n' "snapshot read (all in COW)" "$SR" "$(r "$SR" "$LIN_R")"
printf '%-34s %10s %10s\n' "qemu-nbd qcow2 overlay read" "$QR" "$(r "$QR" "$LIN_R")"
printf '%-34s %10s %10s\n' "block copier (128k x 16)" "$COPIER" "1.00"
printf '%-34s %10s %10s\n' "block copier + fdatasync" "$COPIER_SYNC" "$(r "$COPIER_SYNC" "$COPIER")"
printf '%-34s %10s %10s\n' "snapshot-merge" "$MERGE" "$(r "$MERGE" "$COPIER")"
printf '%-34s %10s %10s\n' "qemu-img commit" "$QM" "$(r "$QM" "$COPIER")"
echo "aims: origin write 1 snapshot >= 0.5x linear: $(r "$O1" "$LIN_W");" \
  "merge >= copier/2: $(r "$MERGE" "$COPIER")x copier ($(r "$MERGE" "$COPIER_SYNC")x copier+fdatasync);" \
  "4 vs 1 snapshot cost (sub-linear if < 4): $(python3 -c "print(f'{(1/$O4 - 1/$O0) / max(1/$O1 - 1/$O0, 1e-9):.2f}')")"
