#!/bin/bash
# streamfs in one minute, on Debian 12 as root:
#   installs the build dependencies, builds build/streamfs, mounts a fresh data
#   directory with a file:// remote beside it, writes events into a stream,
#   reads them back whole and through views, shows the xattrs, uploads to the
#   remote and shows what is there, unmounts and verifies the data directory.
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
# No mkdir of the remote: the writer makes it (an empty directory made
# beforehand looks like a NAS mount point with nothing mounted, and waits).
mkdir -p "$data" "$mnt"

run() { # print a command, then run it
	printf '\n$ %s\n' "$*"
	"$@"
}
sfs() { # run build/streamfs with these arguments, printed first
	printf '\n$ build/streamfs %s\n' "$*"
	"$streamfs" "$@"
}
shell() { # print a shell command line, then run it
	printf '\n$ %s\n' "$1"
	sh -c "$1"
}

daemon= reader=
finish() {
	cd /
	for m in "$work/ro" "$mnt"; do
		if mountpoint -q "$m"; then fusermount3 -u "$m" || fusermount3 -uz "$m"; fi
	done
	for p in $reader $daemon; do wait "$p" 2>/dev/null || true; done
}
trap finish EXIT

start() { # start SOURCE MOUNTPOINT OPTS: streamfs in the background, wait for the mount
	printf '\n$ build/streamfs %s %s -f -o %s &\n' "$1" "$2" "$3"
	"$streamfs" "$1" "$2" -f -o "$3" 2>>"$work/streamfs.log" &
	started=$!
	for _ in $(seq 100); do
		mountpoint -q "$2" && return 0
		kill -0 "$started" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/streamfs.log" >&2
	echo "quickstart: streamfs did not mount $2" >&2
	exit 1
}

start "$data" "$mnt" "remote=file://$remote"
daemon=$started

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

echo "# seal the active segments and upload them to the remote now, and wait"
sfs sync "$mnt"
sfs status "$mnt"
run getfattr -n user.streamfs.sync shop/orders
shell "find '$remote' -type f | sort"

echo "# an analysis host: the remote mounted read-only, fetched into a cache directory"
mkdir -p "$work/cache" "$work/ro"
start "$work/cache" "$work/ro" "remote=file://$remote,ro"
reader=$started
run cat "$work/ro/shop/orders"
shell "echo '{\"id\":\"o-4\"}' >> '$work/ro/shop/orders' || echo 'refused: read-only (EROFS)'"
run fusermount3 -u "$work/ro"
wait "$reader"
reader=

cd /
run fusermount3 -u "$mnt"
wait "$daemon"
daemon=
echo "# check the data directory: index against segments against checksums"
sfs verify "$data"
echo
echo "Data directory: $data"
echo "Remote:         $remote"
echo "Remove both with: rm -rf $work"
