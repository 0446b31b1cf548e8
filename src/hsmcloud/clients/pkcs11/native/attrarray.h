/* Attribute-array attributes (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE, CKA_DERIVE_TEMPLATE) read
 * back with C_GetAttributeValue: the appliance sends the nested template (docs/ntls-protocol.md),
 * and the library lays it out in the caller's CK_ATTRIBUTE array by PKCS#11's rules. */
#ifndef HSMCLOUD_ATTRARRAY_H
#define HSMCLOUD_ATTRARRAY_H

#include <stddef.h>

#include "pkcs11.h"

/* Whether `type` is an array of CK_ATTRIBUTE (CKA_ALLOWED_MECHANISMS, an array of mechanism
 * types, is not). */
int hc_is_attribute_array(CK_ATTRIBUTE_TYPE type);

/* Fills the caller's attribute `a` (its type an attribute array) from the nested template
 * encoding `enc` (`len` bytes; an empty value is an empty array):
 *  - a->pValue NULL: a->ulValueLen = count * sizeof(CK_ATTRIBUTE);
 *  - a->ulValueLen too small for count entries: CK_UNAVAILABLE_INFORMATION, CKR_BUFFER_TOO_SMALL;
 *  - otherwise, entry by entry in order, the entry's type is set (whatever it was) and an entry
 *    with pValue NULL gets the length of its value, one with a buffer large enough the value,
 *    one with a short buffer CK_UNAVAILABLE_INFORMATION and CKR_BUFFER_TOO_SMALL; an element that
 *    is itself an attribute array follows the same rules.
 * Returns CKR_OK, one of those codes, or CKR_DEVICE_ERROR for an encoding that does not decode. */
CK_RV hc_fill_attribute_array(CK_ATTRIBUTE *a, const unsigned char *enc, size_t len);

#endif
