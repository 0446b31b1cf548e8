/* The NTLS v1 wire encoding (docs/ntls-protocol.md): building requests, reading responses. */
#ifndef HSMCLOUD_WIRE_H
#define HSMCLOUD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "pkcs11.h"

#define HC_PROTOCOL_VERSION 1
#define HC_FRAME_MAX (16u * 1024u * 1024u)
#define HC_FRAME_HEADER 4

enum hc_opcode {
    OP_HELLO = 0x0001,
    OP_LIST_PARTITIONS = 0x0002,
    OP_GET_SLOT_INFO = 0x0010,
    OP_GET_TOKEN_INFO = 0x0011,
    OP_GET_MECHANISM_LIST = 0x0012,
    OP_GET_MECHANISM_INFO = 0x0013,
    OP_INIT_TOKEN = 0x0014,
    OP_OPEN_SESSION = 0x0015,
    OP_CLOSE_SESSION = 0x0016,
    OP_CLOSE_ALL_SESSIONS = 0x0017,
    OP_GET_SESSION_INFO = 0x0018,
    OP_INIT_PIN = 0x0019,
    OP_SET_PIN = 0x001A,
    OP_LOGIN = 0x001B,
    OP_LOGOUT = 0x001C,
    OP_CREATE_OBJECT = 0x0020,
    OP_COPY_OBJECT = 0x0021,
    OP_DESTROY_OBJECT = 0x0022,
    OP_GET_OBJECT_SIZE = 0x0023,
    OP_GET_ATTRIBUTE_VALUE = 0x0024,
    OP_SET_ATTRIBUTE_VALUE = 0x0025,
    OP_FIND_OBJECTS_INIT = 0x0026,
    OP_FIND_OBJECTS = 0x0027,
    OP_FIND_OBJECTS_FINAL = 0x0028,
    OP_ENCRYPT_INIT = 0x0030,
    OP_ENCRYPT = 0x0031,
    OP_ENCRYPT_UPDATE = 0x0032,
    OP_ENCRYPT_FINAL = 0x0033,
    OP_DECRYPT_INIT = 0x0034,
    OP_DECRYPT = 0x0035,
    OP_DECRYPT_UPDATE = 0x0036,
    OP_DECRYPT_FINAL = 0x0037,
    OP_DIGEST_INIT = 0x0038,
    OP_DIGEST = 0x0039,
    OP_DIGEST_UPDATE = 0x003A,
    OP_DIGEST_KEY = 0x003B,
    OP_DIGEST_FINAL = 0x003C,
    OP_SIGN_INIT = 0x0040,
    OP_SIGN = 0x0041,
    OP_SIGN_UPDATE = 0x0042,
    OP_SIGN_FINAL = 0x0043,
    OP_VERIFY_INIT = 0x0044,
    OP_VERIFY = 0x0045,
    OP_VERIFY_UPDATE = 0x0046,
    OP_VERIFY_FINAL = 0x0047,
    OP_GENERATE_KEY = 0x0050,
    OP_GENERATE_KEY_PAIR = 0x0051,
    OP_WRAP_KEY = 0x0052,
    OP_UNWRAP_KEY = 0x0053,
    OP_DERIVE_KEY = 0x0054,
    OP_DERIVE_KEYS = 0x0055, /* C_DeriveKey with additional derived keys (SP 800-108) */
    OP_SEED_RANDOM = 0x0058,
    OP_GENERATE_RANDOM = 0x0059,
    OP_FINALIZE = 0x0060,
    /* cloning (docs/ntls-protocol.md, "Cloning, backup and synchronize"): HA replication */
    OP_GET_CLONING_INFO = 0x0070,
    OP_CLONE_OFFER = 0x0071,
    OP_CLONE_EXPORT = 0x0072,
    OP_CLONE_IMPORT = 0x0073,
    OP_LIST_OBJECT_FINGERPRINTS = 0x0074,
};

/* A growing request buffer; the first HC_FRAME_HEADER bytes are kept for the frame length.
 * A failed allocation sets `failed` and later puts do nothing. */
typedef struct hc_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
    int failed;
} hc_buf;

void hc_buf_init(hc_buf *b);
/* Zeroes the buffer, then frees it. */
void hc_buf_free(hc_buf *b);
void hc_put_u8(hc_buf *b, uint8_t v);
void hc_put_u16(hc_buf *b, uint16_t v);
void hc_put_u32(hc_buf *b, uint32_t v);
void hc_put_u64(hc_buf *b, uint64_t v);
void hc_put_bytes(hc_buf *b, const void *p, size_t n);
void hc_put_string(hc_buf *b, const char *s);
/* Bytes as they are, without a length. */
void hc_put_bytes_raw(hc_buf *b, const void *p, size_t n);
void hc_put_opt_bytes(hc_buf *b, const void *p, size_t n);
/* The caller's output offer: pointer NULL means a size query. */
void hc_put_outbuf(hc_buf *b, const void *out, CK_ULONG capacity);
/* Input template (kind 0 values, kind 2 attribute arrays). CKR_ARGUMENTS_BAD or
 * CKR_ATTRIBUTE_VALUE_INVALID for a template the library cannot encode. */
CK_RV hc_put_template(hc_buf *b, const CK_ATTRIBUTE *t, CK_ULONG count);
/* Mechanism: structured parameters for the mechanisms the protocol lists, raw otherwise. */
CK_RV hc_put_mechanism(hc_buf *b, const CK_MECHANISM *m);
/* The mechanism type that stands for "no mechanism": cancel the active operation (PKCS#11 3.0). */
#define HC_CANCEL_MECHANISM 0xFFFFFFFFFFFFFFFFULL
CK_RV hc_put_cancel(hc_buf *b);
/* C_GetAttributeValue's offer: type, has_buffer, buffer_length per attribute. */
void hc_put_get_template(hc_buf *b, const CK_ATTRIBUTE *t, CK_ULONG count);

/* A bounds-checked reader over a response payload; any short read sets `failed`. */
typedef struct hc_reader {
    const unsigned char *p;
    size_t left;
    int failed;
} hc_reader;

uint8_t hc_get_u8(hc_reader *r);
uint16_t hc_get_u16(hc_reader *r);
uint32_t hc_get_u32(hc_reader *r);
uint64_t hc_get_u64(hc_reader *r);
/* Points into the payload; *n is the length. */
const unsigned char *hc_get_bytes(hc_reader *r, size_t *n);
/* Copies a string into dst (NUL-terminated, truncated to cap - 1). */
void hc_get_string(hc_reader *r, char *dst, size_t cap);
/* Copies exactly `n` bytes of a `bytes` field into dst (blank padded if shorter). */
void hc_get_fixed(hc_reader *r, unsigned char *dst, size_t n);
void hc_get_token_info(hc_reader *r, CK_TOKEN_INFO *info);

/* The output of a function that returns data (the protocol's "output"), for rv = CKR_OK or
 * CKR_BUFFER_TOO_SMALL: copies the data or stores the needed length. Returns the function's
 * result (CKR_DEVICE_ERROR for a response that does not decode). */
CK_RV hc_read_output(hc_reader *r, CK_RV rv, CK_BYTE_PTR out, CK_ULONG_PTR out_len);
/* C_GetAttributeValue's per-attribute results into the caller's template. */
CK_RV hc_read_attribute_results(hc_reader *r, CK_RV rv, CK_ATTRIBUTE *t, CK_ULONG count);

#endif
