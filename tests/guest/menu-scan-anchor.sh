#!/bin/sh
# The anchor of `cargo xtask bench` grub-menu-100 (tests only): generates GRUB menu entries for
# every boot environment of a ZFS pool the way a grub.d script of the 10_linux family has to
# when the boot environments' kernels live inside them (Debian's 10_linux sees only the running
# root; Ubuntu's 10_linux_zfs scans every root): list the pool's file systems, take those mounted
# at /, mount each read-only, look for kernels and the OS name, unmount, print a menuentry per
# kernel. It leaves out what would only add to its time (grub-probe per kernel, gettext, the
# advanced submenu), so the ratio it gives bootenv is a conservative one.
# Usage: menu-scan-anchor <pool>
set -u
pool=$1
mnt=/run/menu-scan
mkdir -p "$mnt"
zfs list -H -o name,canmount,mountpoint -t filesystem -r "$pool" | while read -r ds canmount mp; do
	[ "$mp" = / ] || continue
	[ "$canmount" = off ] && continue
	mount -t zfs -o ro,zfsutil "$ds" "$mnt" 2>/dev/null || continue
	os=Linux
	[ -r "$mnt/etc/os-release" ] && os=$(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' "$mnt/etc/os-release")
	[ -r "$mnt/etc/bootenv-test/label" ] && os="$os $(cat "$mnt/etc/bootenv-test/label")"
	kernels=$(ls "$mnt"/boot/vmlinuz-* "$mnt"/boot/vmlinuz 2>/dev/null | sort -r)
	[ -n "$kernels" ] || kernels=/boot/vmlinuz
	for k in $kernels; do
		v=${k##*/vmlinuz}
		v=${v#-}
		echo "menuentry '$os ($ds${v:+, $v})' --class gnu-linux {"
		echo "	linux /${ds#*/}@${k#"$mnt"} root=ZFS=$ds ro"
		echo "	initrd /${ds#*/}@/boot/initrd.img${v:+-$v}"
		echo "}"
	done
	umount "$mnt"
done
