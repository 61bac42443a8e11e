#!/bin/bash
# Runs INSIDE refvm (started by crates/udm/tests/logwrites.rs). Disks: vda = data (16 MiB),
# vdb = its log, vdc = ext4 data (64 MiB), vdd = its log; all start zeroed.
# 1) a fixed bio workload on dm-log-writes (writes, flush, marks, FUA, discard);
# 2) ext4 made on dm-log-writes, files written with fsyncs, marks "mkfs" and "done".
set -eu
D=/dev/vda L=/dev/vdb E=/dev/vdc EL=/dev/vdd
modprobe dm-log-writes
dmsetup create lw --table "0 $(blockdev --getsz $D) log-writes $D $L"
dmsetup status lw > st0
dd if=pat.bin of=/dev/mapper/lw bs=4096 seek=1 count=2 oflag=direct status=none
dd if=pat.bin of=/dev/mapper/lw bs=512 skip=9 seek=10 count=1 oflag=direct status=none
dd if=/dev/null of=/dev/mapper/lw conv=fsync status=none
dmsetup message lw 0 mark one
dd if=pat.bin of=/dev/mapper/lw bs=4096 skip=5 seek=5 count=1 oflag=direct,dsync status=none
blkdiscard -o 1048576 -l 65536 /dev/mapper/lw
dd if=pat.bin of=/dev/mapper/lw bs=1024 skip=3 seek=1500 count=1 oflag=direct status=none
dmsetup message lw 0 mark two
dmsetup status lw > st1
dmsetup table lw | sed "s/$(printf '%d:%d' 0x$(stat -c %t $D) 0x$(stat -c %T $D))/\$D/; s/$(printf '%d:%d' 0x$(stat -c %t $L) 0x$(stat -c %T $L))/\$L/" > table
dmsetup remove lw

dmsetup create lwe --table "0 $(blockdev --getsz $E) log-writes $E $EL"
mkfs.ext4 -q -F -b 4096 /dev/mapper/lwe
dmsetup message lwe 0 mark mkfs
mkdir -p /mnt/t
mount -o nodiscard /dev/mapper/lwe /mnt/t
for i in 1 2 3 4 5 6; do
  dd if=pat.bin of=/mnt/t/f$i bs=4096 count=$((i * 3)) skip=$i conv=fsync status=none
done
mkdir /mnt/t/d
mv /mnt/t/f2 /mnt/t/d/g2
rm /mnt/t/f3
sync
dd if=pat.bin of=/mnt/t/d/g2 bs=4096 seek=2 count=1 conv=notrunc,fsync status=none
umount /mnt/t
dmsetup message lwe 0 mark done
dmsetup remove lwe
sync
