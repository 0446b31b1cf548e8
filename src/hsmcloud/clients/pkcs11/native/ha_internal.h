/* The HA module's own structures, shared by ha.c (groups, members, failover, recovery), ha_api.c
 * (the PKCS#11 calls on a virtual slot) and ha_replicate.c (replicating objects to a member). */
#ifndef HSMCLOUD_HA_INTERNAL_H
#define HSMCLOUD_HA_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "ha.h"
#include "locks.h"
#include "transport.h"
#include "wire.h"

#define HA_SESSION_BUCKETS 256
#define HA_OBJECT_BUCKETS 1024
#define HA_REQ_HANDLES 4
/* The most data of a multi-part operation kept to replay it on another member. */
#define HA_REPLAY_MAX (1u << 20)
/* Private results, never returned to the application. */
#define HA_MEMBER_FAILED 0xC0DE0001UL /* the member was dropped: try another */
#define HA_NO_HANDLE 0xC0DE0002UL     /* the member lacks an object the call needs */
/* A member handle meaning "looked for there, not found" (0: not known yet). */
#define HA_ABSENT (~(CK_OBJECT_HANDLE)0)

typedef struct ha_member {
    hc_slot *slot;
    hc_server *server;
    int standby;
    int alive;
    long outstanding; /* atomic: calls in flight (least-outstanding balancing) */
    time_t down_since, last_attempt;
    long attempts;
    unsigned long login_epoch; /* connection epoch in which the group's login was done (0: none) */
} ha_member;

typedef struct ha_object {
    CK_OBJECT_HANDLE vh;                   /* the virtual slot's handle */
    CK_OBJECT_HANDLE mh[HC_HA_MAX_MEMBERS]; /* each member's (0: not known there) */
    int token;
    CK_SESSION_HANDLE owner; /* a session object's virtual session */
    struct ha_object *next;
} ha_object;

struct ha_group {
    ha_registry *reg;
    CK_SLOT_ID slot_id;
    char name[65];
    char serial[64];
    ha_member m[HC_HA_MAX_MEMBERS];
    size_t n;
    long retry_count, interval, recovery_request_seen;
    int manual_recovery, recovering;
    hc_mutex *lock;
    int logged_in;
    CK_USER_TYPE user;
    unsigned char pin[256];
    CK_ULONG pin_len;
    ha_object *objs[HA_OBJECT_BUCKETS];
    CK_OBJECT_HANDLE next_vh;
    size_t nobjs;
    unsigned rr;
};

struct ha_registry {
    hc_state *st;
    ha_group **groups;
    size_t n;
    hc_mutex *lock;
    ha_session *buckets[HA_SESSION_BUCKETS];
    char config_path[4096];
    time_t config_checked;
    struct timespec config_mtime;
    off_t config_size;
};

typedef struct ha_part {
    uint16_t opcode;
    unsigned char *body; /* the request after the session handle */
    size_t len;
    CK_ULONG outcap; /* output capacity to offer on replay (0: no output) */
    struct ha_part *next;
} ha_part;

struct ha_session {
    CK_SESSION_HANDLE handle;
    ha_group *g;
    CK_FLAGS flags;
    CK_ULONG remote[HC_HA_MAX_MEMBERS];
    unsigned long epoch[HC_HA_MAX_MEMBERS]; /* 0: no session on that member */
    hc_mutex *lock;
    int refs, closed;
    struct ha_session *next;
    /* the active cryptographic operation, pinned to one member */
    int op_member;
    uint16_t op_init;
    unsigned char *op_mech;
    size_t op_mech_len;
    int op_with_key;
    CK_OBJECT_HANDLE op_key;
    ha_part *parts, *parts_tail;
    size_t parts_bytes;
    int parts_overflow;
    /* the active search, pinned to one member */
    int find_member;
    unsigned char *find_tmpl;
    size_t find_tmpl_len;
    CK_OBJECT_HANDLE *found;
    size_t nfound, capfound;
};

/* A request to members: opcode, then the member's session handle, then `body`, in which the
 * object handles recorded with ha_req_handle are translated for each member. */
typedef struct ha_req {
    uint16_t opcode;
    hc_buf body;
    size_t hoff[HA_REQ_HANDLES];
    CK_OBJECT_HANDLE hv[HA_REQ_HANDLES];
    size_t nh;
} ha_req;

void ha_req_init(ha_req *q, uint16_t opcode);
void ha_req_free(ha_req *q);
void ha_req_handle(ha_req *q, CK_OBJECT_HANDLE vh);

ha_session *ha_session_new(ha_group *g, CK_FLAGS flags);
void ha_session_register(ha_session *s);
void ha_session_unregister(ha_session *s);
void ha_session_discard(ha_session *s);
size_t ha_sessions_of(ha_group *g, ha_session ***out);
size_t ha_session_count(ha_group *g);

CK_OBJECT_HANDLE ha_obj_add(ha_group *g, const CK_OBJECT_HANDLE *mh, int token, CK_SESSION_HANDLE owner);
int ha_obj_exists(ha_group *g, CK_OBJECT_HANDLE vh);
CK_OBJECT_HANDLE ha_obj_member_handle(ha_group *g, CK_OBJECT_HANDLE vh, size_t k);
void ha_obj_set_member_handle(ha_group *g, CK_OBJECT_HANDLE vh, size_t k, CK_OBJECT_HANDLE h);
CK_OBJECT_HANDLE ha_obj_from_member(ha_group *g, size_t k, CK_OBJECT_HANDLE h);
/* The virtual handle whose member-k handle is h, or 0. */
CK_OBJECT_HANDLE ha_obj_find_by_member(ha_group *g, size_t k, CK_OBJECT_HANDLE h);
void ha_obj_remove(ha_group *g, CK_OBJECT_HANDLE vh);
/* Forgets every "not found on member k" (it returned: it may have them now). */
void ha_obj_reset_absent(ha_group *g, size_t k);
void ha_obj_remove_owned(ha_group *g, CK_SESSION_HANDLE owner);
size_t ha_obj_missing_on(ha_group *g, size_t k, CK_OBJECT_HANDLE *vhs, size_t max);

void ha_member_down(ha_group *g, size_t k, const char *why);
int ha_member_alive(ha_group *g, size_t k);
int ha_pick(ha_group *g, const CK_OBJECT_HANDLE *need, size_t nneed, unsigned long long tried);
/* One request to member k on the virtual session: CKR_OK with resp (the appliance's rv in
 * resp->rv), HA_MEMBER_FAILED (dropped), HA_NO_HANDLE, or a local error. */
CK_RV ha_send(ha_session *s, size_t k, ha_req *q, hc_response *resp);
CK_RV ha_send_any(ha_session *s, ha_req *q, const CK_OBJECT_HANDLE *need, size_t nneed, hc_response *resp,
                  int *member);
CK_OBJECT_HANDLE ha_resolve(ha_session *s, CK_OBJECT_HANDLE vh, size_t k);
void ha_maybe_recover(ha_group *g);
/* Closes the virtual session's sessions on its members (best effort). */
void ha_close_member_sessions(ha_session *s);

/* End the session's active operation / search (local state only). */
void ha_op_clear(ha_session *s);
void ha_find_clear(ha_session *s);

/* Replicates to member k every token object it lacks (ha_replicate.c). */
CK_RV ha_replicate_missing(ha_session *s, size_t k);
/* Replicates object vh (just generated on member `from`) to member `to`. */
CK_RV ha_replicate_object(ha_session *s, CK_OBJECT_HANDLE vh, size_t from, size_t to);

#endif
