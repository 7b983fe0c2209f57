#!/bin/sh
# /usr/local/sbin/betest-debian, run by betest-debian.service in the Debian boot environments
# of the packaging scenarios once bootenv-mark-good.service has run: reports on the serial
# console what this boot sees (BOOTENV-TEST lines, as the test BEs' init does), then takes
# actions from the console: "run <shell command>" (answered by "BOOTENV-TEST done rc=N"),
# poweroff, reboot.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "BOOTENV-TEST $*"; }
name=$(cat /etc/bootenv-test/name 2>/dev/null || echo unnamed)
say "be-started name=$name uptime=$(cut -d' ' -f1 /proc/uptime)"
say "cmdline=$(cat /proc/cmdline)"
say "systemd=$(systemctl is-system-running)"
say "mark-good=$(systemctl is-active bootenv-mark-good.service) result=$(systemctl show -p Result --value bootenv-mark-good.service)"
bootenv status 2>&1 | while read -r line; do say "status $line"; done
: >/run/betest-reported
while :; do
	say "ready"
	read -r line || break
	case "$line" in
	poweroff)
		say "be-done name=$name"
		systemctl poweroff
		exit 0
		;;
	reboot)
		say "be-done name=$name"
		systemctl reboot
		exit 0
		;;
	"run "*)
		sh -c "${line#run }" 2>&1
		say "done rc=$?"
		;;
	*) say "unknown action: $line" ;;
	esac
done
