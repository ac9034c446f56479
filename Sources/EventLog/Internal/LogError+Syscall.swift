#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one place where errno values become `LogError`s with advice.
extension LogError {
    /// Translates a failed system call. `appendingTo`/`acknowledged` give the context of an
    /// append so that a full disk can say exactly what was and was not kept.
    static func from(_ error: SyscallError, segment: String? = nil, appendingTo: String? = nil,
                     acknowledged: UInt64? = nil) -> LogError {
        let reason = String(cString: strerror(error.errno))
        let code: Code
        var message: String
        switch error.errno {
        case ENOSPC, EDQUOT:
            code = .diskFull
            let target = appendingTo ?? error.path
            message = "disk full while appending to \(target): free space and retry"
            if let acknowledged { message += "; nothing after seq \(acknowledged) was acknowledged" }
        case EFBIG:
            // A file-size limit (ulimit -f / RLIMIT_FSIZE, with SIGXFSZ ignored) or the file
            // system's maximum file size: no room for this write, like a full disk.
            code = .diskFull
            let target = appendingTo ?? error.path
            message = "file too large while appending to \(target): the file-size limit (ulimit -f) or the file "
                + "system's maximum file size was reached; raise the limit (or move the store to a file system without it), then retry"
            if let acknowledged { message += "; nothing after seq \(acknowledged) was acknowledged" }
        case EIO:
            code = .io
            message = "I/O error during \(error.operation) on \(error.path): the disk reported a failure; check it "
                + "(dmesg, SMART), then reopen the log, which re-checks every batch"
            if let acknowledged, appendingTo != nil {
                message += "; nothing after seq \(acknowledged) was acknowledged"
            }
        case ENOENT:
            code = .notFound
            message = "\(error.path) does not exist (\(error.operation): \(reason))"
        case EACCES, EPERM:
            code = .io
            message = "permission denied on \(error.path) (\(error.operation)): the store must belong to the user running SyncLedger"
        case EROFS:
            code = .io
            message = "\(error.path) is on a read-only file system (\(error.operation)): remount it read-write"
        default:
            code = .io
            message = "\(error.operation) failed on \(error.path): \(reason) (errno \(error.errno))"
            if let acknowledged, appendingTo != nil {
                message += "; nothing after seq \(acknowledged) was acknowledged"
            }
        }
        return LogError(code: code, message: message, segment: segment ?? appendingTo, seq: acknowledged,
                        errno: error.errno, operation: error.operation)
    }
}

/// Runs `body`, translating a `SyscallError` into a `LogError`.
@inline(__always)
func translating<T>(segment: String? = nil, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as SyscallError {
        throw LogError.from(error, segment: segment)
    } catch let error as LogError {
        throw error
    } catch let error as NotARegularFile {
        throw LogError(code: .io, message: error.message(naming: segment.map { "segment \($0) (\(error.path))" } ?? error.path),
                       segment: segment, operation: "open")
    } catch {
        throw LogError(code: .io, message: "unexpected error: \(error)")
    }
}
