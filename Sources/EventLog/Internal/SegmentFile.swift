#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Segment naming: `<first seq, 20 digits>.seg`.
enum SegmentName {
    static let suffix = ".seg"

    static func make(_ firstSeq: UInt64) -> String {
        let digits = String(firstSeq)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    static func parse(_ name: String) -> UInt64? {
        guard name.hasSuffix(suffix) else { return nil }
        let stem = name.dropLast(suffix.count)
        guard stem.utf8.count == 20, stem.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return UInt64(stem)
    }

    /// Segment names in `directory`, sorted by first seq. Other files are ignored.
    static func list(_ directory: String) throws -> [(name: String, firstSeq: UInt64)] {
        let names = try translating { try Sys.listDirectory(directory) }
        return names.compactMap { name in parse(name).map { (name, $0) } }.sorted { $0.firstSeq < $1.firstSeq }
    }
}

/// One segment file opened read-only. Owns its descriptor.
final class SegmentFile {
    let name: String
    let path: String
    let firstSeq: UInt64
    let fd: Int32

    init(directory: String, name: String) throws {
        self.name = name
        let path = directory + "/" + name
        self.path = path
        self.firstSeq = SegmentName.parse(name) ?? 0
        fd = try Self.openRegular(path, name: name, flags: O_RDONLY)
    }

    /// Opens a segment file, refusing anything but a regular file (`Sys.openRegular`): opening
    /// a FIFO put in a segment's place would wait for a writer forever.
    static func openRegular(_ path: String, name: String, flags: Int32) throws -> Int32 {
        try translating(segment: name) { try Sys.openRegular(path, flags) }
    }

    deinit { Sys.close(fd) }

    func size() throws -> UInt64 {
        try translating(segment: name) { try Sys.fileSize(fd, path: path) }
    }

    /// Reads up to `count` bytes at `offset` into `buffer`; returns how many were read.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws -> Int {
        try translating(segment: name) { try Sys.preadFull(fd, buffer, count, at: offset, path: path) }
    }

    /// The smallest position z such that every byte in z..<size is zero (size when the file
    /// does not end in a zero byte). Scans backwards, stopping at `floor`. A crash can leave a
    /// file extended with zeros; this tells a zero-filled tail from corruption.
    func zeroSuffixStart(size: UInt64, floor: UInt64) throws -> UInt64 {
        var position = size
        var chunk = [UInt8](repeating: 0, count: 4096)
        while position > floor {
            let length = Int(min(UInt64(chunk.count), position - floor))
            let start = position - UInt64(length)
            let n = try chunk.withUnsafeMutableBytes { (p) throws -> Int in
                try read(into: p.baseAddress!, count: length, at: start)
            }
            guard n == length else { return position }
            for i in stride(from: length - 1, through: 0, by: -1) where chunk[i] != 0 {
                return start + UInt64(i) + 1
            }
            position = start
        }
        return position
    }
}
