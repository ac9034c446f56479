import JSONCore

/// The values of an IntakeQ appointment object that `AppointmentFacts` and `MeetingLink.find`
/// read, each as the facts read it from a parsed object (`JSONValue.stringValue`,
/// `int64Value`, …). Filled from a parsed object (`init(object:)`) or straight from the
/// object's bytes in one pass (`scan`), which builds no `JSONValue` and no dictionary: the
/// rebuild's chunked fold reads every appointment event this way.
public struct AppointmentFields: Sendable, Hashable {
    /// False when the value was not a JSON object (then it has no facts).
    public var isObject = true
    public var id: String?
    public var clientId: String?
    /// `ClientId` of each object in `AdditionalClients` that has a non-null one, in order.
    public var additionalClientIds: [String] { additionalClients.compactMap { $0 } }
    /// `ClientId` of each element of `AdditionalClients` (nil: not an object, or no `ClientId`
    /// that reads as text), in order: where an opened sealed element goes.
    public var additionalClients: [String?] = []
    public var clientName: String?
    public var practitionerId: String?
    public var practitionerName: String?
    public var serviceName: String?
    public var status: String?
    public var startDate: Int64?
    public var endDate: Int64?
    public var duration: Int64?
    public var locationId: String?
    public var locationName: String?
    public var placeOfService: String?
    public var lastModified: Int64?
    public var clientNote: String?
    /// `TelehealthInfo` is there and not null (whatever its type).
    public var telehealthPresent = false
    /// `TelehealthInfo.Provider`, `.JoinUrl`, `.Url`, `.Invitation` (when it is an object).
    public var telehealthProvider: String?
    public var telehealthJoinUrl: String?
    public var telehealthUrl: String?
    public var telehealthInvitation: String?
    /// `CustomFields[i].Value` of each element that has one, with its index.
    public var customFieldValues: [CustomFieldValue] = []

    public struct CustomFieldValue: Sendable, Hashable {
        public var index: Int
        public var value: String
        public init(index: Int, value: String) {
            self.index = index
            self.value = value
        }
    }

    public init() {}

    /// The values looked up in a parsed object.
    public init(object: JSONValue) {
        guard case .object(let o) = object else {
            isObject = false
            return
        }
        id = o["Id"]?.stringValue
        clientId = o["ClientId"]?.stringValue
        if case .array(let extra)? = o["AdditionalClients"] {
            additionalClients = extra.map { $0["ClientId"]?.stringValue }
        }
        clientName = o["ClientName"]?.stringValue
        practitionerId = o["PractitionerId"]?.stringValue
        practitionerName = o["PractitionerName"]?.stringValue
        serviceName = o["ServiceName"]?.stringValue
        status = o["Status"]?.stringValue
        startDate = o["StartDate"]?.int64Value
        endDate = o["EndDate"]?.int64Value
        duration = o["Duration"]?.int64Value
        locationId = o["LocationId"]?.stringValue
        locationName = o["LocationName"]?.stringValue
        placeOfService = o["PlaceOfService"]?.stringValue
        lastModified = o["LastModified"]?.int64Value
        clientNote = o["ClientNote"]?.stringValue
        if let t = o["TelehealthInfo"], !t.isNull {
            telehealthPresent = true
            telehealthProvider = t["Provider"]?.stringValue
            telehealthJoinUrl = t["JoinUrl"]?.stringValue
            telehealthUrl = t["Url"]?.stringValue
            telehealthInvitation = t["Invitation"]?.stringValue
        }
        if case .array(let fields)? = o["CustomFields"] {
            for (i, f) in fields.enumerated() {
                if let v = f["Value"]?.stringValue { customFieldValues.append(CustomFieldValue(index: i, value: v)) }
            }
        }
    }
}

extension AppointmentFields {
    /// The keys read, by their bytes.
    enum Key: Int, CaseIterable {
        case id, clientId, additionalClients, clientName, practitionerId, practitionerName, serviceName, status
        case startDate, endDate, duration, locationId, locationName, placeOfService, lastModified, clientNote
        case telehealthInfo, customFields

        /// Each case's name (`init(name:)`), in `allCases` order (so at its `rawValue`).
        static let nameList = [
            "Id", "ClientId", "AdditionalClients", "ClientName", "PractitionerId", "PractitionerName", "ServiceName",
            "Status", "StartDate", "EndDate", "Duration", "LocationId", "LocationName", "PlaceOfService", "LastModified",
            "ClientNote", "TelehealthInfo", "CustomFields",
        ]
        /// `nameList` prepared for `JSONScanner.forEachMember`.
        static let names = JSONScanner.Names(nameList)

