// Base64 (RFC 4648 alphabet, padded, one line) for sealing's boxes (Ledger's
// `Base64Canonical.encode`): the text Foundation's `base64EncodedString()` writes.
#include <string.h>
#include "CChecksum.h"

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The two characters of each 12-bit value, as they lie in memory (filled once, when the program
/// is loaded, before any thread can read it).
static uint16_t pairs[4096];

__attribute__((constructor)) static void syncledger_base64_fill_pairs(void) {
    for (int v = 0; v < 4096; v++) {
        uint8_t two[2] = {(uint8_t)alphabet[v >> 6], (uint8_t)alphabet[v & 63]};
        memcpy(&pairs[v], two, 2);
    }
}

void syncledger_base64_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0;
    // Six bytes at a time from one eight-byte load (big-endian: the first byte on top), their
    // eight characters as four pairs written with one store.
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        w = __builtin_bswap64(w);
        uint64_t text = (uint64_t)pairs[(w >> 52) & 4095] | (uint64_t)pairs[(w >> 40) & 4095] << 16
                        | (uint64_t)pairs[(w >> 28) & 4095] << 32 | (uint64_t)pairs[(w >> 16) & 4095] << 48;
        memcpy(out, &text, 8);
        i += 6;
        out += 8;
    }
    while (i + 3 <= n) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[0] = (uint8_t)alphabet[v >> 18];
        out[1] = (uint8_t)alphabet[(v >> 12) & 63];
        out[2] = (uint8_t)alphabet[(v >> 6) & 63];
        out[3] = (uint8_t)alphabet[v & 63];
        i += 3;
        out += 4;
    }
    if (i < n) {
        int two = i + 1 < n;
        uint32_t v = (uint32_t)in[i] << 16 | (two ? (uint32_t)in[i + 1] << 8 : 0);
        out[0] = (uint8_t)alphabet[v >> 18];
        out[1] = (uint8_t)alphabet[(v >> 12) & 63];
        out[2] = two ? (uint8_t)alphabet[(v >> 6) & 63] : '=';
        out[3] = '=';
    }
}
