import Domain
import EventLog
import Foundation
import IntakeQ
import Ledger
import Logging
import NIOConcurrencyHelpers
import Projections
import ServiceLifecycle

extension SyncLedgerServer {
    /// The store's health now: `sync_logs`, the last verify, the inbox (on the thread pool).
    public func healthSnapshot() async throws -> HealthSnapshot {
        let readFrom = viewsHandle.currentFile
        let views = self.views
        let store = self.store
        let now = config.alertClock()
        var s: HealthSnapshot
        do {
            s = try await blocking { try views.readSync { try HealthSnapshot.read($0, now: now) } }
        } catch where ViewsDamaged.isDamage(error) || error is ViewsReplaced {
            // A damaged page under `sync_logs` must not hide itself: the rest of the snapshot
            // stays at its defaults, and the damage is what /metrics and the alerts report.
            // (A file replaced by a rebuild is not damage: nothing is recorded; the server
            // reads the new file within seconds.)
            await noteViewsDamage(error, readFrom: readFrom)
            s = HealthSnapshot(now: now)
        }
        s.verify = Scrub.last(store)
        s.viewsDamage = ViewsDamageRecord.last(store)
        s.inboxDepth = coordinator.inbox.depth
        s.inboxOldestAt = coordinator.inbox.oldestReceivedAt
        return s
    }

    /// Records a damaged page of the views that the server met (a request, a run, the health
    /// check; `ViewsDamageRecord`), unless the store is read-only or `error` is no damage; the
    /// alerts and /metrics pick it up from there. File work, on the thread pool. `readFrom`: the
    /// views file the reader read. When another file is at the path now (a rebuild moved the
    /// damaged one aside and made a new one, `ViewsHandle`), the damage is that old file's,
    /// which nobody will read again: nothing is recorded (the rebuild cleared the record), and
    /// false is returned, so that a read may be tried again on the new file.
    @discardableResult
    func noteViewsDamage(_ error: any Error, readFrom: FileIdentity?) async -> Bool {
        guard let words = ViewsDamaged.words(of: error) else { return true }
        return await noteViewsDamage(words: words, readFrom: readFrom)
    }

    /// The same, for damage known by its words (a run's `viewsError`).
    @discardableResult
    func noteViewsDamage(words: String, readFrom: FileIdentity?) async -> Bool {
        let handle = viewsHandle
        let store = self.store
        do {
            return try await blocking {
                guard handle.stillAtPath(readFrom) else { return false }
                try ViewsDamageRecord.record(by: "serve", error: words, in: store)
                return true
            }
        } catch {
            config.logger.error("could not record the damaged views", metadata: ["error": "\(error)"])
            return true
        }
    }

    /// The alert conditions that hold now.
    public func alertConditions() async throws -> [AlertCondition] {
        config.alertRules.evaluate(try await healthSnapshot(), watchingSince: startedAt)
    }

    /// Checks the conditions and lets the alert engine announce what changed.
    @discardableResult
    public func checkAlerts() async throws -> [AlertMessage] {
        let conditions = try await alertConditions()
        let alerts = self.alerts
        // It appends to the alert log: file work, on the thread pool.
        return try await blocking { alerts.evaluate(conditions) }
    }

    /// `GET /metrics`: the store read now, then the registry's text.
    public func metricsText() async throws -> String {
        let s = try await healthSnapshot()
        let readFrom = viewsHandle.currentFile
        let views = self.views
        let store = self.store
        let head = try await blocking { try LedgerReader(store: store).head().seq }
        // The applied seq lives in the views too: a damaged page there leaves the lag at 0 and
        // the damage to `syncledger_views_damaged` (recorded by `healthSnapshot` or here).
        var applied = head
        do {
            applied = try await blocking { try views.appliedSeq() }
        } catch where ViewsDamaged.isDamage(error) || error is ViewsReplaced {
            await noteViewsDamage(error, readFrom: readFrom)
        }
        let (remaining, _) = await coordinator.budget()
        let c = coordinator.counters
        metrics.mirrorWebhooks(["accepted": c.accepted, "duplicate": c.duplicate, "not_in_roster": c.notInRoster,
                                "bad_secret": c.badSecret, "malformed": c.malformed, "too_large": c.tooLarge])
        metrics.update(s, headSeq: head, appliedSeq: applied, budgetRemaining: remaining == Int.max ? nil : remaining,
                       dailyBudget: config.policy.dailyBudget, firing: Set(alerts.firing.map(\.alert)))
        return metrics.exposition()
    }
}

/// Checks the alert conditions after every run and every `alertCheckSeconds`; the checks read
/// the store on the thread pool and deliveries run detached, so a sync never waits for them.
struct AlertService: Service {
    let server: SyncLedgerServer

    func run() async throws {
        let every = server.config.alertCheckSeconds
        let stopping = NIOLockedValueBox(false)
        var last = Date.distantPast
        await withGracefulShutdownHandler {
            while !stopping.withLockedValue({ $0 }) && !Task.isCancelled {
                let due = server.alertsDue.withLockedValue { d -> Bool in
                    defer { d = false }
                    return d
                }
                if due || Date().timeIntervalSince(last) >= every {
                    last = Date()
                    await check()
                }
                try? await Task.sleep(nanoseconds: 100_000_000)
            }
        } onGracefulShutdown: {
            stopping.withLockedValue { $0 = true }
        }
        // Stopped after the worker (first in the group, last to stop): the last run is checked
        // too, and messages already decided get a few seconds to leave.
        if server.alertsDue.withLockedValue({ $0 }) { await check() }
        await server.alerts.stop(grace: 5)
    }

    private func check() async {
        do {
            try await server.checkAlerts()
        } catch is CancellationError {
            // The server is stopping (a listen address it could not bind stops it at once):
            // not an error of the alerts (it read "error=CancellationError()" before the
            // real line: hostile test).
        } catch {
            server.config.logger.error("the alert conditions could not be checked", metadata: ["error": "\(error)"])
        }
    }
}
