import Foundation
import IntakeQ
import JSONCore
import TestSupport
import Testing

@Suite struct JSONBytesTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

    @Test func minifyKeepsStringsEscapesAndNumbers() {
        let input = "{ \"a\" : \"x \\\" y\\\\\" ,\n\t\"b\" : [ 1 , 2.50 , -0.0e10 ],\r\n \"c\": \"  spaced  { [ , \", \"d\":\"Zoë ☕ 🙂\" }"
        #expect(text(minifyJSON(bytes(input)))
            == "{\"a\":\"x \\\" y\\\\\",\"b\":[1,2.50,-0.0e10],\"c\":\"  spaced  { [ , \",\"d\":\"Zoë ☕ 🙂\"}")
        // Idempotent.
        let once = minifyJSON(bytes(input))
        #expect(minifyJSON(once) == once)
    }

    @Test func minifyEscapedBackslashBeforeQuote() {
        // "a\\" ends the string; the following space is outside and removed.
        #expect(text(minifyJSON(bytes(#"["a\\" , "b"]"#))) == #"["a\\","b"]"#)
    }

    @Test func splitsNestedArraysAndTrickyStrings() throws {
        let body = """
            [ {"a":[1,[2,{"b":"]"}]],"s":"x,}]\\"{"} ,
              {"u":"\\u00e9\\n","e":{}} , [] , 12.5e3 , "str" , true , null ]
            """
        let parts = try splitJSONArray(bytes(body)).map(text)
        #expect(parts == [
            #"{"a":[1,[2,{"b":"]"}]],"s":"x,}]\"{"}"#,
            #"{"u":"\u00e9\n","e":{}}"#,
            "[]", "12.5e3", "\"str\"", "true", "null",
        ])
    }

    @Test func emptyArrayAndWhitespace() throws {
        #expect(try splitJSONArray(bytes(" \n[ \t ]\n ")).isEmpty)
        #expect(try splitJSONArray(bytes("[]")).isEmpty)
    }

    func decodeError(_ body: String) -> IntakeQError? {
        do {
            _ = try splitJSONArray(bytes(body))
            return nil
        } catch let e as IntakeQError {
            return e
        } catch {
            return nil
        }
    }

    @Test func errorsCarryOffsets() throws {
        let html = decodeError("<!DOCTYPE html><html>Bad Gateway</html>")
        #expect(html?.code == .decode)
        #expect(html?.offset == 0)
        #expect(html?.description.contains("HTML") == true)

        let truncated = #"[{"a":1},{"b":"xy"#
        let e = try #require(decodeError(truncated))
        #expect(e.code == .decode)
        #expect(e.offset == truncated.utf8.count)
        #expect(e.description.contains("truncated"))

        #expect(decodeError(#"[{"a":1}}]"#)?.offset == 8)   // unbalanced
        #expect(decodeError(#"[{"a":1} {"b":2}]"#)?.offset == 9)  // missing comma
        #expect(decodeError(#"[1] x"#)?.offset == 4)   // trailing garbage
        #expect(decodeError(#"{"a":1}"#)?.offset == 0)   // wrong shape: object, not array
        #expect(decodeError("")?.offset == 0)
    }

    @Test func everyStrictPrefixOfAValidBodyIsAnError() throws {
        let body = bytes(#"[ {"Id":"a\"]","N":[1,{"x":"}"}]}, {"Id":"b"} ]"#)
        #expect(try splitJSONArray(body).count == 2)
        for cut in 0..<(body.count - 1) {
            #expect(throws: IntakeQError.self, "prefix of \(cut) bytes") { try splitJSONArray(Array(body[..<cut])) }
        }
    }

    @Test func splitsObjectMembers() throws {
        let members = try splitJSONObject(bytes(#" { "day" : 1 , "now":"2026-11-20T10:00:00.000Z", "x": { "a" : [ 1 ] } } "#))
        #expect(members.map(\.key) == ["day", "now", "x"])
        #expect(members.map { text($0.value) } == ["1", "\"2026-11-20T10:00:00.000Z\"", #"{"a":[1]}"#])
        #expect(throws: IntakeQError.self) { try splitJSONObject(bytes(#"{"a":1"#)) }
    }

    @Test func singleValueValidation() throws {
        #expect(text(try minifiedJSONValue(bytes(" { \"a\" : 1 } \n"))) == #"{"a":1}"#)
        #expect(throws: IntakeQError.self) { try minifiedJSONValue(bytes(#"{"a":"#)) }
        #expect(throws: IntakeQError.self) { try minifiedJSONValue(bytes("<html>")) }
    }

    @Test func changedKeysComparesByValue() throws {
        #expect(try changedKeys(bytes(#"{"a":150.0,"b":[1],"c":null}"#), bytes(#"{"b":[1],"a":150}"#)) == [])
        #expect(try changedKeys(bytes(#"{"a":1,"b":{"x":1}}"#), bytes(#"{"a":1,"b":{"x":2},"n":true}"#)) == ["b", "n"])
    }

    @Test func parsesSevenDigitFractions() throws {
        let d = try #require(IntakeQDate.parse("2026-03-10T18:00:00.0000000Z"))
        #expect(d.timeIntervalSince1970 == 1_773_165_600)
        let f = try #require(IntakeQDate.parse("2026-03-10T18:00:00.1234567Z"))
        #expect(abs(f.timeIntervalSince1970 - 1_773_165_600.1234567) < 1e-6)
        #expect(IntakeQDate.parse("2026-03-10T18:00:00.Z") == nil)
        #expect(IntakeQDate.parse("2026-03-10T11:00:00-07:00")?.timeIntervalSince1970 == 1_773_165_600)
        #expect(IntakeQDate.isoSeconds(d) == "2026-03-10T18:00:00Z")
        #expect(IntakeQDate.day(d) == "2026-03-10")
    }
}
