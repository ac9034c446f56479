import Foundation
import Ledger

extension Trust {
    /// Every piece of evidence of an acknowledged head in `store`: `state/head` and the views'
    /// checkpoints (read without writing anything; from a private copy when the store must not
    /// be written). Throws when `state/head` is damaged.
    public static func evidence(_ store: Store) throws -> [HeadEvidence] {
        var evidence: [HeadEvidence] = []
        if let recorded = try recordedHead(store) { evidence.append(recorded) }
        evidence += ProjectionStore.checkpointEvidence(path: store.projectionsPath, readOnly: !store.isWritable)
        return evidence
    }

    /// Refuses (one line, `LedgerError`) when the log does not hold a head that was acknowledged.
    public static func requireNoLoss(_ store: Store) throws {
        try require(store, evidence: evidence(store))
    }
}