        init?(name: String) {
            switch name {
            case "Id": self = .id
            case "ClientId": self = .clientId
            case "AdditionalClients": self = .additionalClients
            case "ClientName": self = .clientName
            case "PractitionerId": self = .practitionerId
            case "PractitionerName": self = .practitionerName
            case "ServiceName": self = .serviceName
            case "Status": self = .status
            case "StartDate": self = .startDate
            case "EndDate": self = .endDate
            case "Duration": self = .duration
            case "LocationId": self = .locationId
            case "LocationName": self = .locationName
            case "PlaceOfService": self = .placeOfService
            case "LastModified": self = .lastModified
            case "ClientNote": self = .clientNote
            case "TelehealthInfo": self = .telehealthInfo
            case "CustomFields": self = .customFields
            default: return nil
            }
        }

        /// The key of an unescaped key's bytes: by length first, then the bytes.
        static func of(_ k: JSONScanner.Key, _ s: JSONScanner) -> Key? {
            switch k.range.count {
            case 2: return s.key(k, is: "Id") ? .id : nil
            case 6: return s.key(k, is: "Status") ? .status : nil
            case 7: return s.key(k, is: "EndDate") ? .endDate : nil
            case 8:
                if s.key(k, is: "ClientId") { return .clientId }
                return s.key(k, is: "Duration") ? .duration : nil
            case 9: return s.key(k, is: "StartDate") ? .startDate : nil
            case 10:
                if s.key(k, is: "ClientName") { return .clientName }
                if s.key(k, is: "LocationId") { return .locationId }
                return s.key(k, is: "ClientNote") ? .clientNote : nil
            case 11: return s.key(k, is: "ServiceName") ? .serviceName : nil
            case 12:
                if s.key(k, is: "LocationName") { return .locationName }
                if s.key(k, is: "LastModified") { return .lastModified }
                return s.key(k, is: "CustomFields") ? .customFields : nil
            case 14:
                if s.key(k, is: "PractitionerId") { return .practitionerId }
                if s.key(k, is: "PlaceOfService") { return .placeOfService }
                return s.key(k, is: "TelehealthInfo") ? .telehealthInfo : nil
            case 16: return s.key(k, is: "PractitionerName") ? .practitionerName : nil
            case 17: return s.key(k, is: "AdditionalClients") ? .additionalClients : nil
            default: return nil
            }
        }

        static func of(_ k: JSONScanner.Key, in s: JSONScanner) throws -> Key? {
            k.escaped ? Key(name: try s.decodedKey(k)) : of(k, s)
        }
    }

    /// Reads the value at the scanner's offset (at `depth`) as `init(object:)` reads a parsed
    /// one, checking every byte of it as `FastJSON.parse` does (the same errors) and building
    /// only the strings the fields hold. A value that is not an object is skipped and gives
    /// `isObject == false`. Duplicate keys: the last one counts, as in a parsed object.
    public static func scan(_ s: inout JSONScanner, depth: Int) throws -> AppointmentFields {
        var f = AppointmentFields()
        // Most objects are walked in C, which checks every byte and hands over only the members
        // read here (BENCHMARKS.md, 2026-12-08); what it cannot say is walked below, which finds
        // the error, if any, as before.
        let walked = try s.forEachMember(depth: depth, named: Key.names) { index, k, value in
            guard let key = try index.map({ Key(rawValue: $0)! }) ?? Key(name: value.decodedKey(k)) else {
                return
            }
            try f.read(key, &value, depth: depth + 1)
        }
        if walked { return f }
        guard try s.beginObject(depth: depth) else {
            try s.skipValue(depth: depth)
            f.isObject = false
            return f
        }
        let inner = depth + 1
        var first = true
        while let k = try s.nextKey(first: first) {
            first = false
            guard let key = try Key.of(k, in: s) else {
                try s.skipValue(depth: inner)
                continue
            }
            try f.read(key, &s, depth: inner)
        }
        return f
    }

    /// Sets the field `key` names from the value at the scanner's offset (at `depth`).
    mutating func read(_ key: Key, _ s: inout JSONScanner, depth inner: Int) throws {
        switch key {
        case .id: id = try s.stringValue(depth: inner)
        case .clientId: clientId = try s.stringValue(depth: inner)
        case .clientName: clientName = try s.stringValue(depth: inner)
        case .practitionerId: practitionerId = try s.stringValue(depth: inner)
        case .practitionerName: practitionerName = try s.stringValue(depth: inner)
        case .serviceName: serviceName = try s.stringValue(depth: inner)
        case .status: status = try s.stringValue(depth: inner)
        case .locationId: locationId = try s.stringValue(depth: inner)
        case .locationName: locationName = try s.stringValue(depth: inner)
        case .placeOfService: placeOfService = try s.stringValue(depth: inner)
        case .clientNote: clientNote = try s.stringValue(depth: inner)
        case .startDate: startDate = try s.scalar(depth: inner).int64Value
        case .endDate: endDate = try s.scalar(depth: inner).int64Value
        case .duration: duration = try s.scalar(depth: inner).int64Value
        case .lastModified: lastModified = try s.scalar(depth: inner).int64Value
        case .additionalClients: additionalClients = try Self.scanAdditionalClients(&s, depth: inner)
        case .customFields: customFieldValues = try Self.scanCustomFields(&s, depth: inner)
        case .telehealthInfo: try scanTelehealth(&s, depth: inner)
        }
    }

