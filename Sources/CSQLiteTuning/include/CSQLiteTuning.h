#ifndef SYNCLEDGER_CSQLITETUNING_H
#define SYNCLEDGER_CSQLITETUNING_H

/// Puts the process's SQLite in multi-thread mode (no mutex around each call on a connection;
/// GRDB uses every connection from one queue at a time, the only mode it supports) and turns
/// off its memory statistics (a global mutex around every allocation). `sqlite3_config` is
/// variadic, which Swift cannot call. Works only before SQLite is initialized, that is before
/// the first connection opens; later it changes nothing. Returns 1 when both took effect.
/// (Stop 43 also raised the statement journals' spill to 4 MiB; SQLite 3.40 then failed large
/// `DROP TABLE`s with SQLITE_FULL, so stop 44 took it out: BENCHMARKS.md.)
int syncledger_sqlite_tune(void);

/// SQLite's version ("3.40.1").
const char *syncledger_sqlite_version(void);

/// 1 when connections opened from now on take no per-connection mutex.
int syncledger_sqlite_multithread(void);

#endif
