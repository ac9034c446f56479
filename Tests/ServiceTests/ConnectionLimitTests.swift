import Foundation
#if canImport(CNIOLinux)
import CNIOLinux  // members of C structs (sockaddr_in, pollfd) may be taken for its (MemberImportVisibility)
#endif
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import JSONCore
import Logging
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif
@testable import Service
import TestSupport
import Testing

/// A TCP socket connected to 127.0.0.1:`port` (its receive buffer `receiveBuffer` bytes when given).
func connectedSocket(port: Int, receiveBuffer: Int32? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else {
        close(fd)
        throw ServeError("cannot connect to port \(port): \(String(cString: strerror(errno)))")
    }
    return fd
}

/// A TCP socket listening on 127.0.0.1 at a free port, that never accepts: connections wait in
/// its backlog, unanswered. Its descriptor and port.
func listeningSocket(backlog: Int32) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, backlog) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard listening else {
        close(fd)
        throw ServeError("cannot listen on a loopback port: \(String(cString: strerror(errno)))")
    }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

/// A TCP connection to the server that sends what a test says and nothing more (a client that
/// stopped in the middle of a request).
final class StalledClient {
    let fd: Int32

    init(port: Int, sending text: String) throws {
        fd = try connectedSocket(port: port)
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// True once the server closed the connection (what it sent before, if anything, is read and
    /// dropped), within `timeout` seconds.
    func closedByServer(within timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) >= 0 else { return false }
            if p.revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return true }
            }
        }
        return false
    }

    /// Sends more bytes (nothing when the server closed the connection).
    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    deinit { close(fd) }
}

/// A client with a 4 KiB receive buffer that sends `text` (without blocking) and never reads.
final class NonReadingClient {
    let fd: Int32

    init(port: Int, pipelining text: String) throws {
        fd = try connectedSocket(port: port, receiveBuffer: 4096)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let bytes = Array(text.utf8)
        var sent = 0
        let deadline = Date().addingTimeInterval(10)
        while sent < bytes.count, Date() < deadline {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { sent += n } else if errno == EAGAIN || errno == EINTR { usleep(20_000) } else { break }
        }
    }

    deinit { close(fd) }
}

/// The stalled-reader rule on an embedded channel, where time and writability are the test's.
@Suite struct StalledReaderRuleTests {
    func channel() throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(handler: RequestDeadlineHandler(seconds: 30, idleSeconds: 1), loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, loop)
    }

    func body(_ count: Int) -> HTTPResponsePart { .body(ByteBuffer(repeating: 7, count: count)) }

    /// A large body goes out in 16 KiB pieces, all of it, in order.
    @Test func aLargeBodyGoesOutInPieces() throws {
        let (channel, _) = try channel()
        try channel.writeAndFlush(body(40_000)).wait()
        var sizes: [Int] = []
        while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
            if case .body(let b) = part { sizes.append(b.readableBytes) }
        }
        #expect(sizes == [16_384, 16_384, 7_232])
        _ = try? channel.finish()
    }

    /// Full with no write completing for the idle timeout: closed. A write that completes starts
    /// the wait again; the socket taking more again ends it.
    @Test func progressKeepsAFullConnectionAndSilenceClosesIt() throws {
        let (channel, loop) = try channel()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        loop.advanceTime(by: .milliseconds(600))
        try channel.writeAndFlush(body(10)).wait()
        loop.advanceTime(by: .milliseconds(600))
        #expect(channel.isActive, "a write completed 0.6 s ago")
        loop.advanceTime(by: .milliseconds(500))
        #expect(!channel.isActive, "nothing completed for 1.1 s while full")

        let (other, otherLoop) = try self.channel()
        other.isWritable = false
        other.pipeline.fireChannelWritabilityChanged()
        otherLoop.advanceTime(by: .milliseconds(500))
        other.isWritable = true
        other.pipeline.fireChannelWritabilityChanged()
        otherLoop.advanceTime(by: .seconds(5))
        #expect(other.isActive, "writable again: no wait")
        _ = try? other.finish()

        let (silent, silentLoop) = try self.channel()
        silentLoop.advanceTime(by: .seconds(5))
        silent.isWritable = false
        silent.pipeline.fireChannelWritabilityChanged()
        silentLoop.advanceTime(by: .milliseconds(900))
        #expect(silent.isActive, "full for 0.9 s")
        silentLoop.advanceTime(by: .milliseconds(200))
        #expect(!silent.isActive, "full for 1.1 s, no write completed")
    }
}

