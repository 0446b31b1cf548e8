/* The NTLS v1 encoding. Integers are big-endian; attribute values and raw mechanism parameters
 * travel in this process's native layout, as HELLO declares. */
#define _DEFAULT_SOURCE
#include "wire.h"

#include "attrarray.h"
#include "kdfparams.h"

#include <stdlib.h>
#include <string.h>

#define TEMPLATE_DEPTH_MAX 4

void hc_buf_init(hc_buf *b)
{
    b->cap = 256;
    b->data = malloc(b->cap);
    b->len = HC_FRAME_HEADER;
    b->failed = b->data == NULL;
}

/* Requests may carry PINs, key material or data: never left behind in freed memory. */
void hc_buf_free(hc_buf *b)
{
    if (b->data != NULL)
        explicit_bzero(b->data, b->cap);
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static unsigned char *reserve(hc_buf *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (n > HC_FRAME_MAX + HC_FRAME_HEADER || b->len + n > HC_FRAME_MAX + HC_FRAME_HEADER) {
        b->failed = 1; /* longer than a frame may be: reported as too large by the caller */
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->failed = 1;
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    unsigned char *at = b->data + b->len;
    b->len += n;
    return at;
}

static void put_be(hc_buf *b, uint64_t v, size_t n)
{
    unsigned char *p = reserve(b, n);
    if (p == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

void hc_put_u8(hc_buf *b, uint8_t v) { put_be(b, v, 1); }
void hc_put_u16(hc_buf *b, uint16_t v) { put_be(b, v, 2); }
void hc_put_u32(hc_buf *b, uint32_t v) { put_be(b, v, 4); }
void hc_put_u64(hc_buf *b, uint64_t v) { put_be(b, v, 8); }

void hc_put_bytes(hc_buf *b, const void *p, size_t n)
{
    if (n > HC_FRAME_MAX) {
        b->failed = 1;
        return;
    }
    hc_put_u32(b, (uint32_t)n);
    if (n == 0)
        return;
    unsigned char *at = reserve(b, n);
    if (at != NULL)
        memcpy(at, p, n);
}

void hc_put_bytes_raw(hc_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    unsigned char *at = reserve(b, n);
    if (at != NULL)
        memcpy(at, p, n);
}

void hc_put_string(hc_buf *b, const char *s)
{
    hc_put_bytes(b, s, strlen(s));
}

void hc_put_opt_bytes(hc_buf *b, const void *p, size_t n)
{
    hc_put_u8(b, p != NULL);
    if (p != NULL)
        hc_put_bytes(b, p, n);
}

void hc_put_outbuf(hc_buf *b, const void *out, CK_ULONG capacity)
{
    hc_put_u8(b, out != NULL);
    hc_put_u64(b, out != NULL ? capacity : 0);
}

static CK_RV put_template(hc_buf *b, const CK_ATTRIBUTE *t, CK_ULONG count, int depth)
{
    if (count > 0 && t == NULL)
        return CKR_ARGUMENTS_BAD;
    if (count > UINT32_MAX)
        return CKR_ARGUMENTS_BAD;
    hc_put_u32(b, (uint32_t)count);
    for (CK_ULONG i = 0; i < count; i++) {
        hc_put_u64(b, t[i].type);
        /* CKA_ALLOWED_MECHANISMS holds mechanism types: it travels as a plain value */
        if (hc_is_attribute_array(t[i].type) && t[i].pValue != NULL) {
            if (t[i].ulValueLen % sizeof(CK_ATTRIBUTE) != 0 || depth >= TEMPLATE_DEPTH_MAX)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            hc_put_u8(b, 2);
            CK_RV rv = put_template(b, (const CK_ATTRIBUTE *)t[i].pValue, t[i].ulValueLen / sizeof(CK_ATTRIBUTE),
                                    depth + 1);
            if (rv != CKR_OK)
                return rv;
        } else {
            hc_put_u8(b, 0);
            if (t[i].pValue == NULL)
                hc_put_bytes(b, NULL, 0);
            else
                hc_put_bytes(b, t[i].pValue, t[i].ulValueLen);
        }
    }
    return CKR_OK;
}

CK_RV hc_put_template(hc_buf *b, const CK_ATTRIBUTE *t, CK_ULONG count)
{
    return put_template(b, t, count, 0);
}

void hc_put_get_template(hc_buf *b, const CK_ATTRIBUTE *t, CK_ULONG count)
{
    hc_put_u32(b, (uint32_t)count);
    for (CK_ULONG i = 0; i < count; i++) {
        hc_put_u64(b, t[i].type);
        if (hc_is_attribute_array(t[i].type)) { /* the whole nested template, laid out here */
            hc_put_u8(b, 1);
            hc_put_u64(b, UINT64_MAX);
            continue;
        }
        hc_put_u8(b, t[i].pValue != NULL);
        hc_put_u64(b, t[i].pValue != NULL ? t[i].ulValueLen : 0);
    }
}

/* A pointer/length pair inside a parameter structure: NULL with a length is malformed. */
static int put_field(hc_buf *b, const void *p, CK_ULONG n)
{
    if (p == NULL && n != 0)
        return 0;
    hc_put_bytes(b, p, p == NULL ? 0 : n);
    return 1;
}

/* The v2.40 errata/3.0 CK_GCM_PARAMS has ulIvBits; some applications still pass the older
 * layout without it (five fields), recognisable by its size. */
struct gcm_params_legacy {
    CK_BYTE_PTR pIv;
    CK_ULONG ulIvLen;
    CK_BYTE_PTR pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulTagBits;
};

static CK_RV put_structured(hc_buf *b, const CK_MECHANISM *m)
{
    const void *p = m->pParameter;
    CK_ULONG n = m->ulParameterLen;
    int ok = 1;

    switch (m->mechanism) {
    case CKM_AES_GCM:
        if (n == sizeof(CK_GCM_PARAMS)) {
            const CK_GCM_PARAMS *g = p;
            hc_put_u8(b, 2);
            ok = put_field(b, g->pIv, g->ulIvLen);
            hc_put_u64(b, g->ulIvBits);
            ok = ok && put_field(b, g->pAAD, g->ulAADLen);
            hc_put_u64(b, g->ulTagBits);
        } else if (n == sizeof(struct gcm_params_legacy)) {
            const struct gcm_params_legacy *g = p;
            hc_put_u8(b, 2);
            ok = put_field(b, g->pIv, g->ulIvLen);
            hc_put_u64(b, (uint64_t)g->ulIvLen * 8);
            ok = ok && put_field(b, g->pAAD, g->ulAADLen);
            hc_put_u64(b, g->ulTagBits);
        } else {
            return CKR_MECHANISM_PARAM_INVALID;
        }
        break;
    case CKM_RSA_PKCS_OAEP: {
        const CK_RSA_PKCS_OAEP_PARAMS *o = p;
        if (n != sizeof *o)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_u64(b, o->hashAlg);
        hc_put_u64(b, o->mgf);
        hc_put_u64(b, o->source);
        ok = put_field(b, o->pSourceData, o->ulSourceDataLen);
        break;
    }
    case CKM_ECDH1_DERIVE:
    case CKM_ECDH1_COFACTOR_DERIVE: {
        const CK_ECDH1_DERIVE_PARAMS *e = p;
        if (n != sizeof *e)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_u64(b, e->kdf);
        ok = put_field(b, e->pSharedData, e->ulSharedDataLen);
        ok = ok && put_field(b, e->pPublicData, e->ulPublicDataLen);
        break;
    }
    case CKM_HKDF_DERIVE:
    case CKM_HKDF_DATA: {
        const CK_HKDF_PARAMS *h = p;
        if (n != sizeof *h)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_u8(b, h->bExtract != 0);
        hc_put_u8(b, h->bExpand != 0);
        hc_put_u64(b, h->prfHashMechanism);
        hc_put_u64(b, h->ulSaltType);
        ok = put_field(b, h->pSalt, h->ulSaltLen);
        hc_put_u64(b, h->hSaltKey);
        ok = ok && put_field(b, h->pInfo, h->ulInfoLen);
        break;
    }
    case CKM_AES_ECB_ENCRYPT_DATA: {
        const CK_KEY_DERIVATION_STRING_DATA *d = p;
        if (n != sizeof *d)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        ok = put_field(b, d->pData, d->ulLen);
        break;
    }
    case CKM_AES_CBC_ENCRYPT_DATA: {
        const CK_AES_CBC_ENCRYPT_DATA_PARAMS *d = p;
        if (n != sizeof *d)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_bytes(b, d->iv, sizeof d->iv);
        ok = put_field(b, d->pData, d->length);
        break;
    }
    case CKM_EDDSA: {
        const CK_EDDSA_PARAMS *e = p;
        if (n != sizeof *e)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_u8(b, e->phFlag != 0);
        ok = put_field(b, e->pContextData, e->ulContextDataLen);
        break;
    }
    case CKM_SP800_108_COUNTER_KDF:
    case CKM_SP800_108_FEEDBACK_KDF:
        return hc_put_sp800_108_params(b, m);
    default:
        hc_put_u8(b, 1);
        hc_put_bytes(b, p, n);
        break;
    }
    return ok ? CKR_OK : CKR_MECHANISM_PARAM_INVALID;
}

CK_RV hc_put_mechanism(hc_buf *b, const CK_MECHANISM *m)
{
    if (m == NULL)
        return CKR_ARGUMENTS_BAD;
    hc_put_u64(b, m->mechanism);
    if (m->pParameter == NULL) {
        hc_put_u8(b, 0);
        return CKR_OK;
    }
    return put_structured(b, m);
}

/* PKCS#11 3.0: an Init with pMechanism NULL ends the active operation (mechanism type all ones). */
CK_RV hc_put_cancel(hc_buf *b)
{
    hc_put_u64(b, HC_CANCEL_MECHANISM);
    hc_put_u8(b, 0);
    return CKR_OK;
}

/* ---- reading ---- */

static const unsigned char *take(hc_reader *r, size_t n)
{
    if (r->failed || r->left < n) {
        r->failed = 1;
        return NULL;
    }
    const unsigned char *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint64_t get_be(hc_reader *r, size_t n)
{
    const unsigned char *p = take(r, n);
    uint64_t v = 0;
    if (p == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

uint8_t hc_get_u8(hc_reader *r) { return (uint8_t)get_be(r, 1); }
uint16_t hc_get_u16(hc_reader *r) { return (uint16_t)get_be(r, 2); }
uint32_t hc_get_u32(hc_reader *r) { return (uint32_t)get_be(r, 4); }
uint64_t hc_get_u64(hc_reader *r) { return get_be(r, 8); }

const unsigned char *hc_get_bytes(hc_reader *r, size_t *n)
{
    uint32_t len = hc_get_u32(r);
    const unsigned char *p = take(r, len);
    *n = p != NULL ? len : 0;
    return p;
}

void hc_get_string(hc_reader *r, char *dst, size_t cap)
{
    size_t n;
    const unsigned char *p = hc_get_bytes(r, &n);
    if (cap == 0)
        return;
    if (p == NULL)
        n = 0;
    if (n > cap - 1)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, p, n);
    dst[n] = '\0';
}

void hc_get_fixed(hc_reader *r, unsigned char *dst, size_t n)
{
    size_t got;
    const unsigned char *p = hc_get_bytes(r, &got);
    memset(dst, ' ', n);
    if (p != NULL)
        memcpy(dst, p, got < n ? got : n);
}

CK_RV hc_read_output(hc_reader *r, CK_RV rv, CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
    if (rv == CKR_BUFFER_TOO_SMALL) {
        uint64_t needed = hc_get_u64(r);
        if (r->failed)
            return CKR_DEVICE_ERROR;
        *out_len = (CK_ULONG)needed;
        return rv;
    }
    if (rv != CKR_OK)
        return rv;
    if (hc_get_u8(r)) {
        size_t n;
        const unsigned char *p = hc_get_bytes(r, &n);
        if (r->failed)
            return CKR_DEVICE_ERROR;
        if (out == NULL || n > *out_len) { /* a server that ignored the offer: never overflow */
            *out_len = (CK_ULONG)n;
            return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
        }
        if (n > 0)
            memcpy(out, p, n);
        *out_len = (CK_ULONG)n;
        return CKR_OK;
    }
    uint64_t needed = hc_get_u64(r);
    if (r->failed)
        return CKR_DEVICE_ERROR;
    *out_len = (CK_ULONG)needed;
    return CKR_OK;
}

CK_RV hc_read_attribute_results(hc_reader *r, CK_RV rv, CK_ATTRIBUTE *t, CK_ULONG count)
{
    uint32_t n = hc_get_u32(r);
    if (r->failed || n != count)
        return CKR_DEVICE_ERROR;
    for (CK_ULONG i = 0; i < count; i++) {
        uint64_t value_length = hc_get_u64(r);
        if (hc_get_u8(r)) {
            size_t len;
            const unsigned char *p = hc_get_bytes(r, &len);
            if (r->failed)
                return CKR_DEVICE_ERROR;
            if (hc_is_attribute_array(t[i].type)) {
                CK_RV one = hc_fill_attribute_array(&t[i], p, len);
                if (one == CKR_DEVICE_ERROR)
                    return one;
                if (rv == CKR_OK)
                    rv = one;
            } else if (t[i].pValue == NULL) { /* a size query the appliance answered with the value */
                t[i].ulValueLen = (CK_ULONG)len;
            } else if (len <= t[i].ulValueLen) {
                if (len > 0)
                    memcpy(t[i].pValue, p, len);
                t[i].ulValueLen = (CK_ULONG)len;
            } else {
                t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
                if (rv == CKR_OK)
                    rv = CKR_BUFFER_TOO_SMALL;
            }
        } else {
            t[i].ulValueLen = (CK_ULONG)value_length;
        }
    }
    if (r->failed)
        return CKR_DEVICE_ERROR;
    return rv;
}

/* CK_TOKEN_INFO in the order GET_TOKEN_INFO answers it (docs/ntls-protocol.md); r->failed tells a short answer */
void hc_get_token_info(hc_reader *r, CK_TOKEN_INFO *pinfo)
{
    CK_TOKEN_INFO info;
    memset(&info, 0, sizeof info);
    hc_get_fixed(r, info.label, sizeof info.label);
    hc_get_fixed(r, info.manufacturerID, sizeof info.manufacturerID);
    hc_get_fixed(r, info.model, sizeof info.model);
    hc_get_fixed(r, info.serialNumber, sizeof info.serialNumber);
    info.flags = (CK_FLAGS)hc_get_u64(r);
    info.ulMaxSessionCount = (CK_ULONG)hc_get_u64(r);
    info.ulSessionCount = (CK_ULONG)hc_get_u64(r);
    info.ulMaxRwSessionCount = (CK_ULONG)hc_get_u64(r);
    info.ulRwSessionCount = (CK_ULONG)hc_get_u64(r);
    info.ulMaxPinLen = (CK_ULONG)hc_get_u64(r);
    info.ulMinPinLen = (CK_ULONG)hc_get_u64(r);
    info.ulTotalPublicMemory = (CK_ULONG)hc_get_u64(r);
    info.ulFreePublicMemory = (CK_ULONG)hc_get_u64(r);
    info.ulTotalPrivateMemory = (CK_ULONG)hc_get_u64(r);
    info.ulFreePrivateMemory = (CK_ULONG)hc_get_u64(r);
    info.hardwareVersion.major = hc_get_u8(r);
    info.hardwareVersion.minor = hc_get_u8(r);
    info.firmwareVersion.major = hc_get_u8(r);
    info.firmwareVersion.minor = hc_get_u8(r);
    hc_get_fixed(r, info.utcTime, sizeof info.utcTime);
    *pinfo = info;
}
