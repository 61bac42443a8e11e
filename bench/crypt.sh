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
# the median round is shown, with the load average and each server's CPU-seconds per GiB
# moved (user + system time of the server process over the job, in brackets).
#   UDM_BASE=path   also serve both devices from that udm binary (a second daemon), measured
#                   in the same rounds: the base-linear / base-crypt columns and their ratio
#   ONLY="2 4"      run only these jobs (indices into the job list below, from 0)
#   PEERS=0         leave out qemu-nbd and nbdkit
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
PID_udm=$!
for _ in $(seq 100); do [ -S "$W/udm.sock" ] && [ -S "$W/control" ] && break; sleep 0.1; done
"$UDM" create lin --table "0 $SECT linear $IMG $OFF"
"$UDM" create cry --table "0 $SECT crypt aes-xts-plain64 $KEY 0 $IMG $OFF"
SERVERS="udm:lin udm:cry"
if [ -n "${UDM_BASE:-}" ]; then
  UDM_SOCKET=$W/control-base "$UDM_BASE" daemon --socket "$W/control-base" --nbd-socket "$W/base.sock" \
    --no-fuse 2>"$W/base.log" &
  PID_base=$!
  for _ in $(seq 100); do [ -S "$W/base.sock" ] && [ -S "$W/control-base" ] && break; sleep 0.1; done
  UDM_SOCKET=$W/control-base "$UDM_BASE" create lin --table "0 $SECT linear $IMG $OFF"
  UDM_SOCKET=$W/control-base "$UDM_BASE" create cry --table "0 $SECT crypt aes-xts-plain64 $KEY 0 $IMG $OFF"
  SERVERS="$SERVERS base:lin base:cry"
fi
[ "${PEERS:-1}" = 0 ] || {
SERVERS="$SERVERS qemu:cry nbdkit:cry"
qemu-nbd --persistent --shared=8 --socket="$W/qemu.sock" --object secret,id=s0,data=secret \
  --image-opts "driver=luks,key-secret=s0,file.filename=$IMG" -x cry &
PID_qemu=$!
nbdkit --foreground --exit-with-parent -U "$W/nbdkit.sock" -e cry --filter=luks file "$IMG" passphrase=secret &
PID_nbdkit=$!
for _ in $(seq 100); do [ -S "$W/qemu.sock" ] && [ -S "$W/nbdkit.sock" ] && break; sleep 0.1; done
}

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
run() { # server export rw bs depth -> "MiB/s server-CPU-s-per-GiB"
  local pid c0 out
  eval pid=\$PID_$1
  c0=$(cpu $pid)
  out=$(fio --name=j --ioengine=nbd --uri="nbd+unix:///$2?socket=$W/$1.sock" --rw=$3 --bs=$4 \
    --iodepth=$5 --size=${SIZE}m --time_based --runtime=$RT --output-format=json 2>/dev/null)
  # (fio's nbd engine prints "connected to NBD server" before the JSON)
  python3 -c 'import json,sys; t=sys.argv[1]; j=json.loads(t[t.index("{"):])["jobs"][0]
b=j["read"]["io_bytes"]+j["write"]["io_bytes"]; c=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4])
print(round((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20), round(c/max(b/2**30,1e-9),2))' \
    "$out" "$c0" "$(cpu $pid)" "$(getconf CLK_TCK)"
}
echo "== fio over NBD, ${SIZE} MiB LUKS1 volume (aes-xts-plain64, 512-bit key), MiB/s (server CPU-s/GiB), median of $ROUNDS"
JOBS=("write 1m 16" "read 1m 16" "randread 4k 16" "randwrite 4k 16" "randread 4k 1" "randwrite 4k 1")
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for i in "${!JOBS[@]}"; do
    [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $i "* ]] || continue
    set -- ${JOBS[$i]}
    line="$i $r"
    for s in $SERVERS; do line="$line $(run ${s%%:*} ${s#*:} "$@")"; done
    echo "$line" >>"$W/results"
  done
done
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
python3 - "$W/results" "$SERVERS" "${JOBS[@]}" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
names = {"udm:lin": "udm-linear", "udm:cry": "udm-crypt", "base:lin": "base-linear",
         "base:cry": "base-crypt", "qemu:cry": "qemu-nbd", "nbdkit:cry": "nbdkit"}
servers = sys.argv[2].split()
jobs = sys.argv[3:]
base = "base:lin" in servers
print(f"{'job':<18} " + " ".join(f"{names[s]:>13}" for s in servers) + f" {'crypt/lin':>9}"
      + (f" {'base c/l':>9} {'new/base crypt':>14}" if base else ""))
for i, j in enumerate(jobs):
    rw, bs, qd = j.split()
    mine = [[float(x) for x in r[2:]] for r in rows if int(r[0]) == i]
    if not mine:
        continue
    # the median round by crypt/linear ratio, so the two columns come from one round; the
    # rates shown are all from udm's median round, the base ratios are medians of their own
    def median(a, b):
        rs = sorted(mine, key=lambda v: v[2 * b] / max(v[2 * a], 1))
        return rs[len(rs) // 2]
    v = median(0, 1)
    cols = " ".join(f"{v[k]:>6.0f} ({v[k+1]:4.2f})" for k in range(0, 2 * len(servers), 2))
    line = f"{rw+' '+bs+' qd'+qd:<18} {cols} {v[2]/max(v[0],1):>9.2f}"
    if base:
        b = median(2, 3)
        nb = sorted(x[2] / max(x[6], 1) for x in mine)[len(mine) // 2]
        line += f" {b[6]/max(b[4],1):>9.2f} {nb:>14.2f}"
    print(line)
PY
