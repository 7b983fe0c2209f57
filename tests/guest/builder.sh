#!/bin/sh
# /init of the builder VM: makes the test pool on /dev/vda2 with bootenv itself, from the boot
# environment trees under /payload, then exports the pool and powers off. The host cannot load
# ZFS, so the golden test disk is made here.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export ZPOOL_IMPORT_UDEV_TIMEOUT_MS=0
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
fail() { echo "BUILDER-FAILED: $*"; poweroff -f; }
run() { echo "+ $*"; "$@" || fail "$*"; }
release=$(uname -r)
grep -v '^#' /etc/bootenv/modules | while read -r m; do
	insmod "/lib/modules/$release/$m" 2>/dev/null
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda2 ] && break; sleep 0.2; done
[ -b /dev/vda2 ] || fail "no /dev/vda2"

run zpool create -f -o ashift=12 -o cachefile=none -O mountpoint=none -O compression=lz4 \
	-O atime=off tank /dev/vda2
run bootenv prepare-pool tank
for be in $(ls /payload); do
	run bootenv --pool tank create "$be" --rootfs "/payload/$be" --label "$(cat /payload/$be/etc/bootenv-test/label)"
done
run bootenv --pool tank activate v1
run bootenv --pool tank mark-good v1
# A shared dataset outside the boot environments: the agent must never mount or touch it.
run zfs create -o mountpoint=/srv/data -o canmount=on tank/data
run bootenv --pool tank list
zfs list -r -o name,canmount,mountpoint tank
umount /run/bootenv/state 2>/dev/null
run zpool export tank
echo "BUILDER-OK"
poweroff -f
