import Foundation
import IntakeQ
import JSONCore

/// One IntakeQ appointment as a typed record (INTAKEQ-API.md §3): all 49 documented keys, every
/// one optional because list rows omit some keys and older rows carry `null`s. The fake server
/// filters its fixtures with it and the model tests pin the API's shape; the sync itself never
/// decodes these 49 fields (it reads `FetchedAppointment`: the raw object and three fields).
///
/// `raw` keeps the object exactly as received, minified; unknown keys survive only there.
public struct Appointment: Sendable, Hashable, Decodable {
    public var id: String?
    public var clientName: String?
    public var clientEmail: String?
    public var clientPhone: String?
    public var clientDateOfBirth: String?
    public var clientId: FlexibleID?
    /// The status exactly as sent; see `statusValue`.
    public var status: String?
    /// Epoch milliseconds, UTC.
    public var startDate: Int64?
    public var endDate: Int64?
    /// Minutes.
    public var duration: Int?
    public var serviceName: String?
    public var serviceId: String?
    public var locationName: String?
    public var locationId: FlexibleID?
    public var price: Double?
    public var practitionerEmail: String?
    public var practitionerName: String?
    public var practitionerId: String?
    public var dateCreated: Int64?
    public var intakeId: String?
    public var bookedByClient: Bool?
    public var createdBy: String?
    public var appointmentPackageId: String?
    public var appointmentPackageName: String?
    /// UTC with seven fractional digits, e.g. `2026-03-10T18:00:00.0000000Z`; see `IntakeQDate.parse`.
    public var startDateIso: String?
    public var endDateIso: String?
    public var startDateLocal: String?
    public var endDateLocal: String?
    public var startDateLocalFormatted: String?
    public var telehealthInfo: TelehealthInfo?
    public var reminderType: String?
    public var invoiceId: String?
    public var invoiceNumber: FlexibleID?
    public var clientNote: String?
    public var practitionerNote: String?
    public var attendanceConfirmationResponse: String?
    public var customFields: [CustomField]?
    public var sessionStart: Int64?
    public var sessionEnd: Int64?
    public var externalClientId: String?
    public var externalPractitionerId: String?
    public var externalServiceId: String?
    /// Epoch milliseconds, UTC.
    public var lastModified: Int64?
    /// CMS place-of-service code ("02", "10", "11", "12", …).
    public var placeOfService: String?
    public var additionalClients: [AdditionalClient]?
    public var fullCancellationReason: String?
    public var cancellationReasonNote: String?
    public var cancellationDate: String?
    public var procedures: [Procedure]?

    /// The object as received, minified (whitespace outside strings removed; key order and
    /// number text untouched). The ledger stores these bytes.
    public var raw: [UInt8] = []

    enum CodingKeys: String, CodingKey, CaseIterable {
        case id = "Id", clientName = "ClientName", clientEmail = "ClientEmail", clientPhone = "ClientPhone"
        case clientDateOfBirth = "ClientDateOfBirth", clientId = "ClientId", status = "Status"
        case startDate = "StartDate", endDate = "EndDate", duration = "Duration", serviceName = "ServiceName"
        case serviceId = "ServiceId", locationName = "LocationName", locationId = "LocationId", price = "Price"
        case practitionerEmail = "PractitionerEmail", practitionerName = "PractitionerName"
        case practitionerId = "PractitionerId", dateCreated = "DateCreated", intakeId = "IntakeId"
        case bookedByClient = "BookedByClient", createdBy = "CreatedBy"
        case appointmentPackageId = "AppointmentPackageId", appointmentPackageName = "AppointmentPackageName"
        case startDateIso = "StartDateIso", endDateIso = "EndDateIso", startDateLocal = "StartDateLocal"
        case endDateLocal = "EndDateLocal", startDateLocalFormatted = "StartDateLocalFormatted"
        case telehealthInfo = "TelehealthInfo", reminderType = "ReminderType", invoiceId = "InvoiceId"
        case invoiceNumber = "InvoiceNumber", clientNote = "ClientNote", practitionerNote = "PractitionerNote"
        case attendanceConfirmationResponse = "AttendanceConfirmationResponse", customFields = "CustomFields"
        case sessionStart = "SessionStart", sessionEnd = "SessionEnd", externalClientId = "ExternalClientId"
        case externalPractitionerId = "ExternalPractitionerId", externalServiceId = "ExternalServiceId"
        case lastModified = "LastModified", placeOfService = "PlaceOfService"
        case additionalClients = "AdditionalClients", fullCancellationReason = "FullCancellationReason"
        case cancellationReasonNote = "CancellationReasonNote", cancellationDate = "CancellationDate"
        case procedures = "Procedures"
    }

    /// The 49 JSON keys this model knows, in documentation order.
    public static let knownKeys: [String] = CodingKeys.allCases.map(\.rawValue)

    public init(id: String? = nil) { self.id = id }

