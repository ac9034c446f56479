#ifndef SYNCLEDGER_CSPAWN_H
#define SYNCLEDGER_CSPAWN_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` (both NULL-terminated) for TestSupport's `ChildProcess`:
/// stdin, stdout and stderr opened in the child from the three paths (stdout and stderr
/// appended to, so both may name one file), in `cwd` when it is not NULL, in a process group of its own, with no
/// signal blocked and every signal at its default action, and with every other descriptor
/// closed (`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34).
///
/// Why not Foundation's `Process`: on Linux it learns that a child ended when a socket the child
/// inherited closes, and it closes other descriptors in its children only up to the highest one
/// open when it builds the spawn; a socket another thread creates in that window leaks into the
/// child, and the other process's end goes unnoticed until this one exits (CI saw a crash
/// harness that had finished in seconds "run" 80 s, until an unrelated test's server ended).
///
/// Returns 0 and sets `*pid`, or an errno value.
int syncledger_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
                     const char *stdin_path, const char *stdout_path, const char *stderr_path);

/// Blocks until `pid` has ended, without reaping it (`waitid(P_PID, …, WEXITED | WNOWAIT)`), so
/// that its pid cannot be reused until the caller reaps it. Returns 0, or an errno value.
int syncledger_wait_ended(pid_t pid);

#endif
