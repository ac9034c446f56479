import Foundation

/// Whether free text an operator writes into the log (`forget --reason`, `repair --accept-loss`,
/// `sync --triggered-by`) names a patient. The
/// log is append-only and that text is not sealed under anyone's key, so a name in it could
/// never be forgotten: the writer refuses such text instead.
public enum PersonalText {
    /// True when `text` holds one of `emails`, or its part before the `@` as a whole word, or one of `names` as
    /// whole words: the whole name, or any of its words after the first (or a one-word name)
    /// of three letters or more. Case, accents and width do not count ("zoe martinez" names Zoë
    /// Martínez-Ørsted, and "orsted" too: letters that do not decompose, such as ø, ł and æ, are
    /// spelled as their plain letters; "ＹＡＭＡＤＡ" is "yamada"), nor the usual transliterations of
    /// ä, ö, ü, å and ø ("Mueller" names Müller, "Oersted" Ørsted, and the other way round).
    /// "asked by P. Delacroix" names Peyton Delacroix; "parking" does not name Remy Park, nor
    /// "Peyton" alone (a first name is often a common word).
    ///
    /// Scripts written without spaces between words (Chinese, Japanese, Thai…) and Korean, whose
    /// particles attach to the name ("김민준의"), have no whole words to match: a name's run of
    /// such letters two or more long, or all of them together, names the patient wherever it
    /// stands, spaces and punctuation between such letters not counted ("山田太郎さんの依頼" and
    /// "山田 太郎" name 山田太郎). Such letters also end a word, so "Yamadaさんの依頼" names Taro Yamada.
    public static func names(_ text: String, names: [String], emails: [String]) -> Bool {
        let texts = Set([fold(text), fold(text, transliterating: true)])
        let folds = names.map { Set([fold($0), fold($0, transliterating: true)]) }
        let emails = emails.map { fold($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return texts.contains { matches($0, names: folds, emails: emails) }
    }

    /// What is wrong with recording `text` in the clear for good (an operator's reason, who
    /// started a run): "names a roster patient (a name or an email)" (`names`), or "holds an
    /// IntakeQ client id or a phone number" (`holdsNumbers`); nil when neither.
    public static func problem(_ text: String, names: [String], emails: [String], clientIds: Set<String>) -> String? {
        if Self.names(text, names: names, emails: emails) { return "names a roster patient (a name or an email)" }
        if holdsNumbers(text, clientIds: clientIds) { return "holds an IntakeQ client id or a phone number" }
        return nil
    }

    /// True when `text` holds one of `clientIds` (IntakeQ client ids of the roster: personal
    /// data, sealed wherever else they are recorded) or a phone number, once dates and times are
    /// set aside. A client id counts as a whole word of three digits or more, or of any length
    /// after "client", "id" or "#" ("client 7 asked"); a phone number is a run of digits
    /// separated only by spaces, dots, dashes and parentheses, in groups of at most four after
    /// the first, holding 10 to 15 digits ("(555) 010-1234", "+1 555 010 1234",
    /// "0466-12-3456"), or 7 as "555-0100". Dates ("2026-12-01", "01.12.2026", "12/01/2026",
    /// "2019-2026"), times and other numbers ("ticket 1234567", "ref 2026-0001234") are not.
    public static func holdsNumbers(_ text: String, clientIds: Set<String>) -> Bool {
        var rest = fold(text)
        for pattern in [
            #"(?<!\d)(19|20)\d{2}-(0?[1-9]|1[0-2])-(0?[1-9]|[12]\d|3[01])(t\d{1,2}:\d{2}(:\d{2})?)?(?!\d)"#,
            #"(?<!\d)\d{1,2}[./-]\d{1,2}[./-](19|20)?\d{2}(?!\d)"#,
            #"(?<!\d)(19|20)\d{2}\s*[-–]\s*(19|20)\d{2}(?!\d)"#,
            #"(?<!\d)\d{1,2}:\d{2}(:\d{2})?(?!\d)"#,
        ] {
            rest = rest.replacingOccurrences(of: pattern, with: " ", options: .regularExpression)
        }
        let words = rest.split { !($0.isLetter || $0.isNumber || $0 == "#") }.map(String.init)
        for (i, word) in words.enumerated() {
            let digits = word.hasPrefix("#") ? String(word.dropFirst()) : word
            guard clientIds.contains(digits) else { continue }
            let before = i > 0 ? words[i - 1] : ""
            if digits.count >= 3 || word.hasPrefix("#") || ["client", "id", "clientid", "#"].contains(before) { return true }
        }
        // Runs of digit groups joined by phone punctuation.
        var groups: [Int] = []
        var current = 0
        func endRun() -> Bool {
            if current > 0 { groups.append(current) }
            defer { groups = []; current = 0 }
            let total = groups.reduce(0, +)
            guard let first = groups.first else { return false }
            if (10...15).contains(total) && groups.dropFirst().allSatisfy({ $0 <= 4 }) && (groups.count > 1 || first == total) { return true }
            return groups == [3, 4]
        }
        for c in rest + "|" {
            if c.isASCII && c.isNumber {
                current += 1
            } else if " .-()+".contains(c) {
                if current > 0 { groups.append(current); current = 0 }
            } else if endRun() {
                return true
            }
        }
        return false
    }

    /// True when `part` stands in `text` with no letter or digit just before or after it (an
    /// address's part before the "@", "web", is not in "webhook"; review).
    static func containsWord(_ text: String, _ part: String) -> Bool {
        var from = text.startIndex
        while let r = text.range(of: part, range: from..<text.endIndex) {
            let before = r.lowerBound == text.startIndex ? nil : text[text.index(before: r.lowerBound)]
            let after = r.upperBound == text.endIndex ? nil : text[r.upperBound]
            if !(before.map { $0.isLetter || $0.isNumber } ?? false) && !(after.map { $0.isLetter || $0.isNumber } ?? false) { return true }
            from = text.index(after: r.lowerBound)
        }
        return false
    }

    /// `names` on folded text, names and emails.
    static func matches(_ folded: String, names: [Set<String>], emails: [String]) -> Bool {
        for e in emails {
            let local = e.split(separator: "@", maxSplits: 1).first.map(String.init) ?? ""
            if !e.isEmpty, folded.contains(e) { return true }
            if local.count >= 3, containsWord(folded, local) { return true }
        }
        let words = Self.words(folded)
        let squeezed = Self.squeezed(folded)
        for spellings in names {
            for foldedName in spellings {
                let parts = Self.words(foldedName)
                if parts.dropFirst(parts.count > 1 ? 1 : 0).contains(where: { $0.count >= 3 && words.contains($0) }) { return true }
                if Self.contains(words, run: parts) { return true }
                let runs = Self.unspacedRuns(foldedName)
                if runs.contains(where: { $0.count >= 2 && squeezed.contains($0) }) { return true }
                let together = runs.joined()
                if runs.count > 1, together.count >= 2, squeezed.contains(together) { return true }
            }
        }
        return false
    }

    /// Lower case without accents, at normal width, and the letters that keep a stroke or are
    /// ligatures (which folding leaves as they are) spelled as plain letters. `transliterating`:
    /// ä, ö, ü, å and ø first spelled ae, oe, ue, aa and oe, as names are written without them.
    static func fold(_ text: String, transliterating: Bool = false) -> String {
        // Invisible format characters (a zero-width space, a soft hyphen) do not split a word:
        // "Dela\u{200B}croix" names Delacroix (hostile test).
        var text = text
        if text.unicodeScalars.contains(where: { $0.properties.generalCategory == .format }) {
            text = String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.properties.generalCategory != .format }))
        }
        text = transliterating ? respelled(text.lowercased().precomposedStringWithCanonicalMapping, transliterations) : text
        let folded = text.folding(options: [.caseInsensitive, .diacriticInsensitive, .widthInsensitive], locale: nil).lowercased()
        return respelled(folded, plainSpellings)
    }

    /// `text` with each scalar `spellings` holds spelled as it says.
    static func respelled(_ text: String, _ spellings: [Unicode.Scalar: String]) -> String {
        guard text.unicodeScalars.contains(where: { spellings[$0] != nil }) else { return text }
        var out = String.UnicodeScalarView()
        for u in text.unicodeScalars {
            if let s = spellings[u] { out.append(contentsOf: s.unicodeScalars) } else { out.append(u) }
        }
        return String(out)
    }

    /// How names are commonly written without these letters.
    static let transliterations: [Unicode.Scalar: String] = ["ä": "ae", "ö": "oe", "ü": "ue", "å": "aa", "ø": "oe"]

    /// Lower-case letters that do not decompose into a letter and an accent.
    static let plainSpellings: [Unicode.Scalar: String] = [
        "ø": "o", "ł": "l", "đ": "d", "ð": "d", "ħ": "h", "ŧ": "t", "ı": "i", "ŀ": "l", "ƶ": "z",
        "æ": "ae", "œ": "oe", "þ": "th", "ß": "ss",
    ]

    /// The words of `text`: its runs of letters and digits, letters of unspaced scripts left out
    /// (`unspacedRuns` matches those).
    static func words(_ text: String) -> [Substring] {
        text.split { !($0.isLetter || $0.isNumber) || isUnspaced($0) }
    }

    /// The runs of letters of unspaced scripts in `text`.
    static func unspacedRuns(_ text: String) -> [Substring] {
        text.split { !isUnspaced($0) }
    }

    /// `text` with the spaces and punctuation between letters of unspaced scripts left out, and
    /// every other letter or digit as a break: "山田 太郎さん, Yamada" is "山田太郎さん" and a break.
    static func squeezed(_ text: String) -> String {
        var out = ""
        for c in text {
            if isUnspaced(c) {
                out.append(c)
            } else if c.isLetter || c.isNumber {
                if out.last != "\u{0}" { out.append("\u{0}") }
            }
        }
        return out
    }

    /// A letter of a script written without spaces between words, or Korean (Hangul), whose
    /// particles are written onto the word before them.
    static func isUnspaced(_ c: Character) -> Bool {
        guard let u = c.unicodeScalars.first, u.value >= 0x0E00 else { return false }
        switch u.value {
        case 0x0E00...0x0EFF,  // Thai, Lao
             0x1000...0x109F,  // Myanmar
             0x1100...0x11FF,  // Hangul Jamo
             0x1780...0x17FF,  // Khmer
             0x3005...0x3007,  // 々 (the repetition mark, as in 佐々木), 〆, 〇
             0x303B,  // 〻
             0x3040...0x30FF,  // Hiragana, Katakana
             0x3130...0x318F,  // Hangul compatibility Jamo
             0x31F0...0x31FF,  // Katakana extensions
             0x3400...0x4DBF,  // CJK extension A
             0x4E00...0x9FFF,  // CJK unified ideographs
             0xAC00...0xD7AF,  // Hangul syllables
             0xF900...0xFAFF,  // CJK compatibility ideographs
             0xFF66...0xFF9F,  // half-width Katakana
             0x20000...0x3134F:  // CJK extensions B–G
            return true
        default:
            return false
        }
    }

    /// True when `run` occurs in `words` as consecutive words.
    static func contains(_ words: [Substring], run: [Substring]) -> Bool {
        guard !run.isEmpty, run.count <= words.count else { return false }
        for start in 0...(words.count - run.count) where words[start..<(start + run.count)].elementsEqual(run) {
            return true
        }
        return false
    }
}
