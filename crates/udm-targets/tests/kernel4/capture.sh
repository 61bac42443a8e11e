#!/usr/bin/env bash
# Record the real kernel's answers to full.steps (refvm, kernel 6.1) as the goldens in
# tests/golden/kernel/targets4/: full.tsv (one record per case) and images.txt (cksum of
# both disks afterwards). ~1 min under TCG.   capture.sh [--kernel 6.1]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
OUT=$ROOT/tests/golden/kernel/targets4
RUN=${REFVM_RUN:-/work/shared/refvm/run.sh}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir "$W/share"
python3 "$HERE/mkimages.py" "$W" "$W/share"
cp "$HERE/steps.sh" "$HERE/full.steps" "$W/share/"
REFVM_QUIET_TCG=1 "$RUN" --timeout 600 --disk "$W/a.img" --disk "$W/b.img" --share "$W/share" \
  -- 'bash ./steps.sh full.steps full.tsv; uname -r > kver'
mkdir -p "$OUT"
cp "$W/share/full.tsv" "$OUT/full.tsv"
{ echo "kernel $(cat "$W/share/kver")"
  echo "a.img $(cksum < "$W/a.img")"; echo "b.img $(cksum < "$W/b.img")"; } > "$OUT/images.txt"
echo "capture.sh: $(wc -l < "$OUT/full.tsv") cases in $OUT"
