import Crypto
import Dispatch
import Foundation

extension PersonalData {
    /// `sealObservationData` over the data of many events, spread over the machine's cores: the
    /// same bytes as sealing them one by one (but for the random nonces), in the same order. When
    /// any fails, the error of the first failing one (in order) is thrown. `patientOf` and `key`
    /// are called from several threads at once (`KeyRing.key(for:)` may be).
    public static func sealObservationData(_ datas: [[UInt8]], patientOf: @Sendable (String) -> String?,
                                           key: @Sendable (String) throws -> SymmetricKey) throws -> [[UInt8]] {
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, datas.count / minimumPerWorker)
        guard workers > 1 else {
            return try datas.map { try sealObservationData($0, patientOf: patientOf, key: key) }
        }
        var out = [[UInt8]](repeating: [], count: datas.count)
        let failures = withoutActuallyEscaping(patientOf) { patientOf in
            withoutActuallyEscaping(key) { key in
                datas.withUnsafeBufferPointer { input in
                    out.withUnsafeMutableBufferPointer { output in
                        let slots = Slots(input: input, output: output, failures: .allocate(capacity: workers))
                        slots.failures.initialize(repeating: nil, count: workers)
                        defer { slots.failures.deallocate() }
                        // Worker w seals one contiguous share and writes only its own slots.
                        DispatchQueue.concurrentPerform(iterations: workers) { w in
                            let range = share(w, of: workers, count: slots.input.count)
                            for i in range {
                                do {
                                    slots.output[i] = try sealObservationData(slots.input[i], patientOf: patientOf, key: key)
                                } catch {
                                    slots.failures[w] = error
                                    return
                                }
                            }
                        }
                        return (0..<workers).compactMap { slots.failures[$0] }
                    }
                }
            }
        }
        // Shares are in order, so the first worker that failed holds the first failure.
        if let first = failures.first { throw first }
        return out
    }

    /// Fewer events than this per worker are sealed on the caller's thread alone.
    static let minimumPerWorker = 64

    /// Worker `w` of `workers`: its contiguous share of `count` items.
    static func share(_ w: Int, of workers: Int, count: Int) -> Range<Int> {
        (count * w / workers)..<(count * (w + 1) / workers)
    }

    /// The buffers the workers share: each index of `output` and of `failures` is written by one
    /// worker only, and read after `concurrentPerform` returned.
    private struct Slots: @unchecked Sendable {
        let input: UnsafeBufferPointer<[UInt8]>
        let output: UnsafeMutableBufferPointer<[UInt8]>
        let failures: UnsafeMutablePointer<(any Error)?>
    }
}
