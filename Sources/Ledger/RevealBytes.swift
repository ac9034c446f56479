import Crypto
import Foundation
import JSONCore

// The fast path of opening a sealed observation on read (`ReadPrivacy.reveal`): the same bytes
// `openObservationDataParsing` gives, computed on byte ranges of the stored data instead of
// parsing it whole into a `JSONValue`, putting the opened fields in and writing the canonical
// text of the result again.
//
// The stored clear object is canonical text (sealing writes it so), and so is each box's
// plaintext; the opened object is the clear object's members with the opened fields in their
// place (or inserted in key order), each value copied through when its bytes are canonical
// already (`ByteJSON.emit` converts the others as the slow path would). Anything unusual (a part
// that does not open, keys that are not plain ASCII, a box that replaces `AdditionalClients`
// whole) gives up, and the slow path runs and gives the result or the error.

extension PersonalData {
    /// `openObservationDataParsing` on bytes; nil when the slow path must run (it then gives the
    /// result, or the error).
    static func openObservationBytes(_ data: [UInt8], key: (String) throws -> SymmetricKey?) -> [UInt8]? {
        try? data.withUnsafeBufferPointer { buf in
            var scan = ByteJSON(b: buf)
            return try scan.opened(key: key)
        }
    }

    /// What reading a sealed `appointment.*` observation gives: the data with each part opened
    /// into the object (a forgotten patient's fields as `(forgotten)`) and `sealed` gone, in the
    /// layout `AppointmentObservation.encodeData` writes, and its parsed value; nil when the data
    /// is not a sealed observation (it is read as stored). The reference the byte path is tested
    /// against.
    static func openObservationDataParsing(_ data: [UInt8], key: (String) throws -> SymmetricKey?) throws
        -> (data: [UInt8], value: JSONValue)?
    {
        guard let d = try? FastJSON.parse(data), case .array(let parts)? = d["sealed"], !parts.isEmpty,
            let object = d["object"], let id = d["appointment_id"]?.stringValue
        else { return nil }
        let opened = try openAppointment(object, parts: parts, appointmentId: id, key: key)
        return observationData(d, object: opened, contentHash: nil)
    }

    /// The data of an appointment event with `object` in place of the stored one (and without
    /// `sealed`), keeping the layout `AppointmentObservation.encodeData` writes.
    static func observationData(_ d: JSONValue, object: JSONValue, contentHash: String?) -> (data: [UInt8], value: JSONValue) {
        let changed: [String]? = {
            if case .array(let a)? = d["changed_fields"] { return a.compactMap(\.stringValue) }
            return nil
        }()
        let obs = AppointmentObservation(
            appointmentId: d["appointment_id"]?.stringValue ?? "",
            contentHash: contentHash ?? d["content_hash"]?.stringValue ?? "",
            changedFields: changed ?? [], object: Array(object.canonicalText.utf8))
        var value: [String: JSONValue] = [
            "appointment_id": .string(obs.appointmentId), "content_hash": .string(obs.contentHash), "object": object,
        ]
        if let changed { value["changed_fields"] = .array(changed.map(JSONValue.string)) }
        return (obs.encodeData(includeChangedFields: changed != nil), .object(value))
    }
}

