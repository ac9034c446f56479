import CChecksum
import Crypto
import Foundation
import JSONCore

// The fast path of `PersonalData.sealObservationData`: the same output, computed on byte
// ranges of the data instead of a parsed `JSONValue` that is rebuilt and re-encoded.
//
// What the slow path writes is the canonical text of what is left of the object (keys sorted,
// no whitespace, numbers and strings normalised) and, per patient, the canonical text of the
// fields taken out. Canonical text of a value is usually its own bytes (IntakeQ writes
// minified JSON; most strings need no escaping, most numbers are integers), so the scanner
// below checks each value once — strictly, as `FastJSON` does — and notes whether its bytes
// already are canonical text. Those are copied through unchanged; an object whose keys are out
// of order is re-emitted with sorted keys (duplicate keys: the last wins, as in `FastJSON`); a
// string or number that is not canonical is converted by the very code the slow path uses
// (`FastJSON` then `canonicalText`). Anything else unusual (keys with escapes or non-ASCII
// bytes that need sorting, deep nesting, a non-object) gives up and the slow path runs, so
// errors and odd shapes behave exactly as before.

extension PersonalData {
    /// `sealObservationData` on bytes; nil when the data takes the slow path (which then gives
    /// the result, or the error, for it).
    static func sealObservationBytes(_ data: [UInt8], patientOf: (String) -> String?,
                                     key: (String) throws -> SymmetricKey) throws -> [UInt8]? {
        var scratch = SealScratch(expected: 1)
        return try sealObservationBytes(data, patientOf: patientOf, key: key, scratch: &scratch)
    }

    static func sealObservationBytes(_ data: [UInt8], patientOf: (String) -> String?, key: (String) throws -> SymmetricKey,
                                     scratch: inout SealScratch) throws -> [UInt8]? {
        // First everything that may give up (the scan, the clear object, the plaintexts), into
        // the scratch's buffers; only then the keys, the boxes and the event (as before).
        let plan: SealPlan?
        do {
            plan = try data.withUnsafeBufferPointer { buf throws(BytesBail) -> SealPlan? in
                // The member stack of the observation before (~5 KB, allocated and freed for each
                // observation otherwise).
                var scan = ByteJSON(b: buf, keyOrder: scratch.keyOrder, members: scratch.members)
                scratch.members = []
                defer { scratch.members = scan.members }
                return try scan.plan(patientOf: patientOf, work: &scratch.work)
            }
        } catch {
            return nil
        }
        // No object, no id, or nobody on the roster in it: unchanged, as the slow path.
        guard let plan, !scratch.work.patients.isEmpty else { return data }
        // `AppointmentObservation.encodeData`'s bytes, written into one buffer.
        scratch.work.out.removeAll()
        scratch.work.out.put(AppointmentObservation.idKey)
        scratch.work.out.putQuoted(plan.appointmentId)
        scratch.work.out.put(AppointmentObservation.hashKey)
        scratch.work.out.putQuoted(plan.contentHash)
        if let changed = plan.changedFields {
            scratch.work.out.put(AppointmentObservation.changedKey)
            for (i, f) in changed.enumerated() {
                if i > 0 { scratch.work.out.put(UInt8(ascii: ",")) }
                scratch.work.out.putQuoted(f)
            }
            scratch.work.out.put(UInt8(ascii: "]"))
        }
        scratch.work.out.put(AppointmentObservation.sealedKey)
        let patients = scratch.work.patients
        for (n, patient) in patients.enumerated() {
            let k = try scratch.key(patient, key)
            let nonce = scratch.nonces.next()
            try scratch.work.writePart(n, patient: patient, appointmentId: plan.appointmentId, key: k, nonce: nonce)
        }
        scratch.work.out.put(UInt8(ascii: "]"))
        scratch.work.out.put(AppointmentObservation.objectKey)
        scratch.work.out.put(scratch.work.clear.bytes)
        scratch.work.out.put(UInt8(ascii: "}"))
        return Array(scratch.work.out.bytes)
    }
}

/// What sealing one observation keeps besides what it leaves in `SealWork`: the wrapper's values.
struct SealPlan {
    var appointmentId: String
    var contentHash: String
    var changedFields: [String]?
}

/// What one thread sealing observations writes each one's pieces into, kept (with the storage of
/// its buffers and lists) from one observation to the next: the clear object, the patients'
/// plaintexts, a box's additional data and box, the event's bytes; the patients, their slots and
/// their fields. `ByteJSON.plan` fills it; `PersonalData.sealObservationBytes` writes the event.
struct SealWork: ~Copyable {
    var clear = ByteSink()
    /// The patients' plaintexts one after another (patient n's ends at `plainEnds[n]`).
    var plain = ByteSink()
    var plainEnds: [Int] = []
    var aad = ByteSink()
    var box = ByteSink()
    var out = ByteSink()
    /// The patients, in the slow path's order (the first slot's).
    var patients: [String] = []
    /// The slots in the order they were filled: patient (index in `patients`) and slot, -1 for
    /// `client`, -2 for `appointment`, n ≥ 0 for `AdditionalClients/n`.
    var slots: [(patient: Int, slot: Int)] = []
    /// The fields sealed, each with its patient.
    var fields: [(patient: Int, field: ByteJSON.PlainField)] = []
    /// One patient's fields being sorted.
    var sorting: [ByteJSON.PlainField] = []
    /// The elements of the object's `AdditionalClients` and whether each is sealed.
    var extra: [(start: Int, end: Int, canonical: Bool, sealed: Bool)] = []

