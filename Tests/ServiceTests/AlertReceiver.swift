import Foundation
#if canImport(CNIOLinux)
import CNIOLinux  // members of C structs (sockaddr_in, pollfd) may be taken for its (MemberImportVisibility)
#endif
import TestSupport
import JSONCore

#if canImport(Glibc)
import Glibc
#endif

/// A local HTTP receiver for alert webhooks, on a free loopback port: records each POST's JSON
/// body. `silent`: accepts connections and never answers (a dead receiver). `failFirst`: the
/// first N requests get 500.
final class AlertReceiver: Sendable {
    let port: Int
    private let fd: Int32
    private let silent: Bool
    private struct State {
        var bodies: [String] = []
        var held: [Int32] = []
        var failFirst: Int
        var requests = 0
        var stopped = false
    }
    private let state: Locked<State>

    var url: String { "http://127.0.0.1:\(port)/hooks/T000/B000/not-a-real-secret" }

    init(silent: Bool = false, failFirst: Int = 0) throws {
        self.silent = silent
        state = Locked(State(failFirst: failFirst))
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard sock >= 0 else { throw ReceiverError.socket }
        var one: Int32 = 1
        _ = setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(sock, 16) == 0 else { close(sock); throw ReceiverError.bind }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) }
        }
        fd = sock
        port = Int(UInt16(bigEndian: addr.sin_port))
        let listener = fd
        Thread.detachNewThread { [self] in
            while true {
                let c = accept(listener, nil, nil)
                if c < 0 { if errno == EINTR { continue }; return }
                Thread.detachNewThread { self.handle(c) }
            }
        }
    }

    /// The JSON bodies received so far, in order.
    var messages: [JSONValue] { state.value.bodies.compactMap { try? FastJSON.parse(Array($0.utf8)) } }
    var requestCount: Int { state.value.requests }

    private func handle(_ c: Int32) {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        var bodyStart: Int?
        var length = 0
        while true {
            let n = read(c, &buf, buf.count)
            if n <= 0 { break }
            data += buf[0..<n]
            if bodyStart == nil, let r = findHeaderEnd(data) {
                bodyStart = r
                let head = String(decoding: data[0..<r], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            if let s = bodyStart, data.count - s >= length { break }
        }
        let body = bodyStart.map { String(decoding: data[$0...], as: UTF8.self) } ?? ""
        let fail: Bool = state.withLock { state in
            state.requests += 1
            if silent { state.held.append(c); return false }
            if state.failFirst > 0 { state.failFirst -= 1; return true }
            state.bodies.append(body)
            return false
        }
        if silent { return }
        let answer = fail ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        _ = Array(answer.utf8).withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
        close(c)
    }

    private func findHeaderEnd(_ d: [UInt8]) -> Int? {
        guard d.count >= 4 else { return nil }
        for i in 0...(d.count - 4) where d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 { return i + 4 }
        return nil
    }

    func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        for c in state.value.held { close(c) }
    }

    deinit { stop() }
}

enum ReceiverError: Error { case socket, bind }
