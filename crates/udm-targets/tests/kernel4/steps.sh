#!/bin/bash
# Runs INSIDE refvm: interprets a steps file (the same file the udm side of
# crates/udm-targets/tests/kernel_targets4.rs runs against udm) on the real kernel and
# writes one record per case to OUT:  name<TAB>rc<TAB>stdout<TAB>kernel log
# (stdout and log with \ and newlines escaped; read data as "cksum:<crc> <len>").
#   bash steps.sh STEPS OUT      disks: vda = $A, vdb = $B; pattern data in ./pat.bin
set -u
STEPS=$1 OUT=$2
A=/dev/vda B=/dev/vdb
: > "$OUT"
modprobe -a dm-delay dm-flakey dm-dust dm-log-writes dm-unstripe dm-switch dm-ebs
dn() { printf '%d:%d' 0x$(stat -c %t "$1") 0x$(stat -c %T "$1"); }
DA=$(dn $A) DB=$(dn $B)
esc() { sed -z 's/\\/\\\\/g; s/\n/\\n/g; s/\t/\\t/g' "$1"; }
subst() { sed -e "s/\b$DA\b/\$A/g; s/\b$DB\b/\$B/g"; }
# What a loaded VM's kernel logs on its own (timer, clock, scheduler and stall notices) is
# not part of any step's output.
NOISE='/^(hrtimer|clocksource|sched|rcu|watchdog|hpet|INFO|perf):? /d'
rec() { # name rc outfile mode(text|bin)
  local out
  if [ "$4" = bin ]; then out="cksum:$(cksum < "$3")"; else out=$(esc "$3" | subst); fi
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$out" "$(dmesg -t | sed -E "$NOISE" | sed 's/^device-mapper: //' > /tmp/dm; esc /tmp/dm | subst)" >> "$OUT"
}
run() { # name mode cmd
  local n=$1 mode=$2; shift 2
  dmesg -C
  eval "$@" > /tmp/o 2> /tmp/e < /dev/null
  rec "$n" $? /tmp/o "$mode"
}
x() { echo "$1" | sed -e "s#\\\$A#$A#g; s#\\\$B#$B#g"; }
while read -r op a1 rest; do
  case $op in
    ''|'#'*) continue ;;
    tbl) t=$(x "$rest")
         run "$a1.create" text "dmsetup create $a1 --table '$t'"
         run "$a1.table" text "dmsetup table $a1"
         run "$a1.status" text "dmsetup status $a1"
         dmsetup remove "$a1" 2>/dev/null ;;
    create) dmsetup create "$a1" --table "$(x "$rest")" ;;
    remove) dmsetup remove "$a1" ;;
    targets) run "$a1" text "dmsetup targets | grep -E '^(delay|flakey|dust|log-writes|unstriped|switch|ebs) '" ;;
    msg) set -- $rest; d=$1; shift; run "$a1" text "dmsetup message $d 0 $*" ;;
    status) run "$a1" text "dmsetup status $rest" ;;
    table) run "$a1" text "dmsetup table $rest" ;;
    rd) set -- $rest; run "$a1" bin "dd if=/dev/mapper/$1 bs=512 skip=$2 count=$3 iflag=direct status=none" ;;
    wr) set -- $rest; fl=${5:+,$5}
        run "$a1" text "dd if=./pat.bin of=/dev/mapper/$1 bs=512 skip=$4 seek=$2 count=$3 oflag=direct$fl conv=notrunc status=none" ;;
    flush) run "$a1" text "dd if=/dev/null of=/dev/mapper/$rest conv=fsync status=none" ;;
    bgread) set -- $a1 $rest; dd if=/dev/mapper/$1 of=/dev/null bs=512 skip=$2 count=$3 iflag=direct status=none & ;;
    sleep) sleep "$((a1 / 1000)).$(printf '%03d' $((a1 % 1000)))" ;;
    wait) wait ;;
    *) echo "steps.sh: unknown step $op" >&2; exit 2 ;;
  esac
done < "$STEPS"
sync