    mutating func removeAll() {
        clear.removeAll()
        plain.removeAll()
        plainEnds.removeAll(keepingCapacity: true)
        patients.removeAll(keepingCapacity: true)
        slots.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
        extra.removeAll(keepingCapacity: true)
    }

    /// The index of `patient` in `patients`, added when new.
    mutating func patientIndex(_ patient: String) -> Int {
        if let n = patients.firstIndex(of: patient) { return n }
        patients.append(patient)
        return patients.count - 1
    }

    static let clientSlot = Array("\"client\"".utf8)
    static let appointmentSlot = Array("\"appointment\"".utf8)
    static let extraSlot = Array("\"AdditionalClients/".utf8)

    /// Appends patient n's part (`PersonalData.Part.encode`'s bytes), its plaintext sealed under `key`.
    mutating func writePart(_ n: Int, patient: String, appointmentId: String, key: SymmetricKey,
                            nonce: ArraySlice<UInt8>?) throws {
        // The additional data: `PersonalData.aad(patient, "appointment/" + appointmentId)`.
        aad.removeAll()
        aad.put(PersonalData.aadPrefix)
        aad.putUTF8(patient)
        aad.put(UInt8(ascii: "\n"))
        aad.put(Self.appointmentContext)
        aad.putUTF8(appointmentId)
        let start = n == 0 ? 0 : plainEnds[n - 1]
        let plainText = UnsafeBufferPointer(start: plain.base + start, count: plainEnds[n] - start)
        box.removeAll()
        let total = GCM.nonceCount + plainText.count + GCM.tagCount
        try GCM.seal(plainText, key: key, nonce: nonce, aad: aad.bytes, into: box.reserve(total))
        box.advance(total)

        if n > 0 { out.put(UInt8(ascii: ",")) }
        out.put(PersonalData.Part.patientKey)
        out.putQuoted(patient)
        out.put(PersonalData.Part.slotsKey)
        var first = true
        for s in slots where s.patient == n {
            if !first { out.put(UInt8(ascii: ",")) }
            first = false
            switch s.slot {
            case -1: out.put(Self.clientSlot)
            case -2: out.put(Self.appointmentSlot)
            default:
                out.put(Self.extraSlot)
                out.putDecimal(s.slot)
                out.put(UInt8(ascii: "\""))
            }
        }
        out.put(PersonalData.Part.boxKey)
        let length = Base64Canonical.encodedCount(total)
        Base64Canonical.encode(UnsafeRawBufferPointer(box.bytes), into: out.reserve(length))
        out.advance(length)
        out.put(UInt8(ascii: "\""))
        out.put(UInt8(ascii: "}"))
    }

    static let appointmentContext = Array("appointment/".utf8)
}

/// Where canonical text is written: an array, or a `ByteSink`.
protocol ByteOutput: ~Copyable {
    mutating func put(_ c: UInt8)
    mutating func put(_ bytes: UnsafeBufferPointer<UInt8>)
}

extension ByteOutput where Self: ~Copyable {
    /// `jsonQuoted(s)`'s bytes.
    mutating func putQuoted(_ s: String) {
        let done = s.utf8.withContiguousStorageIfAvailable { u -> Bool in
            if needsEscaping(u) { return false }
            put(UInt8(ascii: "\""))
            put(u)
            put(UInt8(ascii: "\""))
            return true
        }
        if done == true { return }
        putUTF8(jsonQuoted(s))
    }

    /// `s`'s UTF-8 bytes.
    mutating func putUTF8(_ s: String) {
        var s = s
        s.withUTF8 { put($0) }
    }

    mutating func put(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { put($0) }
    }

    /// The decimal digits of `n` (≥ 0).
    mutating func putDecimal(_ n: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { d in
            var v = n, count = 0
            repeat {
                d[19 - count] = UInt8(48 + v % 10)
                v /= 10
                count += 1
            } while v > 0
            put(UnsafeBufferPointer(rebasing: d[(20 - count)...]))
        }
    }
}

extension Array: ByteOutput where Element == UInt8 {
    @inline(__always) mutating func put(_ c: UInt8) { append(c) }
    @inline(__always) mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) { append(contentsOf: bytes) }
}

/// A growable byte buffer written through a pointer (one `memcpy` a piece, where appending to an
/// array checks its uniqueness and capacity through generic code each time). Not copyable: it
/// owns its storage.
struct ByteSink: ~Copyable, ByteOutput {
    private(set) var base: UnsafeMutablePointer<UInt8>
    private(set) var count = 0
    private var capacity = 0

    init() {
        base = Self.none
    }

    deinit {
        if capacity > 0 { base.deallocate() }
    }

