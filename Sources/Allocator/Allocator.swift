import CJemalloc

/// jemalloc (Debian's libjemalloc2) is the memory allocator of the `syncledger` and
/// `syncledger-bench` executables: they link it, so it serves every allocation of the process
/// (Swift objects, SQLite's pages, liblz4's buffers) in place of glibc's malloc. The log's reader,
/// the fold and the views' writer run on three threads and free on one thread what another
/// allocated; glibc's per-thread arenas made those frees slow and kept freed memory resident
/// (BENCHMARKS.md, stop 25). Only executables depend on this target, so libraries and tests keep
/// the system's allocator.
public enum Allocator {
    /// "jemalloc 5.3.0-0-g…" (its version), or nil when the process's `malloc` is not jemalloc's.
    public static var description: String? {
        guard serves else { return nil }
        var version: UnsafePointer<CChar>?
        var size = MemoryLayout<UnsafePointer<CChar>?>.size
        guard mallctl("version", &version, &size, nil, 0) == 0, let version else { return "jemalloc" }
        return "jemalloc " + String(cString: version)
    }

    /// `description`, or "the system's malloc": what `--version` and the bench print.
    public static var name: String { description ?? "the system's malloc" }

    /// True when the process's `malloc` is jemalloc's: the symbol the dynamic linker resolves
    /// for every library (Swift's runtime, SQLite, liblz4) is defined in libjemalloc.
    public static var serves: Bool {
        guard let file = cjemalloc_malloc_file() else { return false }
        return String(cString: file).contains("libjemalloc")
    }

    /// Returns the memory freed so far to the system (every arena's unused dirty pages), as
    /// jemalloc would by itself after ~10 s (its dirty-page decay). The benchmark calls it between
    /// runs, so each run starts as a fresh process would. False when jemalloc is not the allocator.
    @discardableResult
    public static func releaseFreedMemory() -> Bool {
        // MALLCTL_ARENAS_ALL (4096): every arena.
        mallctl("arena.4096.purge", nil, nil, nil, 0) == 0
    }
}
