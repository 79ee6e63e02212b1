#!/bin/sh
# A boot-style rc script: a few hundred small program runs of the kind init
# scripts are made of (mount-table parsing, config generation, identity
# checks). Deterministic output; writes only under $RC_ROOT (a temp dir).
# RC_MOUNTS names the mount table to parse (default /proc/mounts; the demo
# passes a copy so that a mount elsewhere on the machine cannot change the output).
set -eu
root=${RC_ROOT:?RC_ROOT must name a scratch directory}
mounts=${RC_MOUNTS:-/proc/mounts}
mkdir -p "$root/etc" "$root/run" "$root/log"

# 1. Mount table: one pass per mount point, the way old rc scripts did it.
grep -v '^#' "$mounts" | cut -d' ' -f2 | sort | head -n 40 > "$root/run/mountpoints"
for mp in $(cat "$root/run/mountpoints"); do
	fs=$(awk -v m="$mp" '$2 == m { print $3; exit }' "$mounts")
	opts=$(grep " $mp " "$mounts" | head -n 1 | cut -d' ' -f4 | tr ',' '\n' | sort | head -n 3 | tr '\n' ',')
	name=$(basename "$mp")
	parent=$(dirname "$mp")
	echo "$name $parent $fs $opts" | sed 's/ ,/ /; s/,$//' >> "$root/run/mounts.parsed"
done
wc -l < "$root/run/mounts.parsed" | tr -d ' ' > "$root/run/mount.count"

# 2. Config generation: one file per service, each run through a few filters.
i=0
for svc in network syslog cron ssh ntp dbus udev getty klogd watchdog hostname sysctl modules swap random \
	hwclock keymap console bootlog tmpfiles; do
	i=$((i + 1))
	printf 'name=%s\nprio=%s\nenabled=yes\n' "$svc" "$i" > "$root/etc/$svc.conf.in"
	sed -e "s/^name=/service=/" -e "s/yes/true/" "$root/etc/$svc.conf.in" > "$root/etc/$svc.conf"
	tr 'a-z' 'A-Z' < "$root/etc/$svc.conf" | grep -c SERVICE >> "$root/log/upper.count"
	cut -d= -f1 "$root/etc/$svc.conf" | sort | uniq | wc -l | tr -d ' ' >> "$root/log/keys.count"
	awk -F= '{ n += length($2) } END { print n }' "$root/etc/$svc.conf" >> "$root/log/lengths"
	rm -f "$root/etc/$svc.conf.in"
done

# 3. Identity and platform checks, repeated as many small scripts do.
for n in $(seq 1 15); do
	id -u > /dev/null
	uname -s > /dev/null
	date +%Y > /dev/null
	basename "/usr/lib/x86_64-linux-gnu/lib$n.so" .so >> "$root/log/basenames"
	expr "$n" \* 3 >> "$root/log/expr"
	ls "$root/etc" | wc -l > /dev/null
	cat "$root/run/mount.count" > /dev/null
	head -n 1 "$root/etc/network.conf" > /dev/null
	tail -n 1 "$root/etc/ssh.conf" > /dev/null
done

# Summary (deterministic for a given machine).
echo "mounts: $(cat "$root/run/mount.count")"
echo "services: $(ls "$root/etc" | wc -l | tr -d ' ')"
echo "upper: $(sort "$root/log/upper.count" | uniq -c | tr -s ' ' | sed 's/^ //')"
echo "keys: $(sort -u "$root/log/keys.count" | tr '\n' ' ')"
echo "lengths: $(awk '{ s += $1 } END { print s }' "$root/log/lengths")"
echo "basenames: $(sort "$root/log/basenames" | tail -n 1)"
echo "expr: $(tail -n 1 "$root/log/expr")"