    /// What an empty sink points at before its first byte (never written).
    nonisolated(unsafe) private static let none = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)

    mutating func removeAll() { count = 0 }

    /// Where the next `n` bytes go (`advance(n)` once they are written).
    @inline(__always) mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if capacity - count < n { grow(count + n) }
        return base + count
    }

    @inline(__always) mutating func advance(_ n: Int) { count += n }

    @inline(never) private mutating func grow(_ needed: Int) {
        var c = max(capacity * 2, 1024)
        while c < needed { c *= 2 }
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
        if count > 0 { p.initialize(from: base, count: count) }
        if capacity > 0 { base.deallocate() }
        base = p
        capacity = c
    }

    @inline(__always) mutating func put(_ c: UInt8) {
        reserve(1).initialize(to: c)
        count += 1
    }

    @inline(__always) mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
        let n = bytes.count
        guard n > 0 else { return }
        UnsafeMutableRawPointer(reserve(n)).copyMemory(from: bytes.baseAddress!, byteCount: n)
        count += n
    }

    var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }
}

/// The members of observation data that sealing and opening read.
struct ObservationWrapper {
    var appointmentId: String?
    var contentHash = ""
    /// nil when absent or not an array.
    var changedFields: [String]?
    /// The object's members on the member stack (sorted), when `object` is an object.
    var fields: Range<Int>?
    var objectSpan = 0..<0
    /// The bytes of the `sealed` value.
    var sealed: Range<Int>?
}

/// The fast path gives up (the slow path then runs).
struct BytesBail: Error {}

/// One member of an object being scanned: key bytes (between the quotes), value bytes.
struct ByteMember {
    /// The key's first eight bytes, big-endian (zero-padded): orders most keys by one compare.
    var prefix: UInt64
    var keyStart: Int
    var keyEnd: Int
    var valueStart: Int
    var valueEnd: Int
    /// The value's bytes are its canonical text.
    var canonical: Bool
    /// An earlier duplicate of a later key (the later one wins).
    var shadowed = false
    /// Emitted as `null` in the clear object (sealed).
    var sealed = false
}

/// How the members of objects with given keys, in a given order, are sorted (`collectMembers`):
/// for each of the last 8 key layouts it had to sort (first in, first out; a layout found again
/// stays where it is), the keys, the sorted order and which members are shadowed. IntakeQ writes
/// every appointment (and every `TelehealthInfo`, every additional client) with its keys in one
/// order, so sorting an object's members, ~12 % of sealing's CPU, becomes a compare of its keys'
/// bytes with a remembered layout's. One per sealing thread (`SealScratch`).
final class KeyOrderMemo {
    private struct Layout {
        /// The keys' bytes in their order in the object, one after another, and where each ends.
        var keys: [UInt8] = []
        var ends: [Int] = []
        /// Sorted position k holds the member at position `order[k]` of the object.
        var order: [Int] = []
        var shadowed: [Bool] = []
    }

    private var layouts: [Layout] = []
    /// The layout replaced when a new one is remembered and all places are taken.
    private var oldest = 0
    static let capacity = 8
    /// Objects sorted by a remembered layout (tests check that the memo is used at all).
    private(set) var hits = 0

    /// The remembered layout of the members in `range` (the same keys in the same order), if any.
    func layout(of members: [ByteMember], _ range: Range<Int>, _ b: UnsafeBufferPointer<UInt8>) -> Int? {
        for i in layouts.indices where layouts[i].ends.count == range.count && Self.fits(layouts[i], members, range, b) {
            return i
        }
        return nil
    }

    private static func fits(_ l: Layout, _ members: [ByteMember], _ range: Range<Int>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        l.keys.withUnsafeBufferPointer { k in
            l.ends.withUnsafeBufferPointer { ends in
                members.withUnsafeBufferPointer { all in
                    var start = 0
                    for j in 0..<ends.count {
                        let x = all[range.lowerBound + j], n = x.keyEnd - x.keyStart
                        guard ends[j] - start == n, n == 0 || memcmp(k.baseAddress! + start, b.baseAddress! + x.keyStart, n) == 0
                        else { return false }
                        start = ends[j]
                    }
                    return true
                }
            }
        }
    }

    /// Sorts the members in `range` as layout `i` has it (only the members it was found for).
    func apply(_ i: Int, to members: inout [ByteMember], _ range: Range<Int>) {
        let l = layouts[i], n = l.order.count
        precondition(range.count == n, "the members do not have the remembered layout")
        hits += 1
        l.order.withUnsafeBufferPointer { order in
            l.shadowed.withUnsafeBufferPointer { shadowed in
                members.withUnsafeMutableBufferPointer { all in
                    let m = UnsafeMutableBufferPointer(rebasing: all[range])
                    withUnsafeTemporaryAllocation(of: ByteMember.self, capacity: n) { sorted in
                        for k in 0..<n {
                            var x = m[order[k]]
                            x.shadowed = shadowed[k]
                            sorted.initializeElement(at: k, to: x)
                        }
                        for k in 0..<n { m[k] = sorted[k] }
                        _ = sorted.deinitialize()
                    }
                }
            }
        }
    }