@Suite(.serialized) struct ConnectionLimitTests {
    /// A client that stops in the middle of a request (its head or its body) is disconnected
    /// after the idle timeout; while the connection cap is reached, a new request waits for a
    /// connection to close instead of taking a descriptor. Before, such connections were held
    /// for good: a few hundred of them took every descriptor, and the server stopped answering
    /// (hostile test).
    @Test func stalledConnectionsAreClosedAndTheCapHoldsNewOnesBack() async throws {
        let rig = try await ServerRig.start { config in
            config.idleTimeoutSeconds = 3
            config.maxConnections = 3
        }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        // Give the client's pool of connections from `start` time to close (the cap counts them).
        try await Task.sleep(nanoseconds: 3_500_000_000)
        // One at a time, each given time to be accepted: connections waiting in the listen
        // backlog together are accepted in one read of the listening socket, before the cap can
        // stop accepting (a full run of ServiceTests once saw the request below answered at once).
        // The pauses block this thread rather than suspend the test: a suspended test can wait
        // far longer than asked while other tests hold the cooperative pool, and the first
        // connection's idle timeout would then run out before `started`.
        var stalled: [StalledClient] = []
        for i in 0..<3 {
            stalled.append(try StalledClient(port: port, sending: i == 0 ? "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                             : "POST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"))
            usleep(200_000)
        }
        let started = Date()
        let answer = Task { () -> (Answer, Date) in
            let a = try await http(.GET, rig.base + "/healthz")
            return (a, Date())
        }
        try await Task.sleep(nanoseconds: 1_000_000_000)
        for (i, client) in stalled.enumerated() {
            #expect(client.closedByServer(within: 10), "stalled connection \(i) is still open after \(Date().timeIntervalSince(started)) s")
        }
        let (healthz, answeredAt) = try await answer.value
        #expect(healthz.status == 200)
        // Held back by the cap until the first stalled connection was closed (its idle timeout,
        // 3 s after it was opened 0.6 s before `started`: ~2.4 s), not answered at once (0.01 s).
        #expect(answeredAt.timeIntervalSince(started) >= 1, "answered after \(answeredAt.timeIntervalSince(started)) s")
        // The webhook bodies that stopped are not "too large".
        let status = try await rig.admin("/api/v1/status")
        #expect(status["webhooks"]?["too_large"]?.doubleValue == 0, "\(status.text)")
    }

    /// A body sent a byte at a time, each within the idle timeout, is still cut off at the
    /// request's deadline (three idle timeouts from its head): the idle timeout alone restarted
    /// with every piece, so such a client held its connection for good (cold review). The same
    /// for the second request of a kept-alive connection (its deadline starts at its own head).
    @Test(arguments: [false, true]) func aTrickledBodyIsCutOffAtTheRequestsDeadline(afterAnotherRequest: Bool) async throws {
        let rig = try await ServerRig.start { config in config.idleTimeoutSeconds = 2 }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        let first = afterAnotherRequest ? "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" : ""
        let client = try StalledClient(port: port, sending: first + "POST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        let started = Date()
        var closed = false
        while !closed, Date().timeIntervalSince(started) < 40 {
            client.send(" ")
            closed = client.closedByServer(within: 1)
        }
        let took = Date().timeIntervalSince(started)
        // The fault this guards against never closes the connection: a piece every second keeps
        // it from ever being idle for 2 s, so only the deadline can close it. Closed at all within
        // the loop's 40 s, and not before the deadline, is the check; how late after the 6 s
        // deadline depends on the load (clean-clone CI runs, every suite at once on two cores,
        // have seen 10 s and over 15 s).
        #expect(closed && took >= 5, "closed: \(closed) after \(took) s (the deadline is 6 s)")
    }
}

/// When a connection ends after an answer (`ConnectionCloseHandler`).
@Suite struct ConnectionCloseTests {
    /// What the server sent on `fd` until it closed the connection or `timeout` seconds passed,
    /// and whether it closed it. It waits suspended, not blocking its thread: the server answers
    /// on the same cooperative pool, which two tests blocking both its threads would starve.
    /// With `until`, it returns as soon as what was sent satisfies it.
    static func readAll(_ fd: Int32, within timeout: Double, until: ((String) -> Bool)? = nil) async -> (text: String, closed: Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            if let until, until(String(decoding: received, as: UTF8.self)) { break }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) >= 0 else { break }
            guard p.revents != 0 else {
                try? await Task.sleep(for: .milliseconds(10))
                continue
            }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (String(decoding: received, as: UTF8.self), true) }
            received += buffer[..<n]
        }
        return (String(decoding: received, as: UTF8.self), false)
    }

