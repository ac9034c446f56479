// CRC32C with the SSE4.2 crc32 instruction when the CPU has it, else a
// slicing-by-8 table. Written for SyncLedger; the polynomial and check value
// (crc32c("123456789") == 0xE3069283) are from RFC 3720, appendix B.4.
#include "CChecksum.h"
#include <string.h>

static uint32_t table[8][256];
static int table_ready = 0;

static void build_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
    table_ready = 1;
}

static uint32_t crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    if (!table_ready) build_table();
    crc = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
              table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

uint32_t syncledger_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    static int have_sse42 = -1;
    if (have_sse42 < 0) {
        __builtin_cpu_init();
        have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
    if (have_sse42) return crc32c_hw(crc, (const unsigned char *)data, length);
#endif
    return crc32c_sw(crc, (const unsigned char *)data, length);
}
