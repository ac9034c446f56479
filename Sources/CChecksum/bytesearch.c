// Substring search over bytes for the Swift side (glibc's memmem is vectorised; Swift's Glibc
// module does not expose it without _GNU_SOURCE).
#define _GNU_SOURCE
#include <string.h>
#include "CChecksum.h"

long syncledger_find(const void *hay, size_t hay_length, const void *needle, size_t needle_length) {
    if (needle_length == 0) return 0;
    if (hay == NULL || needle == NULL || hay_length < needle_length) return -1;
    const void *hit = memmem(hay, hay_length, needle, needle_length);
    return hit ? (long)((const char *)hit - (const char *)hay) : -1;
}
