/// Pretty-prints JSON bytes (two-space indent) without re-encoding anything inside strings
/// or numbers. The fake serves this so that the client's minifier is exercised.
func reindentJSON(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    var depth = 0
    var inString = false
    var escaped = false
    func newline() {
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: depth * 2))
    }
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        i += 1
        if inString {
            out.append(b)
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            continue
        }
        switch b {
        case 0x20, 0x09, 0x0A, 0x0D:
            continue
        case UInt8(ascii: "\""):
            inString = true
            out.append(b)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            out.append(b)
            // Keep empty containers on one line.
            var j = i
            while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x0A || bytes[j] == 0x09 || bytes[j] == 0x0D { j += 1 }
            if j < bytes.count, bytes[j] == UInt8(ascii: "}") || bytes[j] == UInt8(ascii: "]") {
                out.append(bytes[j])
                i = j + 1
            } else {
                depth += 1
                newline()
            }
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            depth -= 1
            newline()
            out.append(b)
        case UInt8(ascii: ","):
            out.append(b)
            newline()
        case UInt8(ascii: ":"):
            out.append(b)
            out.append(0x20)
        default:
            out.append(b)
        }
    }
    return out
}
