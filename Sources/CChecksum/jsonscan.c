// Strict JSON scanning for sealing's byte path (`ByteJSON.scanValue` / `scanString` in Ledger's
// SealBytes.swift): the same grammar as FastJSON, the same verdict as the Swift scanner it replaces
// (what it rejects, the caller hands to the slow path), and for each value whether its bytes are
// already its canonical text. Also the walk over an object's members that a rebuild's fold reads
// appointments with (`syncledger_json_object_members`, JSONCore's `JSONScanner.forEachMember`).
// Written for this project.
#include <string.h>
#include "CChecksum.h"

#define SYNCLEDGER_JSON_MAX_DEPTH 128

// The word-at-a-time string search reads its first flagged byte as the lowest one.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "jsonscan.c reads words as little-endian"
#endif

static const uint64_t ONES = 0x0101010101010101ULL;
static const uint64_t HIGH = 0x8080808080808080ULL;

static inline int is_space(uint8_t c) { return c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09; }

/// Skips whitespace; 1 when there was some.
static inline int skip_space(const uint8_t *b, long n, long *i) {
    long s = *i;
    while (*i < n && is_space(b[*i])) (*i)++;
    return *i != s;
}

static inline uint64_t zero_bytes(uint64_t v) { return (v - ONES) & ~v & HIGH; }

static inline long compare_keys(const uint8_t *b, long a0, long a1, long b0, long b1) {
    long la = a1 - a0, lb = b1 - b0, m = la < lb ? la : lb;
    if (m > 0) {
        int c = memcmp(b + a0, b + b0, (size_t)m);
        if (c != 0) return c < 0 ? -1 : 1;
    }
    return la == lb ? 0 : (la < lb ? -1 : 1);
}

static inline int hex4(const uint8_t *b, long n, long *i, uint32_t *out) {
    if (*i + 4 > n) return 0;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t c = b[*i];
        uint32_t d;
        if (c >= '0' && c <= '9') d = (uint32_t)(c - '0');
        else if (c >= 'A' && c <= 'F') d = (uint32_t)(c - 55);
        else if (c >= 'a' && c <= 'f') d = (uint32_t)(c - 87);
        else return 0;
        v = v << 4 | d;
        (*i)++;
    }
    *out = v;
    return 1;
}

int syncledger_json_scan_string(const uint8_t *b, long n, long *pi) {
    long i = *pi + 1;
    // Most strings are plain ASCII: find the first byte that is a quote, a control character, a
    // backslash or not ASCII, eight bytes at a time. The lowest byte any of the tests marks is a
    // true hit (a false mark only ever lies above a true one), so that byte is exact.
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, b + i, 8);  // little-endian: byte k is bits 8k..8k+7
        uint64_t marks = (w & HIGH) | ((w - ONES * 0x20) & ~w & HIGH) | zero_bytes(w ^ (ONES * 0x5C))
                         | zero_bytes(w ^ (ONES * 0x22));
        if (marks) {
            i += __builtin_ctzll(marks) >> 3;
            goto look;
        }
        i += 8;
    }
    while (i < n) {
        uint8_t c = b[i];
        if (c == '"' || c < 0x20 || c >= 0x80 || c == '\\') goto look;
        i++;
    }
    return -1;