    static func send(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// An HTTP/1.0 request without keep-alive, and one of HTTP/1.1 with `Connection: Close`
    /// spelled so, get their answer and the connection's end at once (they waited for the idle
    /// timeout: 10 s here); HTTP/1.0 with keep-alive and plain HTTP/1.1 keep theirs for a second
    /// request.
    @Test func aRequestThatAsksToCloseEndsItsConnection() async throws {
        let rig = try await ServerRig.start { config in config.idleTimeoutSeconds = 10 }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        for request in ["GET /healthz HTTP/1.0\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n",
                        "HEAD /healthz HTTP/1.0\r\n\r\n"] {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            let started = Date()
            Self.send(fd, request)
            let (text, closed) = await Self.readAll(fd, within: 5)
            let took = Date().timeIntervalSince(started)
            #expect(closed && took < 5, "\(request.debugDescription): closed \(closed) after \(took) s")
            #expect(text.hasPrefix("HTTP/1.1 200"), "\(request.debugDescription): \(text.prefix(80).debugDescription)")
            #expect(text.lowercased().contains("\r\nconnection: close\r\n"), "\(request.debugDescription): \(text.debugDescription)")
        }
        for request in ["GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"] {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            Self.send(fd, request + request)
            let (text, _) = await Self.readAll(fd, within: 10) { $0.components(separatedBy: "{\"status\":\"ok\"}").count == 3 }
            #expect(text.components(separatedBy: "HTTP/1.1 200").count == 3, "\(request.debugDescription): \(text.debugDescription)")
            let (_, closed) = await Self.readAll(fd, within: 0.5)
            #expect(!closed, "\(request.debugDescription): closed")
            #expect(!text.lowercased().contains("connection: close"), "\(request.debugDescription): \(text.debugDescription)")
            // HTTP/1.0 keeps a connection only when the answer says so (a strict client waited
            // for the close); HTTP/1.1 needs no word.
            let said = text.lowercased().components(separatedBy: "\r\nconnection: keep-alive\r\n").count - 1
            #expect(said == (request.contains("HTTP/1.0") ? 2 : 0), "\(request.debugDescription): \(text.debugDescription)")
        }
    }

    /// A request that cannot be read as HTTP (a 100 KB header; bytes that are not HTTP) gets
    /// Hummingbird's bare 400, and now one warning line that says why (there was none above
    /// debug level); a client that closes mid-request gets none.
    @Test func aRequestThatIsNotHTTPIsRefusedInOneLogLine() async throws {
        let lines = Locked<[String]>([])
        let rig = try await ServerRig.start { config in
            config.idleTimeoutSeconds = 10
            config.logger = Logger(label: "servicetests") { _ in CapturingLogHandler(lines: lines) }
        }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        // A client that closes in the middle of a request was not refused: no such line; nor one
        // that sent a request after one that closed the connection (it is dropped unread).
        for part in ["GET /healthz HTTP/1.1\r\nHost: x\r\n", "POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
                     "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"] {
            let fd = try connectedSocket(port: port)
            Self.send(fd, part)
            try await Task.sleep(for: .milliseconds(200))
            close(fd)
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(lines.withLock { $0 }.filter { $0.contains("could not be read as HTTP") }.isEmpty, "\(lines.withLock { $0 })")
        for (n, request) in ["GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n",
                             "\u{1}\u{2} not http at all\r\n\r\n"].enumerated() {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            Self.send(fd, request)
            let (text, _) = await Self.readAll(fd, within: 5)
            #expect(text.hasPrefix("HTTP/1.1 400"), "request \(n): \(text.prefix(100).debugDescription)")
            let said = await rig.eventually(timeout: 5) {
                lines.withLock { $0.filter { $0.contains("request refused (400): it could not be read as HTTP") }.count == n + 1 }
            }
            #expect(said, "request \(n): \(lines.withLock { $0 })")
        }
    }

    /// A request that asks to confirm before it sends its body (`Expect: 100-continue`, as curl
    /// does for large bodies) gets `100 Continue` at once (it waited a second unanswered, then
    /// sent the body anyway), unless its declared length is over the route's limit: then its 413
    /// comes without one, at once (a run request declaring more than 64 KiB waited for the body
    /// it announced), or it is pipelined behind a request not yet answered.
    @Test func aBodyIsConfirmedOrRefusedAtOnce() async throws {
        let rig = try await ServerRig.start { config in config.idleTimeoutSeconds = 10 }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        let body = #"{"EventType": "AppointmentUpdated", "Appointment": {"Id": "nobody-of-ours", "ClientId": 999999}}"#
        do {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            Self.send(fd, "POST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + "Content-Length: \(body.utf8.count)\r\nExpect: 100-continue\r\n\r\n")
            let (interim, _) = await Self.readAll(fd, within: 10) { $0.contains("\r\n\r\n") }
            #expect(interim.hasPrefix("HTTP/1.1 100 Continue\r\n"), "\(interim.debugDescription)")
            Self.send(fd, body)
            let (text, _) = await Self.readAll(fd, within: 10) { $0.contains("HTTP/1.1 200") }
            #expect(text.contains("HTTP/1.1 200"), "\(text.debugDescription)")
        }
        // Pipelined behind a request not yet answered: no 100 (that answer would read as the
        // first request's); the body is taken when it comes.
        do {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            Self.send(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\n"
                      + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nExpect: 100-continue\r\n\r\n")
            let (first, _) = await Self.readAll(fd, within: 10) { $0.contains("{\"status\":\"ok\"}") }
            #expect(first.hasPrefix("HTTP/1.1 200"), "\(first.debugDescription)")
            Self.send(fd, body)
            let (rest, _) = await Self.readAll(fd, within: 10) { $0.contains("HTTP/1.1 200") }
            #expect((first + rest).components(separatedBy: "HTTP/1.1 200").count == 3 && !(first + rest).contains(" 100 "),
                    "\((first + rest).debugDescription)")
        }
        // Over the route's limit (1 MiB for the webhook, 64 KiB for a run request): no 100, the
        // 413 at once.
        for (path, length) in [("/webhooks/intakeq/\(webhookSecret)", 2 << 20), ("/api/v1/sync", 100_000)] {
            let fd = try connectedSocket(port: port)
            defer { close(fd) }
            let started = Date()
            Self.send(fd, "POST \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(rig.tokens.admin)\r\n"
                      + "Content-Type: application/json\r\nContent-Length: \(length)\r\nExpect: 100-continue\r\n\r\n")
            let (text, closed) = await Self.readAll(fd, within: 5)
            let took = Date().timeIntervalSince(started)
            #expect(text.hasPrefix("HTTP/1.1 413"), "\(path): \(text.prefix(200).debugDescription)")
            #expect(closed && took < 5, "\(path): closed \(closed) after \(took) s")
        }
    }

    /// A webhook whose Content-Length is far over the limit gets its 413 and the connection's
    /// end at once, not after the body it announced (never sent here) or the idle timeout.
    @Test func aBodyTooLargeEndsItsConnection() async throws {
        let rig = try await ServerRig.start { config in config.idleTimeoutSeconds = 10 }
        defer { Task { await rig.stop() } }
        let port = try #require(Int(rig.base.split(separator: ":").last ?? ""))
        let fd = try connectedSocket(port: port)
        defer { close(fd) }
        let started = Date()
        Self.send(fd, "POST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{\"Id\":")
        let (text, closed) = await Self.readAll(fd, within: 5)
        let took = Date().timeIntervalSince(started)
        #expect(text.hasPrefix("HTTP/1.1 413"), "\(text.prefix(200).debugDescription)")
        #expect(closed && took < 5, "closed \(closed) after \(took) s")
    }
}
