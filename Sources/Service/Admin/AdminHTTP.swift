import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Projections

/// An admin page's answer: HTML (or CSV, CSS), a status, extra headers (cookies, a redirect).
struct Page: Error {
    var status: Int
    var body: String
    var contentType = "text/html; charset=utf-8"
    var headers: [(HTTPField.Name, String)] = []

    static func redirect(_ to: String, cookies: [String] = []) -> Page {
        Page(status: 303, body: "", headers: [(.location, to)] + cookies.map { (.setCookie, $0) })
    }

    var response: Response {
        var h = HTTPFields()
        h[.contentType] = contentType
        // The pages hold patient names: never cached, never framed, no script at all.
        h[.cacheControl] = "no-store"
        h[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        h[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        h[HTTPField.Name("X-Frame-Options")!] = "DENY"
        h[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        for (n, v) in headers { h.append(HTTPField(name: n, value: v)) }
        return Response(status: .init(code: status), headers: h, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// `application/x-www-form-urlencoded` and query strings: `+` is a space, `%XX` a byte; a
/// malformed escape keeps its text. Later duplicates win.
enum FormData {
    static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = decode(String(kv[0]))
            let v = kv.count > 1 ? decode(String(kv[1])) : ""
            if !k.isEmpty { out[k] = v }
        }
        return out
    }

    /// Each valid `%XX` decoded (as bytes, read as UTF-8), the rest as written; `+` is a space
    /// in form data (`plusIsSpace`), itself in a path.
    static func decode(_ s: String, plusIsSpace: Bool = true) -> String {
        let bytes = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x2B, plusIsSpace {
                out.append(0x20)
            } else if b == 0x25, i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 2
            } else {
                out.append(b)
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Percent-encodes a value for a URL path segment or query value.
    static func encode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    static func query(_ pairs: [(String, String?)]) -> String {
        let kept = pairs.compactMap { k, v in v.flatMap { $0.isEmpty ? nil : encode(k) + "=" + encode($0) } }
        return kept.isEmpty ? "" : "?" + kept.joined(separator: "&")
    }
}

/// The `Cookie` header's pairs.
func parseCookies(_ header: String?) -> [String: String] {
    var out: [String: String] = [:]
    guard let header else { return out }
    for part in header.split(whereSeparator: { $0 == ";" || $0 == "," }) {
        let kv = part.split(separator: "=", maxSplits: 1)
        guard kv.count == 2 else { continue }
        let k = kv[0].trimmingCharacters(in: .whitespaces)
        if out[k] == nil { out[k] = kv[1].trimmingCharacters(in: .whitespaces) }
    }
    return out
}

/// RFC 4180 CSV, as `syncledger export --format csv` writes it (`Export.csvField`: quoted when
/// needed, a text a spreadsheet would run as a formula given a leading `'`).
enum CSV {
    static func field(_ s: String) -> String { Export.csvField(s) }

    static func line(_ fields: [String]) -> String { fields.map(field).joined(separator: ",") + "\r\n" }
}