    /// Decodes an object whose bytes are already minified (as `splitJSONArray` returns them);
    /// those bytes become `raw`.
    public static func decode(minifiedObject bytes: [UInt8]) throws -> Appointment {
        guard bytes.first == UInt8(ascii: "{") else {
            throw IntakeQError.decode("expected an appointment object", offset: 0)
        }
        do {
            var a = try JSONDecoder().decode(Appointment.self, from: Data(bytes))
            a.raw = bytes
            return a
        } catch let e as IntakeQError {
            throw e
        } catch {
            throw IntakeQError.from(decoding: error)
        }
    }

    /// Decodes an object in any formatting; `raw` is its minified form.
    public static func decode(json bytes: some Collection<UInt8>) throws -> Appointment {
        try decode(minifiedObject: minifyJSON(bytes))
    }

    /// The start instant: `StartDate` (epoch ms), else `StartDateIso`.
    public var startInstant: Date? {
        if let startDate { return IntakeQDate.fromEpochMs(startDate) }
        return startDateIso.flatMap(IntakeQDate.parse)
    }

    public var endInstant: Date? {
        if let endDate { return IntakeQDate.fromEpochMs(endDate) }
        return endDateIso.flatMap(IntakeQDate.parse)
    }

    /// `ClientId` followed by every `AdditionalClients[].ClientId` (the scope join keys).
    public var allClientIds: [FlexibleID] {
        var ids: [FlexibleID] = []
        if let clientId { ids.append(clientId) }
        for c in additionalClients ?? [] { if let id = c.clientId { ids.append(id) } }
        return ids
    }

    /// JSON keys whose values differ from `previous` (compared by value on the raw objects, so
    /// unknown keys count, and key order or `150` vs `150.0` do not). Empty when unchanged.
    public func changedFields(from previous: Appointment) -> [String] {
        if raw == previous.raw { return [] }
        if let keys = try? changedKeys(previous.raw, raw) { return keys }
        return ["raw"]
    }
}

/// `TelehealthInfo` (§3.2). `StartUrl` is the practitioner's host link: never show it to clients.
public struct TelehealthInfo: Sendable, Hashable, Decodable {
    public var id: String?
    public var startUrl: String?
    public var invitation: String?
    public var provider: String?
    public var invitationCode: String?
    /// Client join URL (seen in production integrations, not in the docs).
    public var joinUrl: String?
    /// Some integrations read `Url`; kept in case it appears.
    public var url: String?

    enum CodingKeys: String, CodingKey {
        case id = "Id", startUrl = "StartUrl", invitation = "Invitation", provider = "Provider"
        case invitationCode = "InvitationCode", joinUrl = "JoinUrl", url = "Url"
    }

    public init(id: String? = nil, startUrl: String? = nil, invitation: String? = nil, provider: String? = nil,
                invitationCode: String? = nil, joinUrl: String? = nil, url: String? = nil) {
        self.id = id; self.startUrl = startUrl; self.invitation = invitation; self.provider = provider
        self.invitationCode = invitationCode; self.joinUrl = joinUrl; self.url = url
    }
}

/// One extra attendee of a group or couples appointment.
public struct AdditionalClient: Sendable, Hashable, Decodable {
    public var clientId: FlexibleID?
    public var clientName: String?
    public var clientEmail: String?
    public var clientPhone: String?
    public var intakeId: String?

    enum CodingKeys: String, CodingKey {
        case clientId = "ClientId", clientName = "ClientName", clientEmail = "ClientEmail"
        case clientPhone = "ClientPhone", intakeId = "IntakeId"
    }
}

/// Appointment custom field `{FieldId, Text, Value}`. A non-string `Value` is kept as its JSON text.
public struct CustomField: Sendable, Hashable, Decodable {
    public var fieldId: String?
    public var text: String?
    public var value: String?

    enum CodingKeys: String, CodingKey { case fieldId = "FieldId", text = "Text", value = "Value" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fieldId = try c.decodeLenientString(.fieldId)
        text = try c.decodeLenientString(.text)
        value = try c.decodeLenientString(.value)
    }
}

/// `Procedures[]` (single source; uncertain).
public struct Procedure: Sendable, Hashable, Decodable {
    public var procedureCode: String?
    public var price: Double?
    public var quantity: Double?
    public var units: Double?
    public var modifiers: [String]?

    enum CodingKeys: String, CodingKey {
        case procedureCode = "ProcedureCode", price = "Price", quantity = "Quantity", units = "Units"
        case modifiers = "Modifiers"
    }
}

extension KeyedDecodingContainer {
    /// A string, or the text of a number/bool; nil when absent or null.
    func decodeLenientString(_ key: Key) throws -> String? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        if let s = try? decode(String.self, forKey: key) { return s }
        if let b = try? decode(Bool.self, forKey: key) { return String(b) }
        if let i = try? decode(Int64.self, forKey: key) { return String(i) }
        if let d = try? decode(Double.self, forKey: key) { return String(d) }
        throw DecodingError.typeMismatch(
            String.self, .init(codingPath: codingPath + [key], debugDescription: "expected a string"))
    }
}
