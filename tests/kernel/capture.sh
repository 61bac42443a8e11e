#!/usr/bin/env bash
# tests/kernel/capture.sh - record golden output of the REAL kernel
# device-mapper + Debian dmsetup (refvm, kernel 6.1) into tests/golden/kernel/.
#
#   tests/kernel/capture.sh [--out DIR] [--kernel 6.1|6.12] [--cases FILE] [--disks N]
#
# Host side: makes N (default two) fresh all-zero 64 MiB disk images (/dev/vda,
# /dev/vdb, ... in the guest), shares a scratch dir with the VM, runs
# tests/kernel/guest.sh over the case list (default tests/kernel/cases.tsv)
# there, then replaces the case files in the output dir (default
# tests/golden/kernel; README.md there is left alone). The crypt/verity list:
#   capture.sh --cases tests/kernel/crypt_cases.tsv --disks 4 --out tests/golden/kernel/crypt
# Needs /work/shared/refvm (REFVM_RUN overrides the run.sh path); ~1-2 min
# under TCG.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=${REFVM_RUN:-/work/shared/refvm/run.sh}
OUTDIR=$ROOT/tests/golden/kernel
KERNEL=6.1
CASES=$HERE/cases.tsv
DISKS=2
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUTDIR=$2; shift 2 ;;
    --kernel) KERNEL=$2; shift 2 ;;
    --cases) CASES=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --disks) DISKS=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "capture.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/udm-capture.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
disk_args=()
for i in $(seq 1 "$DISKS"); do
  truncate -s 64M "$WORK/d$i.img"; disk_args+=(--disk "$WORK/d$i.img")
done
mkdir "$WORK/share"
cp "$HERE/guest.sh" "$WORK/share/"
cp "$CASES" "$WORK/share/cases.tsv"

rc=0
REFVM_QUIET_TCG=1 "$RUN" --kernel "$KERNEL" --timeout 1200 \
  "${disk_args[@]}" --share "$WORK/share" \
  -- 'bash ./guest.sh cases.tsv out' || rc=$?
if [ "$rc" != 0 ] || [ ! -s "$WORK/share/out/cases.tsv" ]; then
  echo "capture.sh: refvm run failed (rc=$rc)" >&2; exit 1
fi
n_in=$(grep -c . "$CASES"); n_out=$(grep -c . "$WORK/share/out/cases.tsv")
[ "$n_in" = "$n_out" ] || { echo "capture.sh: only $n_out of $n_in cases ran" >&2; exit 1; }

mkdir -p "$OUTDIR"
find "$OUTDIR" -maxdepth 1 -type f \( -name '*.out' -o -name '*.err' -o -name '*.rc' \
  -o -name '*.dmesg' -o -name cases.tsv -o -name environment.txt \) -delete
cp "$WORK/share/out/"* "$OUTDIR/"
echo "capture.sh: $n_out cases recorded in $OUTDIR"
