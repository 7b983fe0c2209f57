#!/bin/sh
# /sbin/init of the test boot environments: report what this boot sees as BOOTENV-TEST lines
# on the console, carry out the test's actions, then power off. /dev, /proc, /sys and /run were
# moved in by the bootenv agent.
#
# Actions come from betest.action=<action> on the kernel command line (direct kernel boots), or,
# with betest.interactive, one per line from the console after "BOOTENV-TEST ready":
#   run <shell command>   run it, then "BOOTENV-TEST done rc=<status>"
#   poweroff | reboot | panic
# betest.on-trial=panic|reboot makes a trial boot (bootenv.trial= on the command line) fail
# before anything else: a kernel panic, or a reboot without marking itself good.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "BOOTENV-TEST $*"; }

arg() { # value of key $1 on the kernel command line
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}" ;; "$1") echo yes ;; esac
	done
}

finish() {
	say "be-done name=$name"
	sync
	case "$1" in
	reboot) reboot -f ;;
	*) poweroff -f ;;
	esac
}

name=$(cat /etc/bootenv-test/name)
say "be-started name=$name uptime=$(cut -d' ' -f1 /proc/uptime)"
say "cmdline=$(cat /proc/cmdline)"
# The arguments this init was started with (the agent passes on what the kernel gave it), each
# in hex and ended by a comma.
say "argv=$(for a in "$@"; do printf '%s' "$a" | od -An -tx1 | tr -d ' \n'; printf ','; done)"
if [ -n "$(arg bootenv.trial)" ]; then
	case "$(arg betest.on-trial)" in
	panic)
		say "panicking (trial boot of $name)"
		echo c >/proc/sysrq-trigger
		;;
	reboot)
		say "rebooting without marking good (trial boot of $name)"
		sync
		reboot -f
		;;
	esac
fi
say "config=$(tr '\n' ';' </etc/config/app.conf)"
[ -f /etc/config/token ] && say "token=$(cat /etc/config/token)"
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
esac

if [ -n "$(arg betest.interactive)" ] && [ -z "$action" ]; then
	while :; do
		say "ready"
		read -r line || finish poweroff
		case "$line" in
		poweroff) finish poweroff ;;
		reboot) finish reboot ;;
		panic) echo c >/proc/sysrq-trigger ;;
		"run "*)
			sh -c "${line#run }" 2>&1
			say "done rc=$?"
			;;
		*) say "unknown action: $line" ;;
		esac
	done
fi
finish poweroff
