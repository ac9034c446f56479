#ifndef SYNCLEDGER_CCHECKSUM_H
#define SYNCLEDGER_CCHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and ext4.
/// `crc` is the running value: pass 0 to start; feed the result back to continue.
uint32_t syncledger_crc32c(uint32_t crc, const void *data, size_t length);

/// The offset of the first occurrence of `needle` in `hay` (memmem), or -1.
long syncledger_find(const void *hay, size_t hay_length, const void *needle, size_t needle_length);

/// Fills `buffer` with `length` bytes from the kernel's CSPRNG (getrandom(2), which waits until
/// it is seeded), retrying on EINTR and short reads. 0 on success, -1 (errno set) otherwise.
int syncledger_random(void *buffer, size_t length);

/// Strict JSON scanning for sealing's byte path (`ByteJSON` in Ledger): the value at b[*i] (no
/// whitespace before it) at nesting `depth` (at most 127), or the string whose opening quote is
/// at b[*i]. *i moves past it. The value: 1 when its bytes are its canonical text, 0 when not,
/// -1 when it is not valid JSON as FastJSON reads it (or nested too deep). The string: bit 0 set
/// when canonical, bit 1 when plain (ASCII, no escapes), -1 when invalid.
int syncledger_json_scan_value(const uint8_t *b, long n, long *i, long depth);
int syncledger_json_scan_string(const uint8_t *b, long n, long *i);

/// A member of an object, as `syncledger_json_object_members` records it.
typedef struct {
    /// The key's bytes, between its quotes (escapes not decoded).
    long key_start, key_end;
    /// Where its value starts (after the colon and any whitespace).
    long value_start;
    /// The index of the name it matched, or -1 for a key with an escape (decode it to know).
    long name;
} syncledger_json_member;

/// Checks the object whose `{` is at b[*i], at nesting `depth`, exactly as
/// `syncledger_json_scan_value` checks it, and records in `out` each member whose key is one of
/// the names or has an escape, in order. The names, sorted by length, are `names[starts[k]...]`;
/// those of length L are k in by_length[L] ..< by_length[L + 1], for L up to `longest`. Returns
/// how many members it recorded, *i moved past the `}`; -1 (*i unchanged) when the bytes are not
/// valid JSON as FastJSON reads it, are nested too deep, or more than `max` would be recorded:
/// the caller then reads them another way.
long syncledger_json_object_members(const uint8_t *b, long n, long *i, long depth, const uint8_t *names,
                                    const long *starts, const long *by_length, long longest,
                                    syncledger_json_member *out, long max);

/// Writes the base64 text of in[0..<n] (RFC 4648 alphabet, padded, one line) at `out`:
/// (n + 2) / 3 * 4 bytes.
void syncledger_base64_encode(const uint8_t *in, size_t n, uint8_t *out);

#endif
