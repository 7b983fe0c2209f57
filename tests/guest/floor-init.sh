#!/bin/sh
# The floor of `cargo xtask bench boot-path`: the least a hand-tuned shell /init does to boot a
# BE from ZFS, in an image with the same ZFS tools and modules as bootenv's. It loads only the
# disk driver and the ZFS chain (/etc/floor/modules, in dependency order, one after another),
# prepares the import the way the agent does (udev database stand-ins, no udev wait), imports
# the pool without mounting (-N), mounts the BE and its config, moves the API file systems in
# and switches root. Nothing else: no checks, no state, no report, no fallback. The pool and the
# BE come from the command line: bootenv.pool=<pool> bootenv=<be>.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
pool=tank
be=v1
for w in $(cat /proc/cmdline); do
	case "$w" in
	bootenv.pool=*) pool=${w#*=} ;;
	bootenv=*) be=${w#*=} ;;
	esac
done
r=$(uname -r)
while read -r m; do
	insmod "/lib/modules/$r/$m" 2>/dev/null
done </etc/floor/modules
# The pool's partition: the kernel adds a disk's partitions together once it has read its table.
until ls /sys/class/block | grep -q '^vda[0-9]'; do usleep 2000; done
mkdir -p /run/udev/data
for b in /sys/class/block/*; do
	printf 'I:1\nS:disk/by-bootenv/%s\n' "${b##*/}" >"/run/udev/data/b$(cat "$b/dev")"
done
ZPOOL_IMPORT_UDEV_TIMEOUT_MS=0 zpool import -N -o cachefile=none -d /dev "$pool" || exec sh
rm -rf /run/udev
mount -i -t zfs -o zfsutil "$pool/ROOT/$be" /sysroot || exec sh
mount -i -t zfs -o zfsutil "$pool/ROOT/$be/config" /sysroot/etc/config || exec sh
for d in dev proc sys run; do mount -o move "/$d" "/sysroot/$d"; done
exec switch_root /sysroot /sbin/init
