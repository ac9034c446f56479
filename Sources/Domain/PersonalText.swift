import Foundation

/// Whether free text an operator writes into the log (`forget --reason`) names a patient. The
/// log is append-only and that text is not sealed under anyone's key, so a name in it could
/// never be forgotten: the writer refuses such text instead.
public enum PersonalText {
    /// True when `text` holds one of `emails` (in any case), or one of `names` as whole words
    /// (in any case): the whole name, or its last word when that has three letters or more.
    /// "asked by P. Delacroix" names Peyton Delacroix; "parking" does not name Remy Park, nor
    /// "Peyton" alone (a first name is often a common word).
    public static func names(_ text: String, names: [String], emails: [String]) -> Bool {
        let lower = text.lowercased()
        for email in emails {
            let e = email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
            if !e.isEmpty, lower.contains(e) { return true }
        }
        let words = Self.words(lower)
        guard !words.isEmpty else { return false }
        for name in names {
            let parts = Self.words(name.lowercased())
            guard let last = parts.last else { continue }
            if last.count >= 3, words.contains(last) { return true }
            if Self.contains(words, run: parts) { return true }
        }
        return false
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
