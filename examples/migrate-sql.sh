#!/bin/bash
# Move the events of a SQL event store into a streamfs tenant, with psql or
# sqlite3 and plain redirection (`>>`): one stream per stream of the table,
# events in version order, each a line of JSON carrying its event ID, so that
# streamfs deduplicates a second run (or the rest of an interrupted one).
#
#   examples/migrate-sql.sh (--sqlite FILE | --psql CONNINFO) [OPTIONS] MNT/TENANT
#
#   --table FROM        table or view, or a subquery `(SELECT ...) AS e`  [events]
#   --stream COL        column holding the stream's name                  [stream_id]
#   --version COL       column holding the event's version in its stream  [version]
#   --id COL            column holding the event ID (text, UUID, number)  [event_id]
#   --payload COL       column holding the JSON payload                   [payload]
#   --first-version N   version of a stream's first event in the table    [0]
#
# Each event becomes its payload with the event ID as the member streamfs
# deduplicates on (the tenant's user.streamfs.id_field, `id` by default):
#   {"item":"tea"}  ->  {"item":"tea","id":"<event id>"}
# A payload that is not a JSON object (an array, a string, a number, null; in
# SQLite also text that is not JSON) is kept whole under "data":
#   [1,2]           ->  {"id":"<event id>","data":[1,2]}
# PostgreSQL writes the payload as jsonb prints it (members reordered,
# spaces after `:` and `,`), SQLite as json_set() does (compact, in order).
#
# Refused before anything is written: a stream whose versions do not run
# from --first-version without gaps or repeats (streamfs numbers a stream's
# events 1, 2, 3...: the event of table version V becomes event
# V - first + 1), and a payload whose ID member already holds another ID.
# Stream names become file names with `%`, `/`, `@`, tab and newline written
# as %25, %2F, %40, %09 and %0A (and `.`, `..` as %2E, %2E%2E).
#
# At the end every stream's user.streamfs.version is compared with the
# table's number of events; any difference fails the run.  Exit status 0
# when the tenant holds exactly the table's events, 1 otherwise, 2 on a
# usage error.  Needs getfattr (Debian: attr).
set -euo pipefail

usage() {
	sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

db= kind= table=events col_stream=stream_id col_version=version col_id=event_id
col_payload=payload first=0
while [ $# -gt 0 ]; do
	case $1 in
	--sqlite|--psql) kind=${1#--}; db=${2:?}; shift 2 ;;
	--table) table=${2:?}; shift 2 ;;
	--stream) col_stream=${2:?}; shift 2 ;;
	--version) col_version=${2:?}; shift 2 ;;
	--id) col_id=${2:?}; shift 2 ;;
	--payload) col_payload=${2:?}; shift 2 ;;
	--first-version) first=${2:?}; shift 2 ;;
	-h|--help) usage ;;
	-*) echo "migrate-sql: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] && [ -n "$kind" ] || usage
[[ $first =~ ^[0-9]+$ ]] || { echo "migrate-sql: --first-version takes a number" >&2; exit 2; }
dir=${1%/}

mkdir -p "$dir"
member=$(getfattr --only-values -n user.streamfs.id_field "$dir")
[[ $member =~ ^[A-Za-z0-9_]+$ ]] || {
	echo "migrate-sql: $dir: id member '$member' is not a plain name" >&2
	exit 1
}

# One query, text rows out, in the database's own client.
query() {
	if [ "$kind" = psql ]; then
		psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" -c "$1"
	else
		sqlite3 -init /dev/null -batch -bail -noheader -list "$db" "$1"
	fi
}

s=$col_stream v=$col_version id="CAST($col_id AS TEXT)" p=$col_payload
if [ "$kind" = psql ]; then
	chr=chr pj="($p)::jsonb"
	# the ID member of object payloads that hold another ID
	clash="jsonb_typeof($pj) = 'object' AND $pj ? '$member' AND $pj->>'$member' IS DISTINCT FROM $id"
	line="CASE WHEN jsonb_typeof($pj) = 'object'
		THEN ($pj || jsonb_build_object('$member', $id))::text
		ELSE jsonb_build_object('$member', $id, 'data', $pj)::text END"
else
	chr=char
	# CASE, since SQLite may evaluate both sides of an AND: json_type() of
	# text that is not JSON is an error
	obj="CASE WHEN json_valid($p) THEN json_type($p) = 'object' ELSE 0 END"
	clash="CASE WHEN $obj THEN json_type($p, '\$.\"$member\"') IS NOT NULL
		AND json_extract($p, '\$.\"$member\"') IS NOT $id ELSE 0 END"
	line="CASE WHEN $obj THEN json_set($p, '\$.\"$member\"', $id)
		WHEN json_valid($p) THEN json_object('$member', $id, 'data', json($p))
		ELSE json_object('$member', $id, 'data', $p) END"
fi
name="CASE WHEN $s = '.' THEN '%2E' WHEN $s = '..' THEN '%2E%2E' ELSE
	replace(replace(replace(replace(replace($s, '%', '%25'), '/', '%2F'), '@', '%40'),
	$chr(9), '%09'), $chr(10), '%0A') END"

bad=$(query "SELECT $name || ': versions ' || min($v) || '..' || max($v) || ', ' || count(*) || ' events'
	FROM $table GROUP BY $s
	HAVING min($v) <> $first OR max($v) - min($v) + 1 <> count(*) OR count(DISTINCT $v) <> count(*)
	ORDER BY 1 LIMIT 20")
if [ -n "$bad" ]; then
	printf 'migrate-sql: versions must run from %s without gaps or repeats:\n%s\n' \
		"$first" "$bad" >&2
	exit 1
fi
bad=$(query "SELECT $name || ' version ' || $v FROM $table WHERE $clash ORDER BY 1 LIMIT 20")
if [ -n "$bad" ]; then
	printf 'migrate-sql: payloads whose "%s" is not their event ID:\n%s\n' "$member" "$bad" >&2
	exit 1
fi

# Every event, a stream after the other, in version order: NAME<TAB>LINE.
# awk appends each stream's lines with `>>` and closes it (which commits a
# last line and reports a failed write) before it opens the next.
query "SELECT $name || $chr(9) || $line FROM $table ORDER BY $s, $v" |
awk -F '\t' -v dir="$dir" '
	$1 == "" { print "migrate-sql: an event without a stream name" > "/dev/stderr"; exit 1 }
	$1 != cur { if (cur != "") close(path); cur = $1; path = dir "/" cur }
	{ print substr($0, length($1) + 2) >> path }
	END { if (cur != "") close(path) }'

# The tenant now holds exactly the table's events.
streams=0 events=0 wrong=0
while IFS=$'\t' read -r file count; do
	have=$(getfattr --only-values -n user.streamfs.version "$dir/$file")
	if [ "$have" != "$count" ]; then
		echo "migrate-sql: $dir/$file holds $have events, the table $count" >&2
		wrong=1
	fi
	streams=$((streams + 1)) events=$((events + count))
done < <(query "SELECT $name || $chr(9) || count(*) FROM $table GROUP BY $s ORDER BY 1")
echo "migrate-sql: $streams streams, $events events in $dir"
exit $wrong