    /// Remembers how the members `before` (in the object's order) were sorted into `after`, in
    /// place of the oldest layout when all places are taken.
    func remember(_ before: [ByteMember], sorted after: ArraySlice<ByteMember>, _ b: UnsafeBufferPointer<UInt8>) {
        var l = Layout()
        for x in before {
            l.keys.append(contentsOf: UnsafeBufferPointer(rebasing: b[x.keyStart..<x.keyEnd]))
            l.ends.append(l.keys.count)
        }
        // A member is where its key starts in the data; `before` is in that order.
        l.order = after.map { x in
            var lo = 0, hi = before.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if before[mid].keyStart < x.keyStart { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        l.shadowed = after.map(\.shadowed)
        if layouts.count < Self.capacity {
            layouts.append(l)
        } else {
            layouts[oldest] = l
            oldest = (oldest + 1) % Self.capacity
        }
    }
}

/// Strict JSON scanning over bytes with canonical-text checks and emission. The member list is
/// one stack shared by the nested objects being emitted.
struct ByteJSON {
    let b: UnsafeBufferPointer<UInt8>
    var members: [ByteMember] = []
    /// How the last key layouts it had to sort were sorted, reused for an object with the same
    /// keys in the same order (nil: every object is sorted).
    let keyOrder: KeyOrderMemo?
    static let maxDepth = 128

    /// `members`: an emptied member stack to reuse (its storage kept), e.g. the last one's.
    init(b: UnsafeBufferPointer<UInt8>, keyOrder: KeyOrderMemo? = nil, members reused: [ByteMember] = []) {
        self.b = b
        self.keyOrder = keyOrder
        members = reused
        members.removeAll(keepingCapacity: true)
        members.reserveCapacity(96)
    }

    @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    /// Skips whitespace; true when there was some.
    @inline(__always) func skipSpace(_ i: inout Int) -> Bool {
        let start = i
        while i < b.count, Self.isSpace(b[i]) { i += 1 }
        return i != start
    }

    // MARK: Scanning (validation as strict as FastJSON, plus "already canonical?")

    /// Checks the value at `i` (no leading whitespace) and moves past it. True when its bytes
    /// are exactly its canonical text. The scanning is C (`syncledger_json_scan_value` in
    /// CChecksum's jsonscan.c): as strict as FastJSON, the verdicts of the Swift scanner it
    /// replaced (JSONScanTests compares the two).
    @inline(__always) func scanValue(_ i: inout Int, depth: Int) throws(BytesBail) -> Bool {
        let r = syncledger_json_scan_value(b.baseAddress, b.count, &i, depth)
        if r < 0 { throw BytesBail() }
        return r != 0
    }

    /// A string at `i` (its opening quote). `plain`: no escapes and ASCII only (a key that sorts
    /// by its bytes). `canonical`: the token is what `jsonQuoted` writes for its value.
    @inline(__always) func scanString(_ i: inout Int) throws(BytesBail) -> (canonical: Bool, plain: Bool) {
        let r = syncledger_json_scan_string(b.baseAddress, b.count, &i)
        if r < 0 { throw BytesBail() }
        return (r & 1 != 0, r & 2 != 0)
    }

    /// -1, 0, 1 as the key bytes of two members compare (ASCII keys: Swift's String order).
    @inline(__always) func compareKeys(_ a0: Int, _ a1: Int, _ b0: Int, _ b1: Int) -> Int {
        Self.compare(b, a0, a1, b0, b1)
    }

    @inline(__always) static func compare(_ b: UnsafeBufferPointer<UInt8>, _ a0: Int, _ a1: Int, _ b0: Int, _ b1: Int) -> Int {
        let n = min(a1 - a0, b1 - b0)
        if n > 0 {
            let c = memcmp(b.baseAddress! + a0, b.baseAddress! + b0, n)
            if c != 0 { return c < 0 ? -1 : 1 }
        }
        return (a1 - a0) == (b1 - b0) ? 0 : ((a1 - a0) < (b1 - b0) ? -1 : 1)
    }

    /// Scans the members of the object at `i` onto the member stack, sorted by key with earlier
    /// duplicates marked shadowed; returns their index range. Keys must be plain (else bail).
    mutating func collectMembers(_ i: inout Int, depth: Int) throws(BytesBail) -> Range<Int> {
        guard depth < Self.maxDepth else { throw BytesBail() }
        let base = members.count
        i += 1
        _ = skipSpace(&i)
        if i < b.count, b[i] == UInt8(ascii: "}") {
            i += 1
            return base..<base
        }
        var sorted = true
        while true {
            _ = skipSpace(&i)
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw BytesBail() }
            let keyStart = i + 1
            guard try scanString(&i).plain else { throw BytesBail() }
            let keyEnd = i - 1
            _ = skipSpace(&i)
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw BytesBail() }
            i += 1
            _ = skipSpace(&i)
            let valueStart = i
            let canonical = try scanValue(&i, depth: depth + 1)
            if sorted, members.count > base {
                let last = members[members.count - 1]
                if compareKeys(last.keyStart, last.keyEnd, keyStart, keyEnd) >= 0 { sorted = false }
            }
            members.append(ByteMember(prefix: keyPrefix(keyStart, keyEnd), keyStart: keyStart, keyEnd: keyEnd,
                                      valueStart: valueStart, valueEnd: i, canonical: canonical))
            _ = skipSpace(&i)
            guard i < b.count else { throw BytesBail() }
            if b[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if b[i] == UInt8(ascii: "}") {
                i += 1
                break
            }
            throw BytesBail()
        }
        let range = base..<members.count
        if !sorted {
            // IntakeQ writes every object of a kind with its keys in one order: a remembered
            // layout usually sorts this one.
            let memo = keyOrder
            if let memo, let layout = memo.layout(of: members, range, b) {
                memo.apply(layout, to: &members, range)
                return range
            }
            let before = memo == nil ? [] : Array(members[range])
            sortMembers(range)
            for k in range.dropLast() {
                let x = members[k], y = members[k + 1]
                if compareKeys(x.keyStart, x.keyEnd, y.keyStart, y.keyEnd) == 0 { members[k].shadowed = true }
            }
            memo?.remember(before, sorted: members[range], b)
        }
        return range
    }

    /// The key's first eight bytes as a big-endian number, zero-padded (keys hold no NUL).
    @inline(__always) func keyPrefix(_ start: Int, _ end: Int) -> UInt64 {
        Self.prefix(UnsafeRawPointer(b.baseAddress! + start), end - start)
    }

    @inline(__always) static func prefix(_ p: UnsafeRawPointer, _ count: Int) -> UInt64 {
        if count >= 8 { return UInt64(bigEndian: p.loadUnaligned(as: UInt64.self)) }
        var v: UInt64 = 0
        for k in 0..<8 { v = v << 8 | (k < count ? UInt64(p.load(fromByteOffset: k, as: UInt8.self)) : 0) }
        return v
    }

    /// Sorts members by key, then by position (so that of equal keys the last comes last). The
    /// members are ordered through one integer each (the key's first seven bytes, then the
    /// position): sorting ~50 of those is much cheaper than moving the members around in a
    /// comparison sort; keys alike in their first seven bytes are then ordered in full.
    mutating func sortMembers(_ range: Range<Int>) {
        let bytes = b
        guard range.count <= 256 else {
            members[range].sort { x, y in
                if x.prefix != y.prefix { return x.prefix < y.prefix }
                let c = Self.compare(bytes, x.keyStart, x.keyEnd, y.keyStart, y.keyEnd)
                return c != 0 ? c < 0 : x.keyStart < y.keyStart
            }
            return
        }
        let first = range.lowerBound
        var keys = [UInt64](unsafeUninitializedCapacity: range.count) { buffer, initialized in
            for j in 0..<range.count { buffer[j] = (members[first + j].prefix & ~0xFF) | UInt64(j) }
            initialized = range.count
        }
        keys.sort()
        var order = keys.map { Int($0 & 0xFF) }
        var start = 0
        while start < order.count {
            var end = start + 1
            while end < order.count, keys[end] >> 8 == keys[start] >> 8 { end += 1 }
            if end - start > 1 {
                // Insertion sort of the run by the whole key (positions break ties).
                for k in (start + 1)..<end {
                    let moving = order[k]
                    let x = members[first + moving]
                    var j = k
                    while j > start {
                        let y = members[first + order[j - 1]]
                        let c = Self.compare(bytes, y.keyStart, y.keyEnd, x.keyStart, x.keyEnd)
                        if c < 0 || (c == 0 && order[j - 1] < moving) { break }
                        order[j] = order[j - 1]
                        j -= 1
                    }
                    order[j] = moving
                }
            }
            start = end
        }
        let sortedMembers = order.map { members[first + $0] }
        members.replaceSubrange(range, with: sortedMembers)
    }

    /// The member with this key (the last of duplicates), by index: a binary search of the
    /// sorted members (the non-shadowed one of equal keys is the last).
    func find(_ key: StaticString, in range: Range<Int>) -> Int? {
        let n = key.utf8CodeUnitCount
        let k = UnsafeRawPointer(key.utf8Start)
        let p = Self.prefix(k, n)
        let base = b.baseAddress!
        var lo = range.lowerBound, hi = range.upperBound
        // The first member whose key is greater than `key`.
        while lo < hi {
            let mid = (lo + hi) / 2
            let x = members[mid]
            var greater: Bool
            if x.prefix != p {
                greater = x.prefix > p
            } else {
                let xl = x.keyEnd - x.keyStart
                let c = memcmp(base + x.keyStart, k, min(xl, n))
                greater = c != 0 ? c > 0 : xl > n
            }
            if greater { hi = mid } else { lo = mid + 1 }
        }
        guard lo > range.lowerBound else { return nil }
        let x = members[lo - 1]
        guard x.prefix == p, x.keyEnd - x.keyStart == n, memcmp(base + x.keyStart, k, n) == 0 else { return nil }
        return lo - 1
    }

    // MARK: Values as the slow path reads them

    func token(_ start: Int, _ end: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: b[start..<end])
    }

