#!/bin/bash
# streamfs in one minute, on Debian 12 as root:
#   installs the build dependencies, builds build/streamfs, mounts a fresh data
#   directory with a file:// remote beside it, writes events into a stream,
#   reads them back whole and through a view, shows the xattrs, unmounts.
# Every command run on the mount is printed first, so you can repeat it.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

scripts/install-deps --build

log=$(mktemp)
if [ ! -f build/meson-private/coredata.dat ]; then
	meson setup build >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
meson compile -C build >"$log" 2>&1 || { cat "$log"; exit 1; }
rm -f "$log"
streamfs=$top/build/streamfs

work=$(mktemp -d /tmp/streamfs-quickstart.XXXXXX)
data=$work/data        # the writer's data directory (SOURCE)
remote=$work/remote    # the file:// remote: where sealed segments are uploaded
mnt=$work/mnt          # the mount point
mkdir -p "$data" "$remote" "$mnt"

run() { # print a command, then run it
	printf '\n$ %s\n' "$*"
	"$@"
}
shell() { # print a shell command line, then run it
	printf '\n$ %s\n' "$1"
	sh -c "$1"
}

daemon=
finish() {
	cd /
	if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" || fusermount3 -uz "$mnt"; fi
	[ -z "$daemon" ] || wait "$daemon" 2>/dev/null || true
}
trap finish EXIT

start() { # start OPTS: streamfs in the background, wait for the mount
	printf '$ build/streamfs %s %s -f -o %s &\n' "$data" "$mnt" "$1"
	"$streamfs" "$data" "$mnt" -f -o "$1" 2>"$work/streamfs.log" &
	daemon=$!
	for _ in $(seq 100); do
		mountpoint -q "$mnt" && return 0
		kill -0 "$daemon" 2>/dev/null || break
		sleep 0.1
	done
	wait "$daemon" 2>/dev/null || true
	daemon=
	return 1
}

use_remote=1
if ! start "remote=file://$remote,roll=1s"; then
	if grep -q 'remote= is not supported' "$work/streamfs.log"; then
		# Builds without the sync module: the rest works without a remote.
		echo "# this build has no sync module: mounting without the remote"
		use_remote=
		start "roll=1s" || { cat "$work/streamfs.log" >&2; exit 1; }
	else
		cat "$work/streamfs.log" >&2
		echo "quickstart: streamfs exited before mounting" >&2
		exit 1
	fi
fi

printf '\n$ cd %s\n' "$mnt"
cd "$mnt"
run mkdir shop
shell "echo '{\"id\":\"o-1\",\"item\":\"tea\",\"qty\":2}' >> shop/orders"
shell "echo '{\"id\":\"o-2\",\"item\":\"milk\",\"qty\":1}' >> shop/orders"
shell "echo '{\"id\":\"o-3\",\"item\":\"bread\",\"qty\":1}' >> shop/orders"
echo "# retrying an append is safe: o-1 is already there, so it is skipped"
shell "echo '{\"id\":\"o-1\",\"item\":\"tea\",\"qty\":2}' >> shop/orders"
run ls -l shop
run cat shop/orders
echo "# a view: the last two events"
shell "cat 'shop/orders@-2'"
echo "# a view: from version 3 on"
shell "cat 'shop/orders@3'"
run getfattr -d -m user.streamfs shop/orders

if [ -n "$use_remote" ]; then
	echo "# roll=1s: the segment is sealed after a second, then uploaded to the remote"
	for _ in $(seq 150); do
		[ -n "$(find "$remote" -type f 2>/dev/null)" ] && break
		sleep 0.1
	done
	sleep 1
	run getfattr -n user.streamfs.sync shop/orders
	shell "find '$remote' -type f | sort"
fi

cd /
run fusermount3 -u "$mnt"
wait "$daemon"
daemon=
echo "# check the data directory: index against segments against checksums"
printf '\n$ build/streamfs verify %s\n' "$data"
"$streamfs" verify "$data"
echo
echo "Data directory: $data"
echo "Remote:         $remote"
echo "Remove both with: rm -rf $work"
