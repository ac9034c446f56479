#ifndef SYNCLEDGER_CSQLITETUNING_H
#define SYNCLEDGER_CSQLITETUNING_H

/// Puts the process's SQLite in multi-thread mode (no mutex around each call on a connection;
/// GRDB uses every connection from one queue at a time, the only mode it supports), turns off
/// its memory statistics (a global mutex around every allocation) and keeps statement journals
/// in memory up to `statement_journal_spill` bytes (SQLite's default is 64 KiB).
/// `sqlite3_config` is variadic, which Swift cannot call. Works only before SQLite is
/// initialized, that is before the first connection opens; later it changes nothing. Returns 1
/// when all three took effect.
int syncledger_sqlite_tune(int statement_journal_spill);

/// SQLite's version ("3.40.1").
const char *syncledger_sqlite_version(void);

/// 1 when connections opened from now on take no per-connection mutex.
int syncledger_sqlite_multithread(void);

#endif
