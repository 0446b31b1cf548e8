/* SP 800-108 key derivation parameters (CKM_SP800_108_COUNTER_KDF, CKM_SP800_108_FEEDBACK_KDF):
 * their NTLS encoding (docs/ntls-protocol.md) and the additional keys they derive. */
#ifndef HSMCLOUD_KDFPARAMS_H
#define HSMCLOUD_KDFPARAMS_H

#include "pkcs11.h"
#include "wire.h"

/* The structured parameter (kind 2) of an SP 800-108 mechanism. CKR_MECHANISM_PARAM_INVALID for
 * a structure of the wrong size, an unknown data parameter type or a data parameter of the wrong
 * size; a template error of an additional key as hc_put_template reports it. */
CK_RV hc_put_sp800_108_params(hc_buf *b, const CK_MECHANISM *m);

/* How many additional keys the mechanism derives besides the primary one (0 for any mechanism
 * but SP 800-108's, and for a parameter that does not decode), and where they are. */
CK_ULONG hc_sp800_108_additional_keys(const CK_MECHANISM *m, CK_DERIVED_KEY **keys);

/* DERIVE_KEYS' answer after the primary handle: `u32 n`, n handles, stored in each key's phKey. */
CK_RV hc_read_additional_keys(hc_reader *r, CK_DERIVED_KEY *keys, CK_ULONG n);

#endif
