import Crypto
import Dispatch
import Foundation
import Synchronization

extension PersonalData {
    /// `sealObservationData` over the data of many events, spread over the machine's cores: the
    /// same bytes as sealing them one by one (but for the random nonces), in the same order. When
    /// any fails, the error of the first failing one (in order) is thrown; the workers stop at
    /// items after the first failure they know of. `patientOf` and `key` are called from several
    /// threads at once (`KeyRing.key(for:)` may be).
    public static func sealObservationData(_ datas: [[UInt8]], patientOf: @Sendable (String) -> String?,
                                           key: @Sendable (String) throws -> SymmetricKey) throws -> [[UInt8]] {
        try sealObservationData(datas, workers: ProcessInfo.processInfo.activeProcessorCount, patientOf: patientOf, key: key)
    }

    /// Seals the observations (`appointment.discovered` / `changed`) among `events` in place, all
    /// together (the batch `sealObservationData` above); other events are left as they are.
    public static func sealObservations(in events: inout [NewEvent], patientOf: @Sendable (String) -> String?,
                                        key: @Sendable (String) throws -> SymmetricKey) throws {
        let observations = events.indices.filter {
            events[$0].type == .appointmentDiscovered || events[$0].type == .appointmentChanged
        }
        let sealed = try sealObservationData(observations.map { events[$0].data }, patientOf: patientOf, key: key)
        for (i, data) in zip(observations, sealed) { events[i].data = data }
    }

    /// The same on at most `workers` threads (tests choose it).
    static func sealObservationData(_ datas: [[UInt8]], workers most: Int, patientOf: @Sendable (String) -> String?,
                                    key: @Sendable (String) throws -> SymmetricKey) throws -> [[UInt8]] {
        let workers = min(most, datas.count / minimumPerWorker)
        guard workers > 1 else {
            var scratch = SealScratch(expected: datas.count)
            return try datas.map { try sealObservationData($0, patientOf: patientOf, key: key, scratch: &scratch) }
        }
        var out = [[UInt8]](repeating: [], count: datas.count)
        let firstFailure = FirstFailure()
        withoutActuallyEscaping(patientOf) { patientOf in
            withoutActuallyEscaping(key) { key in
                datas.withUnsafeBufferPointer { input in
                    out.withUnsafeMutableBufferPointer { output in
                        let slots = Slots(input: input, output: output)
                        // Worker w seals one contiguous share and writes only its own slots. An
                        // item after the first failure met so far is not sealed.
                        DispatchQueue.concurrentPerform(iterations: workers) { w in
                            let mine = share(w, of: workers, count: slots.input.count)
                            var scratch = SealScratch(expected: mine.count)
                            for i in mine {
                                guard i < firstFailure.index else { return }
                                do {
                                    slots.output[i] = try sealObservationData(slots.input[i], patientOf: patientOf, key: key,
                                                                              scratch: &scratch)
                                } catch {
                                    firstFailure.record(i, error)
                                    return
                                }
                            }
                        }
                    }
                }
            }
        }
        if let error = firstFailure.error { throw error }
        return out
    }

    /// Fewer events than this per worker are sealed on the caller's thread alone.
    static let minimumPerWorker = 64

    /// Worker `w` of `workers`: its contiguous share of `count` items.
    static func share(_ w: Int, of workers: Int, count: Int) -> Range<Int> {
        (count * w / workers)..<(count * (w + 1) / workers)
    }

    /// The input and output buffers the workers share: each index of `output` is written by one
    /// worker only, and read after `concurrentPerform` returned.
    private struct Slots: @unchecked Sendable {
        let input: UnsafeBufferPointer<[UInt8]>
        let output: UnsafeMutableBufferPointer<[UInt8]>
    }

    /// The lowest index that failed so far (`Int.max`: none), and its error.
    private final class FirstFailure: Sendable {
        private let first = Mutex<(index: Int, error: (any Error)?)>((Int.max, nil))

        func record(_ i: Int, _ error: any Error) {
            first.withLock { if i < $0.index { $0 = (i, error) } }
        }

        var index: Int { first.withLock { $0.index } }
        var error: (any Error)? { first.withLock { $0.error } }
    }
}
