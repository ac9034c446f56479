#include "CGCM.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>

// One context per thread and direction, made on first use and freed when the thread ends.
static pthread_key_t contexts_key;
static pthread_once_t contexts_once = PTHREAD_ONCE_INIT;

struct contexts {
    EVP_CIPHER_CTX *seal;
    EVP_CIPHER_CTX *open;
};

static void free_contexts(void *p) {
    struct contexts *c = p;
    EVP_CIPHER_CTX_free(c->seal);
    EVP_CIPHER_CTX_free(c->open);
    OPENSSL_free(c);
}

static void make_key(void) { (void)pthread_key_create(&contexts_key, free_contexts); }

static struct contexts *thread_contexts(void) {
    (void)pthread_once(&contexts_once, make_key);
    struct contexts *c = pthread_getspecific(contexts_key);
    if (c) return c;
    c = OPENSSL_zalloc(sizeof *c);
    if (!c) return NULL;
    c->seal = EVP_CIPHER_CTX_new();
    c->open = EVP_CIPHER_CTX_new();
    if (!c->seal || !c->open
        || EVP_EncryptInit_ex(c->seal, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_DecryptInit_ex(c->open, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || pthread_setspecific(contexts_key, c) != 0) {
        free_contexts(c);
        return NULL;
    }
    return c;
}

static int seal(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *plain, size_t plain_len, uint8_t *out) {
    if (aad_len > INT_MAX || plain_len > INT_MAX) return -1;
    struct contexts *c = thread_contexts();
    if (!c) return -1;
    int n = 0, end = 0;
    // The default IV length of GCM in OpenSSL is 12 bytes, the nonce's.
    if (EVP_EncryptInit_ex(c->seal, NULL, NULL, key, nonce) != 1) return -1;
    if (aad_len > 0 && EVP_EncryptUpdate(c->seal, NULL, &n, aad, (int)aad_len) != 1) return -1;
    if (EVP_EncryptUpdate(c->seal, out, &n, plain, (int)plain_len) != 1) return -1;
    if (EVP_EncryptFinal_ex(c->seal, out + n, &end) != 1) return -1;
    if ((size_t)(n + end) != plain_len) return -1;
    if (EVP_CIPHER_CTX_ctrl(c->seal, EVP_CTRL_GCM_GET_TAG, 16, out + plain_len) != 1) return -1;
    return 0;
}

static int open_box(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *cipher, size_t cipher_len, const uint8_t *tag, uint8_t *out) {
    if (aad_len > INT_MAX || cipher_len > INT_MAX) return -1;
    struct contexts *c = thread_contexts();
    if (!c) return -1;
    int n = 0, end = 0;
    if (EVP_DecryptInit_ex(c->open, NULL, NULL, key, nonce) != 1) return -1;
    if (aad_len > 0 && EVP_DecryptUpdate(c->open, NULL, &n, aad, (int)aad_len) != 1) return -1;
    if (EVP_DecryptUpdate(c->open, out, &n, cipher, (int)cipher_len) != 1) return -1;
    // The tag is set before the final call, which checks it.
    if (EVP_CIPHER_CTX_ctrl(c->open, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) return -1;
    if (EVP_DecryptFinal_ex(c->open, out + n, &end) != 1) return -1;
    return (size_t)(n + end) == cipher_len ? 0 : -1;
}

// A failure leaves libcrypto's error queue empty for whatever runs on this thread next.
int syncledger_gcm_seal(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *plain, size_t plain_len, uint8_t *out) {
    int r = seal(key, nonce, aad, aad_len, plain, plain_len, out);
    if (r != 0) ERR_clear_error();
    return r;
}

int syncledger_gcm_open(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                        const uint8_t *cipher, size_t cipher_len, const uint8_t *tag, uint8_t *out) {
    int r = open_box(key, nonce, aad, aad_len, cipher, cipher_len, tag, out);
    if (r != 0) ERR_clear_error();
    return r;
}
