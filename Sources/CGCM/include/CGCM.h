#ifndef SYNCLEDGER_CGCM_H
#define SYNCLEDGER_CGCM_H

#include <stddef.h>
#include <stdint.h>

/// AES-256-GCM through the system's OpenSSL libcrypto (apt: libssl-dev), one cipher context per
/// thread reused for every box: sealing and opening a patient's part of an observation is one
/// short box each, and swift-crypto's `AES.GCM` spent most of a box's time around the cipher
/// (a context allocated and keyed per call, `Data` copies). The boxes are the standard ones:
/// 12-byte nonce, 16-byte tag, so either library opens what the other sealed.

/// Seals `plain` (`plain_len` bytes) under `key` (32 bytes) and `nonce` (12 bytes), `aad`
/// authenticated: writes the ciphertext (`plain_len` bytes) then the tag (16 bytes) to `out`.
/// 0 on success, -1 when libcrypto fails (out of memory).
int syncledger_gcm_seal(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *plain, size_t plain_len, uint8_t *out);

/// Opens `cipher` (`cipher_len` bytes, the tag not included) with `tag` (16 bytes): writes the
/// plaintext (`cipher_len` bytes) to `out`. 0 when the tag matches, -1 otherwise (`out` then
/// holds nothing to use).
int syncledger_gcm_open(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *cipher, size_t cipher_len, const uint8_t *tag, uint8_t *out);

#endif
