import Foundation
import IntakeQ
import JSONCore

/// `GET /appointments/settings` as a typed record: locations, services, practitioners (§2.4). The
/// model tests pin the API's shape with it; the sync stores the settings object as received
/// (`FetchedSettings`) and the views read it with the domain rules.
public struct PracticeSettings: Sendable, Hashable, Decodable {
    public var locations: [Location]?
    public var services: [Service]?
    public var practitioners: [Practitioner]?
    /// The object as received, minified.
    public var raw: [UInt8] = []

    enum CodingKeys: String, CodingKey {
        case locations = "Locations", services = "Services", practitioners = "Practitioners"
    }

    public struct Location: Sendable, Hashable, Decodable {
        public var id: FlexibleID?
        public var name: String?
        /// The address as one line (an object address is joined with ", ").
        public var address: String?

        enum CodingKeys: String, CodingKey { case id = "Id", name = "Name", address = "Address" }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decodeIfPresent(FlexibleID.self, forKey: .id)
            name = try c.decodeLenientString(.name)
            if let s = try? c.decodeLenientString(.address) {
                address = s
            } else if let obj = try? c.decode([String: LenientText].self, forKey: .address) {
                address = obj.keys.sorted().compactMap { k -> String? in
                    guard let s = obj[k]?.text, !s.isEmpty else { return nil }
                    return s
                }.joined(separator: ", ")
            } else {
                address = nil
            }
        }
    }

    public struct Service: Sendable, Hashable, Decodable {
        public var id: String?
        public var name: String?
        public var duration: Int?
        public var price: Double?
        enum CodingKeys: String, CodingKey { case id = "Id", name = "Name", duration = "Duration", price = "Price" }
    }

    public struct Practitioner: Sendable, Hashable, Decodable {
        public var id: String?
        public var completeName: String?
        public var firstName: String?
        public var lastName: String?
        public var email: String?
        public var externalPractitionerId: String?
        enum CodingKeys: String, CodingKey {
            case id = "Id", completeName = "CompleteName", firstName = "FirstName", lastName = "LastName"
            case email = "Email", externalPractitionerId = "ExternalPractitionerId"
        }
    }

    /// Decodes the settings object in any formatting; `raw` is its minified form.
    public static func decode(json bytes: some Collection<UInt8>) throws -> PracticeSettings {
        let min = minifyJSON(bytes)
        guard min.first == UInt8(ascii: "{") else {
            throw IntakeQError.decode("expected the settings object '{'", offset: 0)
        }
        do {
            var s = try JSONDecoder().decode(PracticeSettings.self, from: Data(min))
            s.raw = min
            return s
        } catch {
            throw IntakeQError.from(decoding: error)
        }
    }

    public func location(id: FlexibleID) -> Location? { locations?.first { $0.id == id } }
}

/// A row of `GET /clients` (without `includeProfile`: `ClientNumber`, `Name`, `Email`, `Phone`;
/// with it: `ClientId`, …). `raw` holds the whole object.
public struct ClientSummary: Sendable, Hashable, Decodable {
    public var clientNumber: FlexibleID?
    public var clientId: FlexibleID?
    public var name: String?
    public var email: String?
    public var phone: String?
    public var raw: [UInt8] = []

    enum CodingKeys: String, CodingKey {
        case clientNumber = "ClientNumber", clientId = "ClientId", name = "Name", email = "Email", phone = "Phone"
    }

    /// `ClientId` or `ClientNumber`, whichever is present.
    public var id: FlexibleID? { clientId ?? clientNumber }

    public static func decode(minifiedObject bytes: [UInt8]) throws -> ClientSummary {
        do {
            var c = try JSONDecoder().decode(ClientSummary.self, from: Data(bytes))
            c.raw = bytes
            return c
        } catch {
            throw IntakeQError.from(decoding: error)
        }
    }
}

/// A string, or nothing for any other JSON value.
struct LenientText: Decodable {
    var text: String?
    init(from decoder: any Decoder) throws {
        text = try? decoder.singleValueContainer().decode(String.self)
    }
}
