#!/bin/bash
# tests/kernel/guest.sh - runs INSIDE refvm (started by tests/kernel/capture.sh).
#
#   bash guest.sh CASES.tsv OUTDIR
#
# CASES.tsv: one case a line, "<case-name><TAB><shell command>", executed in
# order by `eval` in THIS shell (so `exec 3</dev/mapper/lin` keeps fd 3 open
# for the following cases).  For each case it writes, byte-exact:
#   OUTDIR/<case>.out    stdout
#   OUTDIR/<case>.err    stderr
#   OUTDIR/<case>.rc     exit status as decimal + "\n"
#   OUTDIR/<case>.dmesg  kernel log lines produced during the case (`dmesg -t`,
#                        i.e. without timestamps; the log is cleared before
#                        every case with `dmesg -C`); empty = no kernel message
# stdin of every case is /dev/null (commands that need stdin pipe it in).
# A failing case never stops the run.
set -u
CASES=$1 OUT=$2
mkdir -p "$OUT"

names=() cmds=()
while IFS=$'\t' read -r name cmd || [ -n "$name" ]; do
  [ -z "$name" ] && continue
  names+=("$name"); cmds+=("$cmd")
done < "$CASES"

{
  echo "kernel: $(uname -r)"
  echo "kernel version string: $(cat /proc/version)"
  dmsetup version 2>&1 | sed 's/^/dmsetup version: /'
  dpkg-query -W -f='package: ${Package} ${Version}\n' dmsetup libdevmapper1.02.1 util-linux 2>&1
  echo "LANG=${LANG:-} LC_ALL=${LC_ALL:-} TERM=${TERM:-} DM_DISABLE_UDEV=${DM_DISABLE_UDEV:-}"
  echo "udevd running: $(pidof systemd-udevd >/dev/null && echo yes || echo no)"
  echo "disks: $(for d in /sys/block/vd*; do echo -n "${d##*/}=$(cat "$d/size")s/$(cat "$d/queue/logical_block_size")B "; done)"
} > "$OUT/environment.txt"

: > "$OUT/cases.tsv"
for i in "${!names[@]}"; do
  name=${names[$i]} cmd=${cmds[$i]}
  printf '%s\t%s\n' "$name" "$cmd" >> "$OUT/cases.tsv"
  dmesg -C
  eval "$cmd" > "$OUT/$name.out" 2> "$OUT/$name.err" < /dev/null
  rc=$?
  printf '%d\n' "$rc" > "$OUT/$name.rc"
  dmesg -t > "$OUT/$name.dmesg"
done
sync
exit 0
