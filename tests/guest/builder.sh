#!/bin/sh
# /init of the builder VM: makes the golden test disk on /dev/vda with bootenv itself:
# `bootenv install` lays out the blank disk (GPT, ESP, GRUB for UEFI and BIOS, pool `tank`, the
# first boot environment v1), `bootenv create` adds v2 and v3 from their trees under /payload
# (each gets the kernel and initramfs under /payload-boot), then shared datasets; the pool is
# exported and the VM powers off. The host cannot load ZFS, so the disk is made here.
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
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
[ -b /dev/vda ] || fail "no /dev/vda"
for be in $(ls /payload); do
	mkdir -p "/payload/$be/boot"
	ln /payload-boot/vmlinuz "/payload/$be/boot/vmlinuz"
	ln /payload-boot/initrd.img "/payload/$be/boot/initrd.img"
done

# What GRUB puts on every entry's kernel line (betest.interactive: the test BEs take actions
# from the console).
run bootenv --pool tank install --disk /dev/vda --from /payload/v1 --name v1 --label 1.0 \
	--esp-mib 256 --cmdline "console=ttyS0 quiet betest.interactive"
run zpool import -N -o cachefile=none -d /dev tank
# One second: long enough to show the menu, short enough not to add up over a hundred boots;
# the scenarios that press keys in it lengthen it first (menu_timeout in scenarios/mod.rs).
run zfs set org.bootenv:grub-timeout=1 tank/ROOT
for be in v2 v3; do
	run bootenv --pool tank create "$be" --rootfs "/payload/$be" --label "$(cat /payload/$be/etc/bootenv-test/label)"
done
run bootenv --pool tank sync-boot
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
ls -lR /run/bootenv/esp | head -40
umount /run/bootenv/state 2>/dev/null
umount /run/bootenv/esp || fail "unmounting the ESP"
run zpool export tank
sync
echo "BUILDER-OK"
poweroff -f
