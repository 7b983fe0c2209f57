#!/bin/sh
# Prints what a factory reset may change, in a form two runs can be compared by: the pool's
# datasets and snapshots (reset ids replaced by ID), the config of this BE and the shared data.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
norm() { sed 's/[0-9]\{8\}T[0-9]\{6\}Z\(-[0-9]*\)\{0,1\}/ID/g'; }
zfs list -H -o name,canmount,mountpoint,origin,org.bootenv:reset -r tank | norm | sed 's/^/dataset /'
zfs list -H -t snapshot -o name -r tank | norm | sed 's/^/snapshot /'
echo "config $(tr '\n' ';' </etc/config/app.conf)"
for ds in data scratch keep; do
	mp=$(zfs get -H -o value mountpoint "tank/$ds" 2>/dev/null) || { echo "files $ds: (no dataset)"; continue; }
	mount -t zfs -o zfsutil "tank/$ds" /mnt 2>/dev/null || { echo "files $ds: (cannot mount)"; continue; }
	echo "files $ds: $(cd /mnt && ls | tr '\n' ' ')"
	umount /mnt
done
