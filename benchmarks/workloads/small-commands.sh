#!/bin/bash
# A make -j1 style job: many short external commands, the kind of script
# cached-exec is for. Generates 40 "sources", then "builds" each with a chain
# of small tools, then links a summary. About 400 execs; output to stdout.
# programs: sed mawk cat ls basename dirname mkdir cp rm tr cut wc grep sort head date uname seq mktemp
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/obj"
for i in $(seq 1 40); do
	printf 'int f%d(void) { return %d; } /* TODO: unit %d */\n' "$i" "$i" "$i" >"$work/src/unit$i.c"
done
for f in "$work"/src/*.c; do
	base=$(basename "$f" .c)
	dir=$(dirname "$f")
	sed -e 's/TODO/DONE/' -e 's/return/ret/' "$f" >"$work/obj/$base.i"
	mawk '{ n += NF } END { print n }' "$work/obj/$base.i" >"$work/obj/$base.n"
	tr 'a-z' 'A-Z' <"$work/obj/$base.i" | cut -c1-20 >"$work/obj/$base.o"
	grep -c DONE "$work/obj/$base.i" >/dev/null
	cp "$work/obj/$base.o" "$work/obj/$base.o.bak"
	rm "$work/obj/$base.o.bak"
	wc -c <"$dir/$base.c" >/dev/null
done
cat "$work"/obj/*.o | sort | head -3
ls "$work/obj" | wc -l
date +%Y >/dev/null
uname -s
