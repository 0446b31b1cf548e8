/* HA groups: virtual slots over member partitions on several appliances ([hagroup NAME] in the
 * client configuration), as the Luna client library does them. Member partitions do not know
 * they are grouped: the library opens a session on every member for each virtual session, logs
 * in on every member, sends key-management calls to every member, balances single-part and
 * multi-part crypto over the members (a multi-part operation stays on its member), drops a
 * member that fails mid-call and retries the call on another one, and brings failed members back
 * (auto-recovery with retry_count/interval_seconds, or `hagroup recover`). */
#ifndef HSMCLOUD_HA_H
#define HSMCLOUD_HA_H

#include <stddef.h>

#include "config.h"
#include "pkcs11.h"
#include "state.h"
#include "wire.h"

typedef struct ha_registry ha_registry;
typedef struct ha_group ha_group;
typedef struct ha_session ha_session;

/* The groups of a configuration over the state's physical slots; NULL only without memory. */
ha_registry *ha_registry_new(hc_state *st, const hc_config *cfg, hc_slot *slots, size_t nslots);
/* Frees everything (no network: the state sends FINALIZE to each appliance). */
void ha_registry_free(ha_registry *r);
size_t ha_group_count(const ha_registry *r);
ha_group *ha_group_at(ha_registry *r, size_t index);
/* The group's virtual slot ID, as applications see it. */
void ha_group_set_slot_id(ha_group *g, CK_SLOT_ID id);

/* Session handles issued for virtual sessions. NULL: not a virtual session. A non-NULL result
 * is held (its calls are serialized) until ha_session_release. Auto-recovery is attempted here. */
ha_session *ha_session_acquire(ha_registry *r, CK_SESSION_HANDLE h);
void ha_session_release(ha_session *s);

/* ---- the PKCS#11 calls on a virtual slot ---- */
CK_RV ha_slot_present(ha_group *g);
CK_RV ha_get_slot_info(ha_group *g, CK_SLOT_INFO_PTR info);
CK_RV ha_get_token_info(ha_group *g, CK_TOKEN_INFO_PTR info);
CK_RV ha_get_mechanism_list(ha_group *g, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count);
CK_RV ha_get_mechanism_info(ha_group *g, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info);
CK_RV ha_open_session(ha_group *g, CK_FLAGS flags, CK_SESSION_HANDLE *handle);
CK_RV ha_close_all_sessions(ha_group *g);

CK_RV ha_close_session(ha_session *s);
CK_RV ha_get_session_info(ha_session *s, CK_SESSION_INFO_PTR info);
CK_RV ha_login(ha_session *s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len);
CK_RV ha_logout(ha_session *s);
CK_RV ha_init_pin(ha_session *s, CK_UTF8CHAR_PTR pin, CK_ULONG len);
CK_RV ha_set_pin(ha_session *s, CK_UTF8CHAR_PTR old_pin, CK_ULONG old_len, CK_UTF8CHAR_PTR new_pin, CK_ULONG new_len);

CK_RV ha_create_object(ha_session *s, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out);
CK_RV ha_copy_object(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out);
CK_RV ha_destroy_object(ha_session *s, CK_OBJECT_HANDLE h);
CK_RV ha_get_object_size(ha_session *s, CK_OBJECT_HANDLE h, CK_ULONG_PTR size);
CK_RV ha_get_attribute_value(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n);
CK_RV ha_set_attribute_value(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n);
CK_RV ha_find_objects_init(ha_session *s, CK_ATTRIBUTE_PTR t, CK_ULONG n);
CK_RV ha_find_objects(ha_session *s, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR count);
CK_RV ha_find_objects_final(ha_session *s);

/* XxxInit (mechanism NULL: cancel), then the calls of the operation. */
CK_RV ha_op_init(ha_session *s, uint16_t opcode, CK_MECHANISM_PTR m, int with_key, CK_OBJECT_HANDLE key);
enum ha_op_kind { HA_SINGLE, HA_UPDATE, HA_FINAL };
/* data2 (for C_Verify's signature) may be given with has_data2. out_len NULL: no output. */
CK_RV ha_op_call(ha_session *s, uint16_t opcode, enum ha_op_kind kind, int has_data, const CK_BYTE *data,
                 CK_ULONG data_len, int has_data2, const CK_BYTE *data2, CK_ULONG data2_len, CK_BYTE_PTR out,
                 CK_ULONG_PTR out_len);
CK_RV ha_digest_key(ha_session *s, CK_OBJECT_HANDLE key);

CK_RV ha_generate_key(ha_session *s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out);
CK_RV ha_generate_key_pair(ha_session *s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub, CK_ULONG npub,
                           CK_ATTRIBUTE_PTR priv, CK_ULONG npriv, CK_OBJECT_HANDLE_PTR hpub,
                           CK_OBJECT_HANDLE_PTR hpriv);
CK_RV ha_wrap_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wrapping, CK_OBJECT_HANDLE key,
                  CK_BYTE_PTR out, CK_ULONG_PTR out_len);
CK_RV ha_unwrap_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE unwrapping, CK_BYTE_PTR wrapped,
                    CK_ULONG wrapped_len, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out);
CK_RV ha_derive_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                    CK_OBJECT_HANDLE_PTR out);
CK_RV ha_seed_random(ha_session *s, CK_BYTE_PTR seed, CK_ULONG len);
CK_RV ha_generate_random(ha_session *s, CK_BYTE_PTR out, CK_ULONG len);

#endif
