/// The directory a path names its last component in, as `NSString.deletingLastPathComponent`
/// gives it ("a/b" → "a", "/b" → "/", "b" → ""), without Foundation's: on Linux it traps on a
/// one-character relative path ("q", "q/"), which a user may well give as `--store q`.
public func parentDirectory(of path: String) -> String {
    var p = Substring(path)
    while p.count > 1, p.last == "/" { p.removeLast() }
    guard let slash = p.lastIndex(of: "/") else { return "" }
    var parent = p[..<slash]
    while parent.last == "/" { parent.removeLast() }
    return parent.isEmpty ? "/" : String(parent)
}
