#!/bin/sh
# /sbin/init of the test boot environments: report what this boot sees as BOOTENV-TEST lines
# on the console, carry out the test action named by betest.action= on the kernel command line,
# then power off. /dev, /proc, /sys and /run were moved in by the bootenv agent.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "BOOTENV-TEST $*"; }

arg() { # value of key $1 on the kernel command line
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}" ;; esac
	done
}

name=$(cat /etc/bootenv-test/name)
say "be-started name=$name uptime=$(cut -d' ' -f1 /proc/uptime)"
say "config=$(tr '\n' ';' </etc/config/app.conf)"
[ -f /etc/config/token ] && say "token=$(cat /etc/config/token)"
say "cmdline=$(cat /proc/cmdline)"
say "zfs-mounts=$(awk '$3 == "zfs" { printf "%s:%s:%s ", $1, $2, substr($4, 1, 2) }' /proc/mounts)"
while read -r line; do say "report $line"; done </run/bootenv/boot
[ -f /run/bootenv/fallback ] && say "fallback-file $(cat /run/bootenv/fallback)"
dmesg | grep -q 'bootenv: FALLBACK' && say "kmsg-fallback $(dmesg | grep 'bootenv: FALLBACK' | head -n1 | sed 's/^\[[^]]*\] //')"
bootenv status 2>&1 | while read -r line; do say "status $line"; done

action=$(arg betest.action)
case "$action" in
write-config)
	token="$name-$(cat /proc/sys/kernel/random/uuid)"
	if echo "$token" >/etc/config/token 2>/dev/null && sync; then
		say "wrote-token $token"
	else
		say "write-failed"
	fi
	;;
activate:*)
	if bootenv activate "${action#activate:}"; then say "activated ${action#activate:}"; else say "activate-failed"; fi
	;;
shell)
	say "shell"
	setsid -c sh
	;;
esac
say "be-done name=$name"
sync
poweroff -f
