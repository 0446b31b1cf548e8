/* Attribute arrays read back with C_GetAttributeValue (PKCS#11 v2.40 §5.7, v3.0 §5.7.5): the
 * appliance answers the whole nested template; this file applies the standard's length and
 * buffer rules to the caller's CK_ATTRIBUTE array, entry by entry (by position: "the type element
 * of attributes within the array must be ignored on input and must be set on output"). */
#include "attrarray.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define ARRAY_DEPTH_MAX 4

int hc_is_attribute_array(CK_ATTRIBUTE_TYPE type)
{
    return type == CKA_WRAP_TEMPLATE || type == CKA_UNWRAP_TEMPLATE || type == CKA_DERIVE_TEMPLATE;
}

/* One element of a nested template: a value (kind 0) or another nested template (kind 2),
 * pointing into the response. */
struct element {
    CK_ATTRIBUTE_TYPE type;
    int kind;
    const unsigned char *p;
    size_t n;
};

static int skip_template(hc_reader *r, int depth);

static int read_element(hc_reader *r, struct element *e, int depth)
{
    e->type = (CK_ATTRIBUTE_TYPE)hc_get_u64(r);
    e->kind = hc_get_u8(r);
    if (r->failed)
        return 0;
    if (e->kind == 0) {
        e->p = hc_get_bytes(r, &e->n);
    } else if (e->kind == 2) {
        const unsigned char *start = r->p;
        if (depth >= ARRAY_DEPTH_MAX || !skip_template(r, depth + 1))
            return 0;
        e->p = start;
        e->n = (size_t)(r->p - start);
    } else {
        return 0;
    }
    return !r->failed;
}

static int skip_template(hc_reader *r, int depth)
{
    uint32_t n = hc_get_u32(r);
    for (uint32_t i = 0; i < n && !r->failed; i++) {
        struct element e;
        if (!read_element(r, &e, depth))
            return 0;
    }
    return !r->failed;
}

/* The elements of an encoded template (an empty encoding is no element). */
static int parse(const unsigned char *enc, size_t len, int depth, struct element **out, size_t *count)
{
    hc_reader r = {enc, len, 0};
    *out = NULL;
    *count = 0;
    if (len == 0)
        return 1;
    uint32_t n = hc_get_u32(&r);
    if (r.failed || n > r.left / 13) /* an element is at least 13 bytes: type, kind, a length */
        return 0;
    struct element *e = calloc(n > 0 ? n : 1, sizeof *e);
    if (e == NULL)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!read_element(&r, &e[i], depth)) {
            free(e);
            return 0;
        }
    }
    if (r.left != 0) {
        free(e);
        return 0;
    }
    *out = e;
    *count = n;
    return 1;
}

static CK_RV fill(CK_ATTRIBUTE *a, const unsigned char *enc, size_t len, int depth);

static CK_RV fill_element(CK_ATTRIBUTE *dst, const struct element *e, int depth)
{
    if (e->kind == 2)
        return fill(dst, e->p, e->n, depth + 1);
    if (dst->pValue == NULL) {
        dst->ulValueLen = (CK_ULONG)e->n;
        return CKR_OK;
    }
    if (dst->ulValueLen < e->n) {
        dst->ulValueLen = CK_UNAVAILABLE_INFORMATION;
        return CKR_BUFFER_TOO_SMALL;
    }
    if (e->n > 0)
        memcpy(dst->pValue, e->p, e->n);
    dst->ulValueLen = (CK_ULONG)e->n;
    return CKR_OK;
}

static CK_RV fill(CK_ATTRIBUTE *a, const unsigned char *enc, size_t len, int depth)
{
    struct element *e;
    size_t n;
    if (!parse(enc, len, depth, &e, &n))
        return CKR_DEVICE_ERROR;
    CK_ULONG needed = (CK_ULONG)(n * sizeof(CK_ATTRIBUTE));
    CK_RV rv = CKR_OK;
    if (a->pValue == NULL) {
        a->ulValueLen = needed;
    } else if (a->ulValueLen < needed) {
        a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
        rv = CKR_BUFFER_TOO_SMALL;
    } else {
        /* positional: the types in the caller's array are ignored and set; an entry with a NULL
         * pValue gets its length, one with a buffer its value if the buffer is large enough */
        CK_ATTRIBUTE *dst = a->pValue;
        for (size_t i = 0; i < n; i++) {
            dst[i].type = e[i].type;
            CK_RV one = fill_element(&dst[i], &e[i], depth);
            if (one == CKR_DEVICE_ERROR || (rv == CKR_OK && one != CKR_OK))
                rv = one;
        }
        a->ulValueLen = needed;
    }
    free(e);
    return rv;
}

CK_RV hc_fill_attribute_array(CK_ATTRIBUTE *a, const unsigned char *enc, size_t len)
{
    return fill(a, enc, len, 0);
}
