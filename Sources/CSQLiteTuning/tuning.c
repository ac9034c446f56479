#include "CSQLiteTuning.h"
#include <sqlite3.h>

int syncledger_sqlite_tune(void) {
    int mode = sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    int stats = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return mode == SQLITE_OK && stats == SQLITE_OK;
}

const char *syncledger_sqlite_version(void) { return sqlite3_libversion(); }

int syncledger_sqlite_multithread(void) {
    // sqlite3_threadsafe() reports the compile-time setting; whether a connection's mutex is
    // allocated shows in sqlite3_db_mutex, so open an in-memory one and look.
    sqlite3 *db = 0;
    if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, 0) != SQLITE_OK) {
        sqlite3_close(db);
        return 0;
    }
    int none = sqlite3_db_mutex(db) == 0;
    sqlite3_close(db);
    return none;
}
