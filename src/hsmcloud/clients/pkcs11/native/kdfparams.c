/* SP 800-108 parameters on the wire: the PRF, the data parameters in order (counter and DKM
 * length formats as fields, byte arrays as bytes), the feedback IV, and the templates of the
 * additional derived keys. */
#include "kdfparams.h"

static CK_RV put_format(hc_buf *b, const CK_PRF_DATA_PARAM *d)
{
    switch (d->type) {
    case CK_SP800_108_ITERATION_VARIABLE:
    case CK_SP800_108_OPTIONAL_COUNTER: {
        /* a counter format, or (feedback mode's iteration variable) nothing */
        if (d->pValue == NULL) {
            if (d->ulValueLen != 0)
                return CKR_MECHANISM_PARAM_INVALID;
            hc_put_u8(b, 0);
            return CKR_OK;
        }
        if (d->ulValueLen != sizeof(CK_SP800_108_COUNTER_FORMAT))
            return CKR_MECHANISM_PARAM_INVALID;
        const CK_SP800_108_COUNTER_FORMAT *f = d->pValue;
        hc_put_u8(b, 1);
        hc_put_u8(b, f->bLittleEndian != 0);
        hc_put_u64(b, f->ulWidthInBits);
        return CKR_OK;
    }
    case CK_SP800_108_DKM_LENGTH: {
        if (d->pValue == NULL || d->ulValueLen != sizeof(CK_SP800_108_DKM_LENGTH_FORMAT))
            return CKR_MECHANISM_PARAM_INVALID;
        const CK_SP800_108_DKM_LENGTH_FORMAT *f = d->pValue;
        hc_put_u64(b, f->dkmLengthMethod);
        hc_put_u8(b, f->bLittleEndian != 0);
        hc_put_u64(b, f->ulWidthInBits);
        return CKR_OK;
    }
    case CK_SP800_108_BYTE_ARRAY:
        if (d->pValue == NULL && d->ulValueLen != 0)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_bytes(b, d->pValue, d->pValue == NULL ? 0 : d->ulValueLen);
        return CKR_OK;
    default:
        return CKR_MECHANISM_PARAM_INVALID;
    }
}

static CK_RV put_data_params(hc_buf *b, const CK_PRF_DATA_PARAM *params, CK_ULONG n)
{
    if ((params == NULL && n > 0) || n > 4096)
        return CKR_MECHANISM_PARAM_INVALID;
    hc_put_u32(b, (uint32_t)n);
    for (CK_ULONG i = 0; i < n; i++) {
        hc_put_u64(b, params[i].type);
        CK_RV rv = put_format(b, &params[i]);
        if (rv != CKR_OK)
            return rv;
    }
    return CKR_OK;
}

static CK_RV put_additional_keys(hc_buf *b, const CK_DERIVED_KEY *keys, CK_ULONG n)
{
    if ((keys == NULL && n > 0) || n > 256)
        return CKR_MECHANISM_PARAM_INVALID;
    hc_put_u32(b, (uint32_t)n);
    for (CK_ULONG i = 0; i < n; i++) {
        if (keys[i].phKey == NULL || (keys[i].pTemplate == NULL && keys[i].ulAttributeCount > 0))
            return CKR_MECHANISM_PARAM_INVALID;
        CK_RV rv = hc_put_template(b, keys[i].pTemplate, keys[i].ulAttributeCount);
        if (rv != CKR_OK)
            return rv;
    }
    return CKR_OK;
}

CK_RV hc_put_sp800_108_params(hc_buf *b, const CK_MECHANISM *m)
{
    CK_RV rv;
    if (m->mechanism == CKM_SP800_108_COUNTER_KDF) {
        const CK_SP800_108_KDF_PARAMS *p = m->pParameter;
        if (m->ulParameterLen != sizeof *p)
            return CKR_MECHANISM_PARAM_INVALID;
        hc_put_u8(b, 2);
        hc_put_u64(b, p->prfType);
        rv = put_data_params(b, p->pDataParams, p->ulNumberOfDataParams);
        if (rv == CKR_OK)
            rv = put_additional_keys(b, p->pAdditionalDerivedKeys, p->ulAdditionalDerivedKeys);
        return rv;
    }
    const CK_SP800_108_FEEDBACK_KDF_PARAMS *p = m->pParameter;
    if (m->ulParameterLen != sizeof *p || (p->pIV == NULL && p->ulIVLen != 0))
        return CKR_MECHANISM_PARAM_INVALID;
    hc_put_u8(b, 2);
    hc_put_u64(b, p->prfType);
    rv = put_data_params(b, p->pDataParams, p->ulNumberOfDataParams);
    if (rv == CKR_OK) {
        hc_put_bytes(b, p->pIV, p->pIV == NULL ? 0 : p->ulIVLen);
        rv = put_additional_keys(b, p->pAdditionalDerivedKeys, p->ulAdditionalDerivedKeys);
    }
    return rv;
}

CK_ULONG hc_sp800_108_additional_keys(const CK_MECHANISM *m, CK_DERIVED_KEY **keys)
{
    *keys = NULL;
    if (m == NULL || m->pParameter == NULL)
        return 0;
    if (m->mechanism == CKM_SP800_108_COUNTER_KDF && m->ulParameterLen == sizeof(CK_SP800_108_KDF_PARAMS)) {
        const CK_SP800_108_KDF_PARAMS *p = m->pParameter;
        *keys = p->pAdditionalDerivedKeys;
        return p->pAdditionalDerivedKeys != NULL ? p->ulAdditionalDerivedKeys : 0;
    }
    if (m->mechanism == CKM_SP800_108_FEEDBACK_KDF &&
        m->ulParameterLen == sizeof(CK_SP800_108_FEEDBACK_KDF_PARAMS)) {
        const CK_SP800_108_FEEDBACK_KDF_PARAMS *p = m->pParameter;
        *keys = p->pAdditionalDerivedKeys;
        return p->pAdditionalDerivedKeys != NULL ? p->ulAdditionalDerivedKeys : 0;
    }
    return 0;
}

CK_RV hc_read_additional_keys(hc_reader *r, CK_DERIVED_KEY *keys, CK_ULONG n)
{
    uint32_t got = hc_get_u32(r);
    if (r->failed || got != n)
        return CKR_DEVICE_ERROR;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_OBJECT_HANDLE h = (CK_OBJECT_HANDLE)hc_get_u64(r);
        if (r->failed)
            return CKR_DEVICE_ERROR;
        *keys[i].phKey = h;
    }
    return CKR_OK;
}
