// Base64 (RFC 4648 alphabet, padded, one line) for sealing's boxes (Ledger's
// `Base64Canonical.encode`): the text Foundation's `base64EncodedString()` writes.
#include <string.h>
#include "CChecksum.h"

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void syncledger_base64_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0;
    // Six bytes at a time from one eight-byte load (big-endian: the first byte on top).
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        w = __builtin_bswap64(w);
        out[0] = (uint8_t)alphabet[(w >> 58) & 63];
        out[1] = (uint8_t)alphabet[(w >> 52) & 63];
        out[2] = (uint8_t)alphabet[(w >> 46) & 63];
        out[3] = (uint8_t)alphabet[(w >> 40) & 63];
        out[4] = (uint8_t)alphabet[(w >> 34) & 63];
        out[5] = (uint8_t)alphabet[(w >> 28) & 63];
        out[6] = (uint8_t)alphabet[(w >> 22) & 63];
        out[7] = (uint8_t)alphabet[(w >> 16) & 63];
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
