import Crypto
import Foundation
import NIOConcurrencyHelpers
import Paths

#if canImport(Glibc)
import Glibc
#endif

/// A signed-in admin: who (the admin token's name, never the token), which token (`tokenTag`,
/// derived from the token's hash, never the token), until when, and a random nonce that names
/// this session (its CSRF token is derived from it; logout revokes it).
struct AdminSession: Sendable, Hashable {
    var name: String
    /// `AdminSessionCodec.tokenTag` of the token that signed in: the session lasts only while
    /// that very token is listed. By name alone, a token revoked and then made again under the
    /// same name (the natural rotation) brought the old sessions back (hostile test, stop 56).
    var tokenTag: String
    var expiresAt: Int64
    var nonce: String
}

/// Signs and checks the admin pages' session cookies and CSRF tokens with a per-server secret.
///
/// Cookie value: `v2.<name, base64url>.<token tag, hex>.<expires, ms since 1970>.<nonce, hex>.<HMAC-SHA256,
/// hex>`, the MAC over `v2|name|tag|expires|nonce`. Nothing secret is in the cookie; it only proves
/// the server issued it, for which token, and when it ends. (`v1` cookies, from before the tag,
/// are refused: their admins sign in again.) CSRF token: HMAC(secret, `csrf|nonce`), so it is bound to one
/// session and needs no server-side store. The login form's token is HMAC(secret, `login|nonce`)
/// with the nonce in a separate short-lived cookie (double submit), since there is no session yet.
struct AdminSessionCodec: Sendable {
    static let cookieName = "syncledger_admin"
    static let loginCookieName = "syncledger_login"
    private let secret: [UInt8]
    /// How long a session lasts, milliseconds.
    let lifetime: Int64

    init(secret: [UInt8], lifetime: Int64 = 12 * 3_600_000) {
        self.secret = secret
        self.lifetime = lifetime
    }

    private func mac(_ text: String) -> String {
        hexDigits(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: secret)))
    }

    static func randomNonce() -> String {
        var rng = SystemRandomNumberGenerator()
        return hexDigits((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    /// What a session keeps of the token that signed in (its SHA-256 as the tokens file lists
    /// it): 32 hex digits of a MAC under this server's secret, so the cookie tells nothing of the
    /// token's hash.
    func tokenTag(sha256: String) -> String { String(mac("token|" + sha256.lowercased()).prefix(32)) }

    /// A new session for the token `name` with this hash, starting at `now` (ms), and its cookie value.
    func issue(name: String, tokenSHA256: String, now: Int64) -> (session: AdminSession, cookie: String) {
        let s = AdminSession(name: name, tokenTag: tokenTag(sha256: tokenSHA256), expiresAt: now + lifetime, nonce: Self.randomNonce())
        return (s, encode(s))
    }

    func encode(_ s: AdminSession) -> String {
        let name = base64URL(Array(s.name.utf8))
        return "v2.\(name).\(s.tokenTag).\(s.expiresAt).\(s.nonce).\(mac("v2|\(name)|\(s.tokenTag)|\(s.expiresAt)|\(s.nonce)"))"
    }

    /// The session a cookie value proves, or nil when it is malformed, forged, altered or expired.
    func verify(_ cookie: String, now: Int64) -> AdminSession? {
        let parts = cookie.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 6, parts[0] == "v2", parts[2].count == 32, let expires = Int64(parts[3]), parts[4].count == 32,
              parts[5].count == 64 else { return nil }
        let expected = mac("v2|\(parts[1])|\(parts[2])|\(parts[3])|\(parts[4])")
        guard constantTimeEquals(Array(expected.utf8), Array(parts[5].utf8)) else { return nil }
        guard now < expires, let nameBytes = fromBase64URL(parts[1]) else { return nil }
        return AdminSession(name: String(decoding: nameBytes, as: UTF8.self), tokenTag: parts[2], expiresAt: expires, nonce: parts[4])
    }

    func csrfToken(_ s: AdminSession) -> String { mac("csrf|" + s.nonce) }

    func loginToken(nonce: String) -> String { mac("login|" + nonce) }

    /// Whether `presented` is this session's CSRF token (constant time); nil or empty never is.
    func checkCSRF(_ presented: String?, session: AdminSession) -> Bool {
        guard let presented, !presented.isEmpty else { return false }
        return constantTimeEquals(Array(csrfToken(session).utf8), Array(presented.utf8))
    }

    func checkLoginCSRF(_ presented: String?, nonce: String?) -> Bool {
        guard let presented, !presented.isEmpty, let nonce, nonce.count == 32 else { return false }
        return constantTimeEquals(Array(loginToken(nonce: nonce).utf8), Array(presented.utf8))
    }

    /// `Set-Cookie` for a session: HttpOnly, SameSite=Strict, only under /admin; `Secure` when the
    /// request came over HTTPS (a proxy's `X-Forwarded-Proto`), so plain loopback HTTP still works.
    static func setCookie(_ name: String, _ value: String, maxAge: Int64, secure: Bool) -> String {
        "\(name)=\(value); Path=/admin; Max-Age=\(max(0, maxAge)); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }
}

/// The per-server secret behind the session cookies: 32 random bytes in `STORE/state/admin-session.key`
/// (mode 0600), created on first start. Deleting it signs every admin out.
enum AdminSecret {
    static func loadOrCreate(statePath: String) throws -> [UInt8] {
        let path = statePath + "/admin-session.key"
        try? FileManager.default.createDirectory(atPath: statePath, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        for _ in 0..<2 {
            if let data = FileManager.default.contents(atPath: path) {
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard let bytes = fromHex(text), bytes.count >= 32 else {
                    throw ServeError("\(path) is not 64 hex digits; delete it to make a new one (this signs every admin out)")
                }
                return bytes
            }
            var rng = SystemRandomNumberGenerator()
            let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let text = Array((hexDigits(bytes) + "\n").utf8)
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 {
                if errno == EEXIST { continue }  // another process made it first: read theirs
                throw ServeError("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            StoreOwnership.adopt(fd: fd, path: path)
            let ok = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, text.count) } == text.count && fsync(fd) == 0
            Glibc.close(fd)
            guard ok else {
                unlink(path)
                throw ServeError("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            return bytes
        }
        throw ServeError("cannot read or create \(path)")
    }
}

/// Sessions ended by logout before their expiry (the cookie alone would still verify). Bounded:
/// expired entries are dropped, and at most `limit` are kept.
final class RevokedSessions: Sendable {
    private let box = NIOLockedValueBox([String: Int64]())
    private let limit = 10_000

    func revoke(_ s: AdminSession, now: Int64) {
        box.withLockedValue { m in
            m = m.filter { $0.value > now }
            if m.count >= limit, let oldest = m.min(by: { $0.value < $1.value }) { m[oldest.key] = nil }
            m[s.nonce] = s.expiresAt
        }
    }

    func isRevoked(_ s: AdminSession) -> Bool { box.withLockedValue { $0[s.nonce] != nil } }
}

func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

func fromBase64URL(_ text: String) -> [UInt8]? {
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    return Data(base64Encoded: s).map(Array.init)
}

func fromHex(_ text: String) -> [UInt8]? {
    let u = Array(text.utf8)
    guard u.count % 2 == 0 else { return nil }
    func v(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    var i = 0
    while i < u.count {
        guard let h = v(u[i]), let l = v(u[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}
