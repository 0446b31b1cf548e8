/* The library's state between C_Initialize and C_Finalize: slots from the configuration, the
 * appliances' connection pools and the table of open sessions; and its lifecycle (initialize,
 * finalize, fork). */
#ifndef HSMCLOUD_STATE_H
#define HSMCLOUD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "pkcs11.h"
#include "transport.h"

typedef struct hc_state hc_state;

typedef struct hc_slot {
    hc_server *server;
    char *partition; /* as configured: serial number or name */
    char serial[64]; /* the partition's serial once LIST_PARTITIONS found it ("" before) */
} hc_slot;

/* What a session handle stands for, copied out of the table (never a pointer into it). */
typedef struct hc_sessref {
    CK_SESSION_HANDLE handle;
    CK_SLOT_ID slot;
    hc_server *server;
    CK_ULONG remote;
    unsigned long epoch;
} hc_sessref;

/* ---- lifecycle ---- */
CK_RV hc_initialize(CK_VOID_PTR args);
CK_RV hc_finalize(CK_VOID_PTR reserved);
/* Every entry point that needs C_Initialize brackets its work with these: CKR_OK and the state,
 * or CKR_CRYPTOKI_NOT_INITIALIZED (also in a forked child that has not initialized again). */
CK_RV hc_enter(hc_state **st);
void hc_leave(void);

/* ---- slots ----
 * Slot IDs: the physical slots ([slot] sections) 0..n-1, then one virtual slot per HA group;
 * with ha_only, only the HA groups' virtual slots, from 0. */
size_t hc_slot_count(hc_state *st); /* physical slots */
int hc_ha_only(hc_state *st);
struct ha_registry *hc_state_ha(hc_state *st);
/* The HA group whose virtual slot `id` is, or NULL. */
struct ha_group *hc_slot_group(hc_state *st, CK_SLOT_ID id);
/* A new session handle (physical and virtual sessions share one numbering). */
CK_SESSION_HANDLE hc_handle_new(hc_state *st);
/* CKR_SLOT_ID_INVALID for an ID the configuration does not have. */
CK_RV hc_slot_get(hc_state *st, CK_SLOT_ID id, hc_slot **slot);
/* The partition serial a slot addresses, found with LIST_PARTITIONS the first time: CKR_OK,
 * CKR_TOKEN_NOT_PRESENT (the appliance does not offer it to this client) or CKR_DEVICE_ERROR. */
CK_RV hc_slot_serial(hc_state *st, hc_slot *slot, char *serial, size_t len);
/* Which slots have a token now: the appliance answers and offers the partition. present[i] for
 * every slot; one LIST_PARTITIONS per appliance. */
void hc_slots_present(hc_state *st, int *present);

/* ---- sessions ---- */
CK_RV hc_session_add(hc_state *st, CK_SLOT_ID slot, CK_ULONG remote, unsigned long epoch,
                     CK_SESSION_HANDLE *handle);
/* CKR_SESSION_HANDLE_INVALID for an unknown handle or one whose appliance connections were all
 * lost since it was opened (it is then removed). */
CK_RV hc_session_find(hc_state *st, CK_SESSION_HANDLE handle, hc_sessref *ref);
void hc_session_remove(hc_state *st, CK_SESSION_HANDLE handle);
void hc_sessions_remove_slot(hc_state *st, CK_SLOT_ID slot);
/* How many open sessions (for tests and the log). */
size_t hc_session_count(hc_state *st);

#endif
