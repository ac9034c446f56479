import Crypto
import Foundation

/// What one thread sealing many observations reuses between them: each patient's key, looked up
/// once (`KeyRing.key(for:)` takes its locks every time), and the boxes' nonces, read from the
/// kernel's random source a block at a time instead of one system call each (`NonceSource`).
/// Perf had the two at ~6 % and ~10 % of sealing's CPU.
struct SealScratch {
    private var keys: [String: SymmetricKey] = [:]
    var nonces: NonceSource

    /// `expected`: about how many observations will be sealed with it (the nonce block's size).
    init(expected: Int) {
        nonces = NonceSource(expected: 2 * max(1, expected))
    }

    /// The patient's key, from `lookup` the first time.
    mutating func key(_ patient: String, _ lookup: (String) throws -> SymmetricKey) throws -> SymmetricKey {
        if let k = keys[patient] { return k }
        let k = try lookup(patient)
        keys[patient] = k
        return k
    }
}

/// Random 96-bit AES-GCM nonces, read from `/dev/urandom` (the kernel's CSPRNG, as `getrandom`)
/// up to 4 KiB at a time. Only a character device is read: anything else (a plain file in its
/// place, no such device) leaves `next()` nil, and the box takes a nonce of its own from the
/// system's generator as before. The bytes are used once each, by one thread.
struct NonceSource {
    private var buffer: [UInt8] = []
    private var used = 0
    private let block: Int
    private let path: String
    private var failed = false

    /// `path`: the random device (tests give it another file).
    init(expected: Int, path: String = "/dev/urandom") {
        block = min(341, max(1, expected)) * 12
        self.path = path
    }

    mutating func next() -> AES.GCM.Nonce? {
        if used + 12 > buffer.count {
            guard !failed, let fresh = Self.read(block, from: path) else {
                failed = true
                return nil
            }
            buffer = fresh
            used = 0
        }
        defer { used += 12 }
        return try? AES.GCM.Nonce(data: buffer[used..<(used + 12)])
    }

    /// `count` bytes of the device; nil when it is not a character device or cannot be read whole.
    static func read(_ count: Int, from path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFCHR else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, count - done) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        return out
    }
}
