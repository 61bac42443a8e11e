#!/usr/bin/env bash
# bench/crypt.sh — dm-crypt in udm: a `crypt` device (aes-xts-plain64, 512-bit key) over a
# file vs a `linear` device over the same file (the encryption overhead), udm's XTS engine on
# one core vs `openssl speed -evp aes-256-xts -bytes 4096`, and the same LUKS1 image served by
# udm, qemu-nbd (qemu's LUKS driver) and nbdkit's luks filter. Every device is read and written
# with fio over NBD (unix sockets); the file stays in the page cache, so the figures measure
# the crypto and I/O paths, not a disk. Not part of CI.
#
#   bench/crypt.sh [SIZE_MIB] [RUNTIME_SECONDS] [ROUNDS]  (defaults: 512 MiB, 8 s per fio job,
#                                                          3 rounds)
# Every device runs once per job per round (interleaved, so background load hits all alike);
# the median round is shown, with the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-512}
RT=${2:-8}
ROUNDS=${3:-3}
for t in fio cryptsetup openssl qemu-nbd nbdkit python3; do
  command -v $t >/dev/null || { echo "need $t"; exit 1; }
done
# UDM (or UDM_BIN) names a prebuilt binary to measure; without one the tree is built (and
# so is the crypt_speed example, which a prebuilt run uses as it is when present).
UDM=${UDM:-${UDM_BIN:-}}
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
[ -n "$UDM" ] || cargo build --release -q -p udm
[ -n "$UDM" ] && [ -x "$TARGET/release/examples/crypt_speed" ] ||
  cargo build --release -q -p udm-targets --example crypt_speed
UDM=${UDM:-$TARGET/release/udm}
W=$(mktemp -d /tmp/udm-crypt-bench.XXXXXX)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

echo "== one core: udm's AES-XTS engine vs OpenSSL ($(nproc) cores, $(grep -o -m1 -w vaes /proc/cpuinfo || echo no-vaes))"
"$TARGET/release/examples/crypt_speed" aes-xts-plain64 64 4096 3
openssl speed -evp aes-256-xts -bytes 4096 -seconds 3 2>/dev/null | awk '/^AES-256-XTS/{printf "openssl aes-256-xts 4096-byte blocks: %.0f MB per CPU-second (user time)\n", $2/1000}'

IMG=$W/luks1.img
truncate -s $((SIZE + 4))M "$IMG"
echo -n secret | cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file - "$IMG"
KEY=$(echo -n secret | cryptsetup luksDump --dump-volume-key -q --key-file - "$IMG" |
  awk '/MK dump:/{f=1; sub(/.*MK dump:/,"")} f{gsub(/[^0-9a-f ]/,""); printf "%s", $0}' | tr -d ' ')
OFF=$(cryptsetup luksDump "$IMG" | awk '/Payload offset/{print $3}')
SECT=$((SIZE * 2048))

export UDM_SOCKET=$W/control
"$UDM" daemon --socket "$W/control" --nbd-socket "$W/udm.sock" --no-fuse 2>"$W/udm.log" &
for _ in $(seq 100); do [ -S "$W/udm.sock" ] && [ -S "$W/control" ] && break; sleep 0.1; done
"$UDM" create lin --table "0 $SECT linear $IMG $OFF"
"$UDM" create cry --table "0 $SECT crypt aes-xts-plain64 $KEY 0 $IMG $OFF"
qemu-nbd --persistent --shared=8 --socket="$W/qemu.sock" --object secret,id=s0,data=secret \
  --image-opts "driver=luks,key-secret=s0,file.filename=$IMG" -x cry &
nbdkit --exit-with-parent -U "$W/nbdkit.sock" -e cry --filter=luks file "$IMG" passphrase=secret &
for _ in $(seq 100); do [ -S "$W/qemu.sock" ] && [ -S "$W/nbdkit.sock" ] && break; sleep 0.1; done

run() { # socket export rw bs depth -> MiB/s
  fio --name=j --ioengine=nbd --uri="nbd+unix:///$2?socket=$1" --rw=$3 --bs=$4 \
    --iodepth=$5 --size=${SIZE}m --time_based --runtime=$RT --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); d=json.loads(t[t.index("{"):]); j=d["jobs"][0]; print(round((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20))'
}
echo "== fio over NBD, ${SIZE} MiB LUKS1 volume (aes-xts-plain64, 512-bit key), MiB/s, median of $ROUNDS"
JOBS=("write 1m 16" "read 1m 16" "randread 4k 16" "randwrite 4k 16" "randread 4k 1" "randwrite 4k 1")
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for i in "${!JOBS[@]}"; do
    set -- ${JOBS[$i]}
    echo "$i $r $(run "$W/udm.sock" lin "$@") $(run "$W/udm.sock" cry "$@") $(run "$W/qemu.sock" cry "$@") $(run "$W/nbdkit.sock" cry "$@")" >>"$W/results"
  done
done
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
python3 - "$W/results" "${JOBS[@]}" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
jobs = sys.argv[2:]
print(f"{'job':<18} {'udm-linear':>10} {'udm-crypt':>9} {'qemu-nbd':>9} {'nbdkit':>9} {'crypt/lin':>9}")
for i, j in enumerate(jobs):
    rw, bs, qd = j.split()
    # the median round by crypt/linear ratio, so the two columns come from one round
    rs = sorted(([int(x) for x in r[2:]] for r in rows if int(r[0]) == i),
                key=lambda v: v[1] / max(v[0], 1))
    L, C, Q, N = rs[len(rs) // 2]
    print(f"{rw+' '+bs+' qd'+qd:<18} {L:>10} {C:>9} {Q:>9} {N:>9} {C/max(L,1):>9.2f}")
PY
