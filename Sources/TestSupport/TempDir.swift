import Foundation

/// A fresh, owner-only directory under the system temporary directory, removed when the
/// object goes away (or earlier with `remove()`). Keep a reference for as long as the
/// directory is in use.
public final class TempDir: Sendable {
    public let path: String

    /// `label` names the directory (`syncledger-<label>-XXXXXX`) so a leftover one says which
    /// test made it. A temporary directory that cannot be made is a broken machine, not a
    /// test result, hence the precondition.
    public init(_ label: String = "test") {
        do { path = try makeTempDir(label) } catch { preconditionFailure("\(error)") }
    }

    /// A path inside the directory (not created).
    public func sub(_ name: String) -> String { path + "/" + name }

    /// Removes the directory now; removing it twice is harmless.
    public func remove() { removeTree(path) }

    deinit { removeTree(path) }
}

/// Makes `<base>/syncledger-<prefix>-XXXXXX` (mode 0700, mkdtemp; `base` defaults to the system
/// temporary directory) and returns its path; the caller removes it (`removeTree`).
public func makeTempDir(_ prefix: String = "test", under base: String? = nil) throws -> String {
    var template = Array(((base ?? NSTemporaryDirectory()) + "/syncledger-\(prefix)-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard made != nil else { throw TestSupportError("cannot make a directory under \(base ?? NSTemporaryDirectory()): errno \(errno)") }
    return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Removes a file or directory tree; a missing one is not an error.
public func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// A failure of the test machinery itself (not of the code under test).
public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