look:
    if (b[i] == '"') {
        *pi = i + 1;
        return 3;
    }
    int canonical = 1, plain = 1;
    while (i < n) {
        uint8_t c = b[i];
        if (c == '"') {
            *pi = i + 1;
            return canonical | plain << 1;
        }
        if (c < 0x20) return -1;
        if (c >= 0x80) {
            // Kept as is by jsonQuoted when it is valid UTF-8; checked by the slow conversion.
            canonical = 0;
            plain = 0;
            i++;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        plain = 0;
        if (i + 1 >= n) return -1;
        uint8_t e = b[i + 1];
        i += 2;
        switch (e) {
        case '"': case '\\': case 'n': case 'r': case 't':
            break;  // jsonQuoted writes these escapes
        case '/': case 'b': case 'f':
            canonical = 0;
            break;
        case 'u': {
            uint32_t v;
            if (!hex4(b, n, &i, &v)) return -1;
            if (v >= 0xD800 && v < 0xDC00) {
                if (!(i + 1 < n && b[i] == '\\' && b[i + 1] == 'u')) return -1;
                i += 2;
                uint32_t low;
                if (!hex4(b, n, &i, &low)) return -1;
                if (!(low >= 0xDC00 && low < 0xE000)) return -1;
                canonical = 0;
            } else if (v >= 0xDC00 && v < 0xE000) {
                return -1;
            } else if (v >= 0x20 || v == 0x09 || v == 0x0A || v == 0x0D || (b[i - 1] >= 'A' && b[i - 1] <= 'F')) {
                // jsonQuoted writes only other control characters as \u00xx, in lowercase.
                canonical = 0;
            }
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

static int scan_value(const uint8_t *b, long n, long *i, long depth);

static int literal(const uint8_t *b, long n, long *i, const char *word, long count) {
    if (*i + count > n || memcmp(b + *i, word, (size_t)count) != 0) return -1;
    *i += count;
    return 1;
}

static int scan_number(const uint8_t *b, long n, long *pi) {
    long i = *pi, start = i;
    int negative = b[i] == '-';
    if (negative) i++;
    long digits = 0;
    while (i < n && b[i] >= '0' && b[i] <= '9') {
        digits++;
        i++;
    }
    if (digits == 0) return -1;
    uint8_t first = b[start + negative];
    if (digits > 1 && first == '0') return -1;
    int canonical = digits <= 15 && !(negative && first == '0');
    if (i < n && b[i] == '.') {
        canonical = 0;
        i++;
        long f = i;
        while (i < n && b[i] >= '0' && b[i] <= '9') i++;
        if (i == f) return -1;
    }
    if (i < n && (b[i] == 'e' || b[i] == 'E')) {
        canonical = 0;
        i++;
        if (i < n && (b[i] == '+' || b[i] == '-')) i++;
        long f = i;
        while (i < n && b[i] >= '0' && b[i] <= '9') i++;
        if (i == f) return -1;
    }
    *pi = i;
    return canonical;
}

static int scan_object(const uint8_t *b, long n, long *pi, long depth) {
    long i = *pi + 1;
    int canonical = !skip_space(b, n, &i);
    if (i < n && b[i] == '}') {
        *pi = i + 1;
        return canonical;
    }
    long p0 = 0, p1 = 0;
    int first = 1;
    for (;;) {
        if (skip_space(b, n, &i)) canonical = 0;
        if (!(i < n && b[i] == '"')) return -1;
        long keyStart = i + 1;
        int key = syncledger_json_scan_string(b, n, &i);
        if (key < 0) return -1;
        long keyEnd = i - 1;
        if (!(key & 2)) {
            canonical = 0;
        } else if (canonical && !first && compare_keys(b, p0, p1, keyStart, keyEnd) >= 0) {
            canonical = 0;
        }
        p0 = keyStart;
        p1 = keyEnd;
        first = 0;
        if (skip_space(b, n, &i)) canonical = 0;
        if (!(i < n && b[i] == ':')) return -1;
        i++;
        if (skip_space(b, n, &i)) canonical = 0;
        int v = scan_value(b, n, &i, depth + 1);
        if (v < 0) return -1;
        if (!v) canonical = 0;
        if (skip_space(b, n, &i)) canonical = 0;
        if (i >= n) return -1;
        if (b[i] == ',') {
            i++;
            continue;
        }
        if (b[i] == '}') {
            *pi = i + 1;
            return canonical;
        }
        return -1;
    }
}

static int scan_array(const uint8_t *b, long n, long *pi, long depth) {
    long i = *pi + 1;
    int canonical = !skip_space(b, n, &i);
    if (i < n && b[i] == ']') {
        *pi = i + 1;
        return canonical;
    }
    for (;;) {
        if (skip_space(b, n, &i)) canonical = 0;
        int v = scan_value(b, n, &i, depth + 1);
        if (v < 0) return -1;
        if (!v) canonical = 0;
        if (skip_space(b, n, &i)) canonical = 0;
        if (i >= n) return -1;
        if (b[i] == ',') {
            i++;
            continue;
        }
        if (b[i] == ']') {
            *pi = i + 1;
            return canonical;
        }
        return -1;
    }
}

static int scan_value(const uint8_t *b, long n, long *i, long depth) {
    if (*i >= n || depth >= SYNCLEDGER_JSON_MAX_DEPTH) return -1;
    switch (b[*i]) {
    case '{': return scan_object(b, n, i, depth);
    case '[': return scan_array(b, n, i, depth);
    case '"': {
        int s = syncledger_json_scan_string(b, n, i);
        return s < 0 ? -1 : (s & 1);
    }
    case 't': return literal(b, n, i, "true", 4);
    case 'f': return literal(b, n, i, "false", 5);
    case 'n': return literal(b, n, i, "null", 4);
    default: return scan_number(b, n, i);
    }
}

int syncledger_json_scan_value(const uint8_t *b, long n, long *i, long depth) {
    return scan_value(b, n, i, depth);
}

/// a[0..<n] == b[0..<n], for the short keys of an object: two overlapping loads of each instead of
/// a call to memcmp (most keys are 8 to 16 bytes).
static inline int same_bytes(const uint8_t *a, const uint8_t *b, long n) {
    if (n >= 8) {
        uint64_t a0, a1, b0, b1;
        for (long k = 0; k + 8 < n; k += 8) {
            memcpy(&a0, a + k, 8);
            memcpy(&b0, b + k, 8);
            if (a0 != b0) return 0;
        }
        memcpy(&a1, a + n - 8, 8);
        memcpy(&b1, b + n - 8, 8);
        return a1 == b1;
    }
    if (n >= 4) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&b0, b, 4);
        memcpy(&a1, a + n - 4, 4);
        memcpy(&b1, b + n - 4, 4);
        return a0 == b0 && a1 == b1;
    }
    for (long k = 0; k < n; k++)
        if (a[k] != b[k]) return 0;
    return 1;
}

long syncledger_json_object_members(const uint8_t *b, long n, long *pi, long depth, const uint8_t *names,
                                    const long *starts, const long *by_length, long longest,
                                    syncledger_json_member *out, long max) {
    long i = *pi;
    if (i >= n || b[i] != '{' || depth >= SYNCLEDGER_JSON_MAX_DEPTH) return -1;
    i++;
    skip_space(b, n, &i);
    long found = 0;
    if (i < n && b[i] == '}') {
        *pi = i + 1;
        return 0;
    }
    for (;;) {
        skip_space(b, n, &i);
        if (!(i < n && b[i] == '"')) return -1;
        long key_start = i + 1;
        int key = syncledger_json_scan_string(b, n, &i);
        if (key < 0) return -1;
        long key_end = i - 1, len = key_end - key_start;
        long name = -2;
        if (!(key & 2)) {
            // Escaped (or not ASCII): an escaped key's name is known only once decoded.
            for (long k = key_start; k < key_end; k++) {
                if (b[k] == '\\') {
                    name = -1;
                    break;
                }
            }
        }
        if (name == -2 && len <= longest) {
            for (long k = by_length[len]; k < by_length[len + 1]; k++) {
                if (same_bytes(b + key_start, names + starts[k], len)) {
                    name = k;
                    break;
                }
            }
        }
        skip_space(b, n, &i);
        if (!(i < n && b[i] == ':')) return -1;
        i++;
        skip_space(b, n, &i);
        long value_start = i;
        if (scan_value(b, n, &i, depth + 1) < 0) return -1;
        if (name != -2) {
            if (found == max) return -1;
            out[found].key_start = key_start;
            out[found].key_end = key_end;
            out[found].value_start = value_start;
            out[found].name = name;
            found++;
        }
        skip_space(b, n, &i);
        if (i >= n) return -1;
        if (b[i] == ',') {
            i++;
            continue;
        }
        if (b[i] == '}') {
            *pi = i + 1;
            return found;
        }
        return -1;
    }
}