    /// Puts in the members of the object at the scanner's offset (at `depth`) as setting those
    /// keys of the parsed object would, `AdditionalClients/<n>` replacing that element of
    /// `AdditionalClients` (of repeated keys the last wins; `init(object:)` then reads the
    /// fields): how a sealed part's fields are opened into an appointment's. False, with the
    /// fields as they were, when it is not so simple: the value is not an object, a key is
    /// escaped, an element is named in another spelling than its index's (`01`), or the whole
    /// `AdditionalClients` comes with an element of it (their order would decide).
    public mutating func overlay(_ s: inout JSONScanner, depth: Int) throws -> Bool {
        guard try s.beginObject(depth: depth) else { return false }
        var f = self
        var whole = false, element = false
        var first = true
        while let k = try s.nextKey(first: first) {
            first = false
            guard !k.escaped else { return false }
            let bytes = s.bytes[k.range]
            if bytes.starts(with: Self.elementPrefix) {
                let text = String(decoding: bytes.dropFirst(Self.elementPrefix.count), as: UTF8.self)
                guard let i = Int(text) else {
                    try s.skipValue(depth: depth + 1)
                    continue
                }
                guard String(i) == text else { return false }
                element = true
                let id = try Self.scanMember(&s, depth: depth + 1, named: "ClientId")
                if i >= 0, i < f.additionalClients.count { f.additionalClients[i] = id }
                continue
            }
            guard let key = Key.of(k, s) else {
                try s.skipValue(depth: depth + 1)
                continue
            }
            if key == .additionalClients { whole = true }
            try f.read(key, &s, depth: depth + 1)
        }
        guard !(whole && element) else { return false }
        self = f
        return true
    }

    static let elementPrefix = Array("AdditionalClients/".utf8)

    /// `ClientId` of each element (the last one when repeated; nil when it has none that reads as text).
    static func scanAdditionalClients(_ s: inout JSONScanner, depth: Int) throws -> [String?] {
        guard try s.beginArray(depth: depth) else {
            try s.skipValue(depth: depth)
            return []
        }
        var out: [String?] = []
        var first = true
        while try s.nextElement(first: first) {
            first = false
            out.append(try scanMember(&s, depth: depth + 1, named: "ClientId"))
        }
        return out
    }

    static func scanCustomFields(_ s: inout JSONScanner, depth: Int) throws -> [CustomFieldValue] {
        guard try s.beginArray(depth: depth) else {
            try s.skipValue(depth: depth)
            return []
        }
        var out: [CustomFieldValue] = []
        var index = 0
        var first = true
        while try s.nextElement(first: first) {
            first = false
            if let v = try scanMember(&s, depth: depth + 1, named: "Value") { out.append(CustomFieldValue(index: index, value: v)) }
            index += 1
        }
        return out
    }

    /// `value[name]?.stringValue` of the value at `depth` (nil unless it is an object with that key).
    static func scanMember(_ s: inout JSONScanner, depth: Int, named name: StaticString) throws -> String? {
        guard try s.beginObject(depth: depth) else {
            try s.skipValue(depth: depth)
            return nil
        }
        var found: String?
        var first = true
        while let k = try s.nextKey(first: first) {
            first = false
            let match = k.escaped ? try s.decodedKey(k) == name.description : s.key(k, is: name)
            if match {
                found = try s.stringValue(depth: depth + 1)
            } else {
                try s.skipValue(depth: depth + 1)
            }
        }
        return found
    }

    mutating func scanTelehealth(_ s: inout JSONScanner, depth: Int) throws {
        telehealthProvider = nil
        telehealthJoinUrl = nil
        telehealthUrl = nil
        telehealthInvitation = nil
        guard try s.beginObject(depth: depth) else {
            telehealthPresent = !(try s.scalar(depth: depth).isNull)
            return
        }
        telehealthPresent = true
        var first = true
        while let k = try s.nextKey(first: first) {
            first = false
            let name: String
            if k.escaped {
                name = try s.decodedKey(k)
            } else if s.key(k, is: "Provider") {
                name = "Provider"
            } else if s.key(k, is: "JoinUrl") {
                name = "JoinUrl"
            } else if s.key(k, is: "Url") {
                name = "Url"
            } else if s.key(k, is: "Invitation") {
                name = "Invitation"
            } else {
                try s.skipValue(depth: depth + 1)
                continue
            }
            switch name {
            case "Provider": telehealthProvider = try s.stringValue(depth: depth + 1)
            case "JoinUrl": telehealthJoinUrl = try s.stringValue(depth: depth + 1)
            case "Url": telehealthUrl = try s.stringValue(depth: depth + 1)
            case "Invitation": telehealthInvitation = try s.stringValue(depth: depth + 1)
            default: try s.skipValue(depth: depth + 1)
            }
        }
    }
}
