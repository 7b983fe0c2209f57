#!/bin/sh
# /init of the builder VM: makes the test pool on /dev/vda2 with bootenv itself, from the boot
# environment trees under /payload (each gets the kernel and initramfs under /payload-boot),
# copies the kernels to the ESP and writes the GRUB menu with bootenv, then exports the pool and
# powers off. The host cannot load ZFS, so the golden test disk is made here.
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
# What GRUB puts on every entry's kernel line, and its menu timeout (pool-wide settings).
run zfs set org.bootenv:cmdline="console=ttyS0 quiet betest.interactive" org.bootenv:grub-timeout=3 tank/ROOT
for be in $(ls /payload); do
	mkdir -p "/payload/$be/boot"
	ln /payload-boot/vmlinuz "/payload/$be/boot/vmlinuz"
	ln /payload-boot/initrd.img "/payload/$be/boot/initrd.img"
	run bootenv --pool tank create "$be" --rootfs "/payload/$be" --label "$(cat /payload/$be/etc/bootenv-test/label)"
done
run bootenv --pool tank sync-boot
run bootenv --pool tank activate v1
run bootenv --pool tank mark-good v1
# Shared datasets outside the boot environments: the agent never mounts them. A full factory
# reset covers those marked org.bootenv:data=reset: tank/data goes back to its factory snapshot,
# tank/scratch (no factory snapshot) to empty; tank/keep is not covered.
run zfs create -o mountpoint=/srv/data -o canmount=on -o org.bootenv:data=reset tank/data
echo "factory data" >/srv/data/factory.txt
run zfs snapshot tank/data@factory
run zfs set org.bootenv:factory=factory tank/data
run zfs create -o mountpoint=/srv/scratch -o canmount=on -o org.bootenv:data=reset tank/scratch
echo "scratch" >/srv/scratch/scratch.txt
run zfs create -o mountpoint=/srv/keep -o canmount=on tank/keep
echo "kept" >/srv/keep/keep.txt
run bootenv --pool tank list
zfs list -r -o name,canmount,mountpoint tank
ls -lR /run/bootenv/esp
umount /run/bootenv/state 2>/dev/null
umount /run/bootenv/esp || fail "unmounting the ESP"
run zpool export tank
sync
echo "BUILDER-OK"
poweroff -f