extension ByteJSON {
    /// The opened observation data (see `PersonalData.openObservationBytes`).
    mutating func opened(key: (String) throws -> SymmetricKey?) throws -> [UInt8] {
        let w = try observation()
        guard let fields = w.fields, let sealed = w.sealed, let appointmentId = w.appointmentId,
            case .array(let parts) = try parsed(sealed.lowerBound, sealed.upperBound), !parts.isEmpty
        else { throw BytesBail() }

        // The clear `AdditionalClients` array: its elements' bytes (an opened entry replaces one).
        var extra: [(start: Int, end: Int, canonical: Bool)]?
        let extraMember = find("AdditionalClients", in: fields)
        if let a = extraMember, b[members[a].valueStart] == UInt8(ascii: "[") {
            extra = try elements(members[a].valueStart, depth: 3)
        }
        /// The index of `AdditionalClients/<n>` when the slow path replaces that element. Another
        /// spelling of a number `Int` reads (`00`, `+0`, `-0`) gives up: two of them in one box
        /// name one element, and the slow path applies a box's fields in no fixed order.
        func element(_ field: String) throws(BytesBail) -> Int? {
            guard field.hasPrefix("AdditionalClients/"), let n = Int(field.dropFirst("AdditionalClients/".count)),
                let count = extra?.count, n < count
            else { return nil }
            guard n >= 0 else { return nil }
            guard field.utf8.count == "AdditionalClients/".utf8.count + String(n).utf8.count else { throw BytesBail() }
            return n
        }

        // What the parts put in, in their order (a later part's value wins, as in the slow path).
        var top: [String: [UInt8]] = [:]
        var entries: [Int: [UInt8]] = [:]
        for part in parts {
            guard let patient = part["patient"]?.stringValue, let box = part["box"]?.stringValue else { throw BytesBail() }
            if let k = try key(patient) {
                guard let plain = PersonalData.openedPlaintext(box, patient: patient, context: "appointment/" + appointmentId, key: k)
                else { throw BytesBail() }
                try plain.withUnsafeBufferPointer { pb throws(BytesBail) in
                    var p = ByteJSON(b: pb)
                    var i = 0
                    _ = p.skipSpace(&i)
                    guard i < pb.count, pb[i] == UInt8(ascii: "{") else { throw BytesBail() }
                    let range = try p.collectMembers(&i, depth: 1)
                    _ = p.skipSpace(&i)
                    guard i == pb.count else { throw BytesBail() }
                    for m in range where !p.members[m].shadowed {
                        let x = p.members[m]
                        let field = String(decoding: p.token(x.keyStart, x.keyEnd), as: UTF8.self)
                        guard field != "AdditionalClients" else { throw BytesBail() }
                        var value: [UInt8] = []
                        try p.emit(x.valueStart, x.valueEnd, canonical: x.canonical, depth: 2, into: &value)
                        if let n = try element(field) { entries[n] = value } else { top[field] = value }
                    }
                }
            } else {
                // A forgotten patient (no key): the clear part is cleaned too
                // (`PersonalData.openAppointment`), which the parsing path does; a rare event.
                throw BytesBail()
            }
        }

        // The opened object: the clear members and the opened fields, in key order.
        let added = top.keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        var object: [UInt8] = []
        object.reserveCapacity(w.objectSpan.count + 256)
        object.append(UInt8(ascii: "{"))
        var first = true
        func member(_ key: UnsafeBufferPointer<UInt8>) {
            if !first { object.append(UInt8(ascii: ",")) }
            first = false
            object.append(UInt8(ascii: "\""))
            object.append(contentsOf: key)
            object.append(UInt8(ascii: "\""))
            object.append(UInt8(ascii: ":"))
        }
        var next = 0
        for m in fields where !members[m].shadowed {
            let x = members[m]
            let key = token(x.keyStart, x.keyEnd)
            // Opened fields the clear object lacks, before this key.
            while next < added.count, added[next].lexicographicallyPrecedes(key) {
                added[next].withUnsafeBufferPointer { member($0) }
                object.append(contentsOf: top[String(decoding: added[next], as: UTF8.self)]!)
                next += 1
            }
            member(key)
            if next < added.count, added[next].elementsEqual(key) {
                object.append(contentsOf: top[String(decoding: added[next], as: UTF8.self)]!)
                next += 1
            } else if m == extraMember, let extra, !entries.isEmpty {
                object.append(UInt8(ascii: "["))
                for (n, e) in extra.enumerated() {
                    if n > 0 { object.append(UInt8(ascii: ",")) }
                    if let opened = entries[n] {
                        object.append(contentsOf: opened)
                    } else {
                        try emit(e.start, e.end, canonical: e.canonical, depth: 3, into: &object)
                    }
                }
                object.append(UInt8(ascii: "]"))
            } else {
                try emit(x.valueStart, x.valueEnd, canonical: x.canonical, depth: 2, into: &object)
            }
        }
        while next < added.count {
            added[next].withUnsafeBufferPointer { member($0) }
            object.append(contentsOf: top[String(decoding: added[next], as: UTF8.self)]!)
            next += 1
        }
        object.append(UInt8(ascii: "}"))

        let obs = AppointmentObservation(appointmentId: appointmentId, contentHash: w.contentHash,
                                         changedFields: w.changedFields ?? [], object: object)
        return obs.encodeData(includeChangedFields: w.changedFields != nil)
    }
}
