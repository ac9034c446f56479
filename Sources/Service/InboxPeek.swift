import Foundation

extension WebhookInbox {
    /// Reads the inbox file without opening it for writing (for `syncledger status`, which must
    /// not change a file the server appends to): how many ids wait, and since when the oldest.
    public static func peek(path: String) -> (depth: Int, oldestReceivedAt: Int64?) {
        guard let data = FileManager.default.contents(atPath: path) else { return (0, nil) }
        var pending: [String: Int64] = [:]
        // Only whole lines: a torn last line was never acknowledged.
        let text = String(decoding: data.prefix((data.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 }) ?? 0), as: UTF8.self)
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 4, f[0] == "+", let at = Int64(f[3]) {
                let id = String(f[1])
                if pending[id] == nil { pending[id] = at }
            } else if f.count == 3, f[0] == "-" {
                pending[String(f[1])] = nil
            }
        }
        return (pending.count, pending.values.min())
    }
}
