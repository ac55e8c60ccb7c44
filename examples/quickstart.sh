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

daemon=
finish() {
	cd /
	if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" || fusermount3 -uz "$mnt"; fi
	[ -z "$daemon" ] || wait "$daemon" 2>/dev/null || true
}
trap finish EXIT

printf '$ %s %s %s -f -o %s &\n' build/streamfs "$data" "$mnt" "remote=file://$remote,roll=2s"
"$streamfs" "$data" "$mnt" -f -o "remote=file://$remote,roll=2s" 2>"$work/streamfs.log" &
daemon=$!
for _ in $(seq 100); do
	mountpoint -q "$mnt" && break
	if ! kill -0 "$daemon" 2>/dev/null; then
		cat "$work/streamfs.log" >&2
		echo "quickstart: streamfs exited before mounting" >&2
		exit 1
	fi
	sleep 0.1
done
mountpoint -q "$mnt" || { cat "$work/streamfs.log" >&2; echo "quickstart: no mount" >&2; exit 1; }

cd "$mnt"
run mkdir shop
run sh -c "echo '{\"id\":\"o-1\",\"item\":\"tea\",\"qty\":2}' >> shop/orders"
run sh -c "echo '{\"id\":\"o-2\",\"item\":\"milk\",\"qty\":1}' >> shop/orders"
run sh -c "echo '{\"id\":\"o-3\",\"item\":\"bread\",\"qty\":1}' >> shop/orders"
echo "# retrying an append is safe: o-1 is already there, so it is skipped"
run sh -c "echo '{\"id\":\"o-1\",\"item\":\"tea\",\"qty\":2}' >> shop/orders"
run ls -l shop
run cat shop/orders
echo "# a view: the last two events"
run cat 'shop/orders@-2'
echo "# a view: from version 3 on"
run cat 'shop/orders@3'
run getfattr -d -m user.streamfs shop/orders

cd /
run fusermount3 -u "$mnt"
wait "$daemon"
daemon=
echo
echo "Data directory: $data"
echo "Remote:         $remote"
echo "Remove both with: rm -rf $work"
