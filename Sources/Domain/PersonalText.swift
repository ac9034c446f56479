import Foundation

/// Whether free text an operator writes into the log (`forget --reason`) names a patient. The
/// log is append-only and that text is not sealed under anyone's key, so a name in it could
/// never be forgotten: the writer refuses such text instead.
public enum PersonalText {
    /// True when `text` holds one of `emails`, or its part before the `@`, or one of `names` as
    /// whole words: the whole name, or any of its words after the first (or a one-word name)
    /// of three letters or more. Case and accents do not count ("zoe martinez" names Zoë
    /// Martínez-Ørsted). "asked by P. Delacroix" names Peyton Delacroix; "parking" does not name
    /// Remy Park, nor "Peyton" alone (a first name is often a common word).
    public static func names(_ text: String, names: [String], emails: [String]) -> Bool {
        let folded = fold(text)
        for email in emails {
            let e = fold(email.trimmingCharacters(in: .whitespacesAndNewlines))
            let local = e.split(separator: "@", maxSplits: 1).first.map(String.init) ?? ""
            if !e.isEmpty, folded.contains(e) { return true }
            if local.count >= 3, folded.contains(local) { return true }
        }
        let words = Self.words(folded)
        guard !words.isEmpty else { return false }
        for name in names {
            let parts = Self.words(fold(name))
            if parts.dropFirst(parts.count > 1 ? 1 : 0).contains(where: { $0.count >= 3 && words.contains($0) }) { return true }
            if Self.contains(words, run: parts) { return true }
        }
        return false
    }

    /// Lower case without accents.
    static func fold(_ text: String) -> String {
        text.folding(options: [.caseInsensitive, .diacriticInsensitive], locale: nil).lowercased()
    }

    /// The words of `text`: its runs of letters and digits.
    static func words(_ text: String) -> [Substring] {
        text.split { !($0.isLetter || $0.isNumber) }
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