    /// The elements of the (scanned) array at `start`: each one's bytes and whether they are its
    /// canonical text.
    func elements(_ start: Int, depth: Int) throws(BytesBail) -> [(start: Int, end: Int, canonical: Bool)] {
        var list: [(start: Int, end: Int, canonical: Bool)] = []
        var j = start + 1
        _ = skipSpace(&j)
        guard b[j] != UInt8(ascii: "]") else { return list }
        while true {
            _ = skipSpace(&j)
            let s = j
            let canonical = try scanValue(&j, depth: depth)
            list.append((s, j, canonical))
            _ = skipSpace(&j)
            guard b[j] == UInt8(ascii: ",") else { return list }
            j += 1
        }
    }

    /// `JSONValue.stringValue` of a scanned value (nil for null, arrays and objects).
    func stringValue(_ start: Int, _ end: Int, canonical: Bool) throws(BytesBail) -> String? {
        switch b[start] {
        case UInt8(ascii: "\""):
            if !token(start, end).contains(UInt8(ascii: "\\")) {
                return String(decoding: token(start + 1, end - 1), as: UTF8.self)
            }
            return try parsed(start, end).stringValue
        case UInt8(ascii: "t"): return "true"
        case UInt8(ascii: "f"): return "false"
        case UInt8(ascii: "n"), UInt8(ascii: "{"), UInt8(ascii: "["): return nil
        default:
            if canonical { return String(decoding: token(start, end), as: UTF8.self) }
            return try parsed(start, end).stringValue
        }
    }

