import Domain
import Foundation

/// Loads an IANA time zone by name from the system's compiled zones (`$TZDIR`, else
/// /usr/share/zoneinfo; Debian's `tzdata`). The rules themselves are in LocalTime.swift.
public enum PracticeZone {
    /// "America/Denver" → its rules; "UTC" always works. An unknown name is one clear error.
    public static func load(_ identifier: String) throws -> ZoneRules {
        if identifier == "UTC" || identifier == "Etc/UTC" { return .utc }
        let allowed = identifier.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "/_+-".contains($0)) }
        guard allowed, !identifier.isEmpty, !identifier.hasPrefix("/"), !identifier.contains("..") else {
            throw LocalTimeError("unknown time zone '\(identifier)': give an IANA name such as America/Denver")
        }
        let dirs = [ProcessInfo.processInfo.environment["TZDIR"], "/usr/share/zoneinfo", "/usr/lib/zoneinfo"].compactMap { $0 }
        for dir in dirs {
            var isDir: ObjCBool = false
            let path = dir + "/" + identifier
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
                let data = FileManager.default.contents(atPath: path) else { continue }
            return try ZoneRules(identifier: identifier, tzif: Array(data))
        }
        if !dirs.contains(where: { FileManager.default.fileExists(atPath: $0 + "/America/Denver") }) {
            throw LocalTimeError("cannot read time zone '\(identifier)': no time zone database found (install Debian's tzdata, or set TZDIR)")
        }
        throw LocalTimeError("unknown time zone '\(identifier)': give an IANA name such as America/Denver")
    }
}
