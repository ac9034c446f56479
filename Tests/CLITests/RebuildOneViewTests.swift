import Foundation
import TestSupport
import Testing

extension CLIBinaryTests {
    /// `syncledger rebuild --projection NAME` on a store whose views file is gone rebuilds the
    /// other views with it (they hold nothing), says so in one note, and the views verify; with
    /// the views in place it rebuilds the named one only.
    @Test func aRebuildOfOneViewIntoANewViewsFileRebuildsTheOthersWithIt() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("one-view")
        defer { tmp.remove() }
        let store = tmp.sub("store")
        try await makeSyncedStore(at: store, practice: practice)
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: "\(store)/projections.sqlite\(suffix)")
        }
        let first = try await cli(["rebuild", "--store", store, "--projection", "stream-index"])
        expectSuccess(first)
        let said = first.stdout + first.stderr
        #expect(first.stdout.hasPrefix("rebuilt ") && first.stdout.contains("appointments") && first.stdout.contains("stream_index"), "\(said)")
        #expect(first.stderr.contains("held nothing yet: rebuilt with stream_index"), "\(said)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        let again = try await cli(["rebuild", "--store", store, "--projection", "stream_index"])
        expectSuccess(again)
        #expect(again.stdout.hasPrefix("rebuilt stream_index from "), "\(again.stdout)")
        #expect(!again.stderr.contains("held nothing"), "\(again.stderr)")
    }
}
