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

#endif
