#!/usr/bin/env bash
# What SQLite alone takes to write the rows of a rebuilt views database (BENCHMARKS.md, stop 54):
# copies every view table of VIEWS into a fresh database with the same schema and the settings a
# rebuild uses (16 KiB pages, WAL, synchronous=NORMAL), each table in one INSERT … SELECT, the
# secondary indexes built afterwards, and prints the sqlite3 shell's wall and CPU time.
#
#   tools/sqlite_floor.sh STORE/projections.sqlite [log|key]
#
# `log` (the default) copies the stream index in log (seq) order, as a one-by-one fold writes it;
# `key` in its primary key order. Needs `sqlite3` and GNU `time`; VIEWS is only read.
set -euo pipefail
views=${1:?usage: tools/sqlite_floor.sh VIEWS.sqlite [log|key]}
order=${2:-log}
case "$order" in
  log) streams="ORDER BY seq" ;;
  key) streams="" ;;
  *) echo "the order is log or key, not $order" >&2; exit 2 ;;
esac
[ -r "$views" ] || { echo "cannot read $views" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "sqlite3 is not installed (apt-get install sqlite3)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tables=(appointments appointments_objects appointment_locations appointment_patients appointment_meeting_urls sync_logs)
for t in "${tables[@]}" event_streams; do
  [ "$(sqlite3 -bail "$views" "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '$t'" 2>/dev/null)" = 1 ] \
    || { echo "$views has no table $t: not a SyncLedger views database with every view built" >&2; exit 1; }
done
schema=$(sqlite3 -bail "$views" ".schema")
grep -v "sqlite_" <<<"$schema" | grep -v "^CREATE INDEX" > "$work/tables.sql" || true
grep "^CREATE INDEX" <<<"$schema" > "$work/indexes.sql" || true
{
  echo "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
  echo ".read $work/tables.sql"
  # The path as an SQL string literal (a quote in it doubled).
  echo "ATTACH '${views//\'/\'\'}' AS old;"
  echo "BEGIN;"
  for t in "${tables[@]}"; do echo "INSERT INTO main.$t SELECT * FROM old.$t ORDER BY rowid;"; done
  echo "COMMIT;"
  echo "BEGIN; INSERT INTO main.event_streams SELECT * FROM old.event_streams $streams; COMMIT;"
  echo ".read $work/indexes.sql"
} > "$work/copy.sql"

/usr/bin/time -f "copy, stream index in $order order: %e s wall, %U s user, %S s system" \
  sqlite3 -bail "$work/floor.sqlite" < "$work/copy.sql" > /dev/null
echo "rows: $(sqlite3 "$work/floor.sqlite" "SELECT (SELECT count(*) FROM appointments) || ' appointments, ' || (SELECT count(*) FROM event_streams) || ' stream index entries'")"