    /// A scalar token parsed by FastJSON (what the slow path does with it).
    func parsed(_ start: Int, _ end: Int) throws(BytesBail) -> JSONValue {
        do { return try FastJSON.parse(token(start, end)) } catch { throw BytesBail() }
    }

    /// `PersonalData.present` of a scanned value.
    func present(_ start: Int, _ end: Int) -> Bool {
        switch b[start] {
        case UInt8(ascii: "n"): return false
        case UInt8(ascii: "\""): return end - start > 2
        case UInt8(ascii: "["):
            var i = start + 1
            _ = skipSpace(&i)
            return b[i] != UInt8(ascii: "]")
        default: return true
        }
    }

    // MARK: Emitting canonical text

    mutating func emit<O: ByteOutput & ~Copyable>(_ start: Int, _ end: Int, canonical: Bool, depth: Int,
                                                  into out: inout O) throws(BytesBail) {
        if canonical {
            out.put(token(start, end))
            return
        }
        switch b[start] {
        case UInt8(ascii: "{"):
            var i = start
            let range = try collectMembers(&i, depth: depth)
            defer { members.removeSubrange(range) }
            out.put(UInt8(ascii: "{"))
            var first = true
            for m in range where !members[m].shadowed {
                if !first { out.put(UInt8(ascii: ",")) }
                first = false
                try emitMember(members[m], depth: depth + 1, into: &out)
            }
            out.put(UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            out.put(UInt8(ascii: "["))
            for (n, e) in try elements(start, depth: depth + 1).enumerated() {
                if n > 0 { out.put(UInt8(ascii: ",")) }
                try emit(e.start, e.end, canonical: e.canonical, depth: depth + 1, into: &out)
            }
            out.put(UInt8(ascii: "]"))
        case UInt8(ascii: "\""):
            let s: String
            if !token(start, end).contains(UInt8(ascii: "\\")) {
                s = String(decoding: token(start + 1, end - 1), as: UTF8.self)
            } else {
                guard case .string(let v) = try parsed(start, end) else { throw BytesBail() }
                s = v
            }
            out.putUTF8(jsonQuoted(s))
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            out.put(token(start, end))
        default:
            // A number too large for a Double (`1e400`) has no canonical text to copy: the slow
            // path keeps its parsed value beside the text it writes.
            let value = try parsed(start, end)
            if case .number(let d) = value, !d.isFinite { throw BytesBail() }
            out.putUTF8(value.canonicalText)
        }
    }

    /// The key's bytes are `name`'s (a compare of bytes, not a walk of two sequences).
    @inline(__always) static func spells(_ key: UnsafeBufferPointer<UInt8>, _ name: StaticString) -> Bool {
        key.count == name.utf8CodeUnitCount && memcmp(key.baseAddress!, name.utf8Start, key.count) == 0
    }

    /// Appends a member's canonical text, `"key":value`: its own bytes when they are that text
    /// already (a plain key, no space around the colon, a canonical value), one copy instead of five.
    mutating func emitMember<O: ByteOutput & ~Copyable>(_ x: ByteMember, depth: Int, into out: inout O) throws(BytesBail) {
        if x.canonical, x.valueStart == x.keyEnd + 2 {
            out.put(token(x.keyStart - 1, x.valueEnd))
            return
        }
        out.put(UInt8(ascii: "\""))
        out.put(token(x.keyStart, x.keyEnd))
        out.put(UInt8(ascii: "\""))
        out.put(UInt8(ascii: ":"))
        try emit(x.valueStart, x.valueEnd, canonical: x.canonical, depth: depth, into: &out)
    }

    // MARK: The observation

    /// The wrapper of observation data (`AppointmentObservation.encodeData`'s layout, any key
    /// order), member by member; the object's members are collected as it is met (so its bytes
    /// are scanned once). Keys must be plain; a repeated key gives up.
    mutating func observation() throws(BytesBail) -> ObservationWrapper {
        var i = 0
        _ = skipSpace(&i)
        guard i < b.count, b[i] == UInt8(ascii: "{") else { throw BytesBail() }
        i += 1
        // The values of `appointment_id`, `content_hash` and `changed_fields` (a repeated key
        // gives up, so each is met once at most).
        var idValue, hashValue, changedValue: (start: Int, end: Int, canonical: Bool)?
        var out = ObservationWrapper()
        _ = skipSpace(&i)
        if i < b.count, b[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            var seen: [(Int, Int)] = []
            seen.reserveCapacity(8)
            while true {
                _ = skipSpace(&i)
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw BytesBail() }
                let keyStart = i + 1
                guard try scanString(&i).plain else { throw BytesBail() }
                let keyEnd = i - 1
                for (s, e) in seen where compareKeys(s, e, keyStart, keyEnd) == 0 { throw BytesBail() }
                seen.append((keyStart, keyEnd))
                _ = skipSpace(&i)
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw BytesBail() }
                i += 1
                _ = skipSpace(&i)
                let start = i
                let key = token(keyStart, keyEnd)
                if Self.spells(key, "object") {
                    guard i < b.count, b[i] == UInt8(ascii: "{") else { throw BytesBail() }
                    out.fields = try collectMembers(&i, depth: 1)
                    out.objectSpan = start..<i
                } else {
                    let canonical = try scanValue(&i, depth: 1)
                    if Self.spells(key, "appointment_id") {
                        idValue = (start, i, canonical)
                    } else if Self.spells(key, "content_hash") {
                        hashValue = (start, i, canonical)
                    } else if Self.spells(key, "changed_fields") {
                        changedValue = (start, i, canonical)
                    } else if Self.spells(key, "sealed") {
                        out.sealed = start..<i
                    }
                }
                _ = skipSpace(&i)
                guard i < b.count else { throw BytesBail() }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    break
                }
                throw BytesBail()
            }
        }
        _ = skipSpace(&i)
        guard i == b.count else { throw BytesBail() }

        if let idValue {
            out.appointmentId = try stringValue(idValue.start, idValue.end, canonical: idValue.canonical)
        }
        if let h = hashValue {
            out.contentHash = try stringValue(h.start, h.end, canonical: h.canonical) ?? ""
        }
        if let c = changedValue, b[c.start] == UInt8(ascii: "[") {
            var list: [String] = []
            for e in try elements(c.start, depth: 2) {
                if let v = try stringValue(e.start, e.end, canonical: e.canonical) { list.append(v) }
            }
            out.changedFields = list
        }
        return out
    }

    /// A field a part seals: its key (a member's key bytes in the data, or an additional
    /// client's slot, `AdditionalClients/N`) and its value's bytes. Plain integers, so collecting
    /// and sorting a part's fields retains and releases nothing (the key bytes in an array each
    /// did: ~8 % of sealing's CPU).
    struct PlainField {
        var keyStart = 0, keyEnd = 0
        /// N of the key `AdditionalClients/N`; -1: the key is `keyStart..<keyEnd` of the data.
        var slotKey = -1
        var start: Int, end: Int
        var canonical: Bool

        init(_ m: ByteMember) {
            (keyStart, keyEnd, start, end, canonical) = (m.keyStart, m.keyEnd, m.valueStart, m.valueEnd, m.canonical)
        }

        init(slotKey: Int, _ start: Int, _ end: Int, _ canonical: Bool) {
            (self.slotKey, self.start, self.end, self.canonical) = (slotKey, start, end, canonical)
        }
    }

    /// Reads the observation data and works out what `sealObservationData` takes out of it:
    /// the patients, their slots, their plaintexts and the clear object, written into `work`.
    /// nil: no object or no id (the data is returned unchanged).
    mutating func plan(patientOf: (String) -> String?, work: inout SealWork) throws(BytesBail) -> SealPlan? {
        work.removeAll()
        let wrapper = try observation()
        guard let fields = wrapper.fields, let appointmentId = wrapper.appointmentId else { return nil }
        let contentHash = wrapper.contentHash, changed = wrapper.changedFields, objectSpan = wrapper.objectSpan

        // Who owns what, in the slow path's order: the primary client, additional clients, the
        // appointment's free text.
        var primary: String?
        if let c = find("ClientId", in: fields) {
            let x = members[c]
            if let id = try stringValue(x.valueStart, x.valueEnd, canonical: x.canonical) { primary = patientOf(id) }
        }
        var owner = primary
        if let p = primary {
            let n = work.patientIndex(p)
            for name in PersonalData.clientFieldNames {
                guard let m = find(name, in: fields), present(members[m].valueStart, members[m].valueEnd) else { continue }
                work.fields.append((n, PlainField(members[m])))
                members[m].sealed = true
            }
            work.slots.append((n, -1))
        }
        // Additional clients of the roster: each entry sealed whole, `{}` left in its place.
        let extraMember = find("AdditionalClients", in: fields)
        if let a = extraMember, b[members[a].valueStart] == UInt8(ascii: "[") {
            for (s, j, canonical) in try elements(members[a].valueStart, depth: 3) {
                var sealedHere = false
                if b[s] == UInt8(ascii: "{") {
                    var e = s
                    let entry = try collectMembers(&e, depth: 3)
                    var patient: String?
                    if let c = find("ClientId", in: entry) {
                        let x = members[c]
                        if let id = try stringValue(x.valueStart, x.valueEnd, canonical: x.canonical) { patient = patientOf(id) }
                    }
                    members.removeSubrange(entry)
                    if let p = patient {
                        if owner == nil { owner = p }
                        let n = work.patientIndex(p), slot = work.extra.count
                        work.slots.append((n, slot))
                        work.fields.append((n, PlainField(slotKey: slot, s, j, canonical)))
                        sealedHere = true
                    }
                }
                work.extra.append((s, j, canonical, sealedHere))
            }
        }
        if let owner {
            var any = false
            for name in PersonalData.appointmentFieldNames {
                guard let m = find(name, in: fields), present(members[m].valueStart, members[m].valueEnd) else { continue }
                if !any {
                    any = true
                    work.slots.append((work.patientIndex(owner), -2))
                }
                work.fields.append((work.patientIndex(owner), PlainField(members[m])))
                members[m].sealed = true
            }
        }

        // The clear object.
        work.clear.put(UInt8(ascii: "{"))
        _ = work.clear.reserve(objectSpan.count + 16)
        var first = true
        let extraSealed = work.extra.contains(where: \.sealed)
        for m in fields where !members[m].shadowed {
            if !first { work.clear.put(UInt8(ascii: ",")) }
            first = false
            let x = members[m]
            if !x.sealed, m != extraMember || !extraSealed {
                try emitMember(x, depth: 2, into: &work.clear)
                continue
            }
            work.clear.put(UInt8(ascii: "\""))
            work.clear.put(token(x.keyStart, x.keyEnd))
            work.clear.put(UInt8(ascii: "\""))
            work.clear.put(UInt8(ascii: ":"))
            if x.sealed {
                work.clear.put(Self.null)
            } else {
                work.clear.put(UInt8(ascii: "["))
                for n in work.extra.indices {
                    let e = work.extra[n]
                    if n > 0 { work.clear.put(UInt8(ascii: ",")) }
                    if e.sealed {
                        work.clear.put(UInt8(ascii: "{"))
                        work.clear.put(UInt8(ascii: "}"))
                    } else {
                        try emit(e.start, e.end, canonical: e.canonical, depth: 3, into: &work.clear)
                    }
                }
                work.clear.put(UInt8(ascii: "]"))
            }
        }
        work.clear.put(UInt8(ascii: "}"))

        // Each patient's fields: the canonical text of an object of them (keys sorted).
        for p in work.patients.indices {
            work.sorting.removeAll(keepingCapacity: true)
            var slotKeys = false
            for (q, f) in work.fields where q == p {
                work.sorting.append(f)
                if f.slotKey >= 0 { slotKeys = true }
            }
            if !slotKeys {
                // Keys of the data itself, compared where they lie.
                let base = b.baseAddress!
                work.sorting.sort { x, y in
                    let c = memcmp(base + x.keyStart, base + y.keyStart, min(x.keyEnd - x.keyStart, y.keyEnd - y.keyStart))
                    return c != 0 ? c < 0 : x.keyEnd - x.keyStart < y.keyEnd - y.keyStart
                }
            } else {
                func key(_ f: PlainField) -> [UInt8] {
                    f.slotKey < 0 ? Array(token(f.keyStart, f.keyEnd)) : Array("AdditionalClients/\(f.slotKey)".utf8)
                }
                work.sorting.sort { key($0).lexicographicallyPrecedes(key($1)) }
            }
            work.plain.put(UInt8(ascii: "{"))
            for n in work.sorting.indices {
                let f = work.sorting[n]
                if n > 0 { work.plain.put(UInt8(ascii: ",")) }
                if f.slotKey < 0 {
                    work.plain.put(UInt8(ascii: "\""))
                    work.plain.put(token(f.keyStart, f.keyEnd))
                } else {
                    work.plain.put(SealWork.extraSlot)  // with its opening quote
                    work.plain.putDecimal(f.slotKey)
                }
                work.plain.put(UInt8(ascii: "\""))
                work.plain.put(UInt8(ascii: ":"))
                try emit(f.start, f.end, canonical: f.canonical, depth: 2, into: &work.plain)
            }
            work.plain.put(UInt8(ascii: "}"))
            work.plainEnds.append(work.plain.count)
        }
        return SealPlan(appointmentId: appointmentId, contentHash: contentHash, changedFields: changed)
    }

    static let null = Array("null".utf8)
}

/// A patient's key (the name lets tests hold one without importing Crypto).
typealias SealingKey = SymmetricKey

extension PersonalData {
    /// The plaintext bytes of a box (for tests comparing sealed output byte for byte); nil when
    /// it does not open.
    static func openedPlaintext(_ box: String, patient: String, context: String, key: SymmetricKey) -> [UInt8]? {
        guard let bytes = Data(base64Encoded: box), let sealed = try? AES.GCM.SealedBox(combined: bytes),
            let plain = try? AES.GCM.open(sealed, using: key, authenticating: aad(patient, context))
        else { return nil }
        return Array(plain)
    }
}
