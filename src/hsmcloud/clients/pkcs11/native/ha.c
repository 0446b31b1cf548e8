/* HA groups: members, virtual sessions and objects, choosing a member, failover and recovery.
 *
 * Locks: a virtual session's own lock (held for the whole of one PKCS#11 call on it, so its calls
 * are serialized), then its group's lock (members, object table, login state), never the other
 * way round; the registry's lock guards only the session table. No group or registry lock is held
 * during network I/O. */
#define _GNU_SOURCE
#include "ha.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "ha_internal.h"
#include "locks.h"
#include "log.h"
#include "transport.h"

/* ---- registry ---- */

static size_t sbucket(CK_SESSION_HANDLE h)
{
    return (size_t)(h % HA_SESSION_BUCKETS);
}

ha_registry *ha_registry_new(hc_state *st, const hc_config *cfg, hc_slot *slots, size_t nslots)
{
    ha_registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->st = st;
    r->lock = hc_mutex_new();
    snprintf(r->config_path, sizeof r->config_path, "%s", cfg->path);
    if (r->lock == NULL)
        goto fail;
    {
        /* the file as read now: later changes (hagroup recover, retry, interval) are noticed */
        struct stat sb;
        if (cfg->path[0] != '\0' && stat(cfg->path, &sb) == 0) {
            r->config_mtime = sb.st_mtim;
            r->config_size = sb.st_size;
        }
    }
    if (cfg->ngroups > 0) {
        r->groups = calloc(cfg->ngroups, sizeof *r->groups);
        if (r->groups == NULL)
            goto fail;
    }
    for (size_t i = 0; i < cfg->ngroups; i++) {
        const hc_hagroup_conf *gc = &cfg->groups[i];
        ha_group *g = calloc(1, sizeof *g);
        if (g == NULL)
            goto fail;
        r->groups[r->n++] = g;
        g->reg = r;
        g->lock = hc_mutex_new();
        if (g->lock == NULL)
            goto fail;
        snprintf(g->name, sizeof g->name, "%s", gc->name);
        g->retry_count = gc->retry_count;
        g->interval = gc->interval_seconds;
        g->recovery_request_seen = gc->recovery_request;
        g->next_vh = 1;
        for (size_t k = 0; k < gc->nmembers && gc->members[k] < nslots; k++) {
            ha_member *m = &g->m[g->n++];
            m->slot = &slots[gc->members[k]];
            m->server = m->slot->server;
            m->standby = gc->standby[k];
            m->alive = 1;
        }
        if (gc->serial != NULL)
            snprintf(g->serial, sizeof g->serial, "%s", gc->serial);
        else if (g->n > 0)
            snprintf(g->serial, sizeof g->serial, "1%s", g->m[0].slot->partition);
    }
    return r;
fail:
    ha_registry_free(r);
    return NULL;
}




static void session_free(ha_session *s)
{
    ha_op_clear(s);
    ha_find_clear(s);
    hc_mutex_free(s->lock);
    free(s);
}

void ha_registry_free(ha_registry *r)
{
    if (r == NULL)
        return;
    for (size_t b = 0; b < HA_SESSION_BUCKETS; b++) {
        ha_session *s = r->buckets[b], *next;
        for (; s != NULL; s = next) {
            next = s->next;
            session_free(s);
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        ha_group *g = r->groups[i];
        if (g == NULL)
            continue;
        for (size_t b = 0; b < HA_OBJECT_BUCKETS; b++) {
            ha_object *o = g->objs[b], *next;
            for (; o != NULL; o = next) {
                next = o->next;
                free(o);
            }
        }
        explicit_bzero(g->pin, sizeof g->pin);
        hc_mutex_free(g->lock);
        free(g);
    }
    free(r->groups);
    hc_mutex_free(r->lock);
    free(r);
}

size_t ha_group_count(const ha_registry *r)
{
    return r != NULL ? r->n : 0;
}

ha_group *ha_group_at(ha_registry *r, size_t index)
{
    return index < r->n ? r->groups[index] : NULL;
}

void ha_group_set_slot_id(ha_group *g, CK_SLOT_ID id)
{
    g->slot_id = id;
}

ha_session *ha_session_new(ha_group *g, CK_FLAGS flags)
{
    ha_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->lock = hc_mutex_new();
    if (s->lock == NULL) {
        free(s);
        return NULL;
    }
    s->g = g;
    s->flags = flags;
    s->op_member = -1;
    s->find_member = -1;
    return s;
}

void ha_session_register(ha_session *s)
{
    ha_registry *r = s->g->reg;
    s->handle = hc_handle_new(r->st);
    hc_lock(r->lock);
    s->next = r->buckets[sbucket(s->handle)];
    r->buckets[sbucket(s->handle)] = s;
    hc_unlock(r->lock);
}

void ha_session_discard(ha_session *s)
{
    session_free(s);
}

ha_session *ha_session_acquire(ha_registry *r, CK_SESSION_HANDLE h)
{
    ha_session *s;
    if (r == NULL || r->n == 0)
        return NULL;
    hc_lock(r->lock);
    for (s = r->buckets[sbucket(h)]; s != NULL; s = s->next)
        if (s->handle == h && !s->closed)
            break;
    if (s != NULL)
        s->refs++;
    hc_unlock(r->lock);
    if (s == NULL)
        return NULL;
    ha_maybe_recover(s->g);
    hc_lock(s->lock);
    return s;
}

void ha_session_release(ha_session *s)
{
    ha_registry *r = s->g->reg;
    int gone;
    hc_unlock(s->lock);
    hc_lock(r->lock);
    gone = --s->refs == 0 && s->closed;
    hc_unlock(r->lock);
    if (gone)
        session_free(s);
}

/* Takes the session out of the table; it is freed by its last release. */
void ha_session_unregister(ha_session *s)
{
    ha_registry *r = s->g->reg;
    hc_lock(r->lock);
    for (ha_session **pp = &r->buckets[sbucket(s->handle)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->closed = 1;
    hc_unlock(r->lock);
}

size_t ha_session_count(ha_group *g)
{
    ha_registry *r = g->reg;
    size_t n = 0;
    hc_lock(r->lock);
    for (size_t b = 0; b < HA_SESSION_BUCKETS; b++)
        for (ha_session *s = r->buckets[b]; s != NULL; s = s->next)
            if (s->g == g && !s->closed)
                n++;
    hc_unlock(r->lock);
    return n;
}

/* Every open virtual session of a group, held (release each). */
size_t ha_sessions_of(ha_group *g, ha_session ***out)
{
    ha_registry *r = g->reg;
    size_t n = 0, cap = 16;
    ha_session **list = malloc(cap * sizeof *list);
    *out = NULL;
    if (list == NULL)
        return 0;
    hc_lock(r->lock);
    for (size_t b = 0; b < HA_SESSION_BUCKETS; b++) {
        for (ha_session *s = r->buckets[b]; s != NULL; s = s->next) {
            if (s->g != g || s->closed)
                continue;
            if (n == cap) {
                ha_session **bigger = realloc(list, 2 * cap * sizeof *list);
                if (bigger == NULL)
                    continue;
                list = bigger;
                cap *= 2;
            }
            s->refs++;
            list[n++] = s;
        }
    }
    hc_unlock(r->lock);
    *out = list;
    return n;
}

/* ---- objects ---- */

static size_t obucket(CK_OBJECT_HANDLE vh)
{
    return (size_t)(vh % HA_OBJECT_BUCKETS);
}

static ha_object *obj_find_locked(ha_group *g, CK_OBJECT_HANDLE vh)
{
    for (ha_object *o = g->objs[obucket(vh)]; o != NULL; o = o->next)
        if (o->vh == vh)
            return o;
    return NULL;
}

CK_OBJECT_HANDLE ha_obj_add(ha_group *g, const CK_OBJECT_HANDLE *mh, int token, CK_SESSION_HANDLE owner)
{
    ha_object *o = calloc(1, sizeof *o);
    CK_OBJECT_HANDLE vh;
    if (o == NULL)
        return CK_INVALID_HANDLE;
    memcpy(o->mh, mh, sizeof o->mh);
    o->token = token;
    o->owner = token ? 0 : owner;
    hc_lock(g->lock);
    vh = o->vh = g->next_vh++;
    o->next = g->objs[obucket(vh)];
    g->objs[obucket(vh)] = o;
    g->nobjs++;
    hc_unlock(g->lock);
    return vh;
}

int ha_obj_exists(ha_group *g, CK_OBJECT_HANDLE vh)
{
    int found;
    hc_lock(g->lock);
    found = obj_find_locked(g, vh) != NULL;
    hc_unlock(g->lock);
    return found;
}

CK_OBJECT_HANDLE ha_obj_member_handle(ha_group *g, CK_OBJECT_HANDLE vh, size_t k)
{
    CK_OBJECT_HANDLE h = 0;
    hc_lock(g->lock);
    ha_object *o = obj_find_locked(g, vh);
    if (o != NULL)
        h = o->mh[k];
    hc_unlock(g->lock);
    return h;
}

void ha_obj_set_member_handle(ha_group *g, CK_OBJECT_HANDLE vh, size_t k, CK_OBJECT_HANDLE h)
{
    hc_lock(g->lock);
    ha_object *o = obj_find_locked(g, vh);
    if (o != NULL)
        o->mh[k] = h;
    hc_unlock(g->lock);
}

CK_OBJECT_HANDLE ha_obj_find_by_member(ha_group *g, size_t k, CK_OBJECT_HANDLE h)
{
    CK_OBJECT_HANDLE vh = 0;
    hc_lock(g->lock);
    for (size_t b = 0; b < HA_OBJECT_BUCKETS && vh == 0; b++)
        for (ha_object *o = g->objs[b]; o != NULL; o = o->next)
            if (o->mh[k] == h) {
                vh = o->vh;
                break;
            }
    hc_unlock(g->lock);
    return vh;
}

/* The virtual handle of member k's object h (a new entry the first time it is seen). */
CK_OBJECT_HANDLE ha_obj_from_member(ha_group *g, size_t k, CK_OBJECT_HANDLE h)
{
    CK_OBJECT_HANDLE mh[HC_HA_MAX_MEMBERS] = {0};
    hc_lock(g->lock);
    for (size_t b = 0; b < HA_OBJECT_BUCKETS; b++)
        for (ha_object *o = g->objs[b]; o != NULL; o = o->next)
            if (o->mh[k] == h) {
                CK_OBJECT_HANDLE vh = o->vh;
                hc_unlock(g->lock);
                return vh;
            }
    hc_unlock(g->lock);
    mh[k] = h;
    return ha_obj_add(g, mh, 1, 0);
}

void ha_obj_remove(ha_group *g, CK_OBJECT_HANDLE vh)
{
    hc_lock(g->lock);
    for (ha_object **pp = &g->objs[obucket(vh)]; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->vh == vh) {
            ha_object *o = *pp;
            *pp = o->next;
            g->nobjs--;
            free(o);
            break;
        }
    }
    hc_unlock(g->lock);
}

void ha_obj_reset_absent(ha_group *g, size_t k)
{
    hc_lock(g->lock);
    for (size_t b = 0; b < HA_OBJECT_BUCKETS; b++)
        for (ha_object *o = g->objs[b]; o != NULL; o = o->next)
            if (o->mh[k] == HA_ABSENT)
                o->mh[k] = 0;
    hc_unlock(g->lock);
}

void ha_obj_remove_owned(ha_group *g, CK_SESSION_HANDLE owner)
{
    hc_lock(g->lock);
    for (size_t b = 0; b < HA_OBJECT_BUCKETS; b++) {
        ha_object **pp = &g->objs[b];
        while (*pp != NULL) {
            ha_object *o = *pp;
            if (!o->token && o->owner == owner) {
                *pp = o->next;
                g->nobjs--;
                free(o);
            } else {
                pp = &o->next;
            }
        }
    }
    hc_unlock(g->lock);
}

/* Token objects without a handle on member k (created while it was down), and one member that
 * has each. Returns how many were stored (at most max). */
size_t ha_obj_missing_on(ha_group *g, size_t k, CK_OBJECT_HANDLE *vhs, size_t max)
{
    size_t n = 0;
    hc_lock(g->lock);
    for (size_t b = 0; b < HA_OBJECT_BUCKETS && n < max; b++)
        for (ha_object *o = g->objs[b]; o != NULL && n < max; o = o->next)
            if (o->token && (o->mh[k] == 0 || o->mh[k] == HA_ABSENT))
                vhs[n++] = o->vh;
    hc_unlock(g->lock);
    return n;
}

/* ---- members ---- */

void ha_member_down(ha_group *g, size_t k, const char *why)
{
    int was;
    time_t now = time(NULL);
    hc_lock(g->lock);
    was = g->m[k].alive;
    if (was) {
        g->m[k].alive = 0;
        g->m[k].down_since = now;
        g->m[k].last_attempt = now;
        g->m[k].attempts = 0;
        g->m[k].login_epoch = 0;
    }
    hc_unlock(g->lock);
    if (was)
        hc_log("HA group %s: member %s (server %s) dropped: %s", g->name, g->m[k].slot->partition,
               hc_server_name(g->m[k].server), why);
}

int ha_member_alive(ha_group *g, size_t k)
{
    int a;
    hc_lock(g->lock);
    a = g->m[k].alive;
    hc_unlock(g->lock);
    return a;
}

/* The member to use: alive, not in `tried`, active members before standby ones (standby only if
 * no active member is alive), not known to lack an object of `need` (a second pass takes those
 * too), fewest outstanding calls, ties in turn. -1: none. */
int ha_pick(ha_group *g, const CK_OBJECT_HANDLE *need, size_t nneed, unsigned long long tried)
{
    int best = -1;
    long best_load = 0;
    int any_active = 0;
    unsigned start;
    hc_lock(g->lock);
    start = g->rr++;
    for (size_t k = 0; k < g->n; k++)
        if (g->m[k].alive && !g->m[k].standby)
            any_active = 1;
    for (int pass = 0; pass < 2 && best < 0; pass++) {
        for (size_t i = 0; i < g->n; i++) {
            size_t k = (start + i) % g->n;
            ha_member *m = &g->m[k];
            int ok = 1;
            if (!m->alive || (tried & (1ull << k)) || (m->standby && any_active))
                continue;
            for (size_t j = 0; ok && j < nneed; j++) {
                ha_object *o = obj_find_locked(g, need[j]);
                if (o != NULL && o->mh[k] == HA_ABSENT && pass == 0)
                    ok = 0; /* first pass: not the members known to lack them */
            }
            if (!ok)
                continue;
            long load = __atomic_load_n(&m->outstanding, __ATOMIC_RELAXED);
            if (best < 0 || load < best_load) {
                best = (int)k;
                best_load = load;
            }
        }
    }
    hc_unlock(g->lock);
    return best;
}

/* ---- requests to members ---- */

void ha_req_init(ha_req *q, uint16_t opcode)
{
    memset(q, 0, sizeof *q);
    q->opcode = opcode;
    hc_buf_init(&q->body);
}

void ha_req_free(ha_req *q)
{
    hc_buf_free(&q->body);
}

/* An object handle of the virtual slot, translated for each member. */
void ha_req_handle(ha_req *q, CK_OBJECT_HANDLE vh)
{
    if (q->nh < HA_REQ_HANDLES) {
        q->hoff[q->nh] = q->body.len;
        q->hv[q->nh] = vh;
        q->nh++;
    } else {
        q->body.failed = 1;
    }
    hc_put_u64(&q->body, 0);
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * (7 - i)));
}

static CK_RV open_member_session(ha_group *g, size_t k, CK_FLAGS flags, CK_ULONG *remote, unsigned long *epoch)
{
    char serial[64];
    hc_buf req;
    hc_response resp;
    CK_RV rv = hc_slot_serial(g->reg->st, g->m[k].slot, serial, sizeof serial);
    if (rv != CKR_OK)
        return rv;
    hc_buf_init(&req);
    hc_put_u16(&req, OP_OPEN_SESSION);
    hc_put_string(&req, serial);
    hc_put_u64(&req, flags);
    rv = hc_call(g->m[k].server, &req, &resp, 0, 0, epoch);
    hc_buf_free(&req);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        *remote = (CK_ULONG)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
    }
    hc_response_free(&resp);
    return rv == CKR_SLOT_ID_INVALID ? CKR_TOKEN_NOT_PRESENT : rv;
}

/* Logs member k in (the group's login) over one of its sessions when it is not logged in in
 * this epoch of its connections, or always (`force`: a new session, since the appliance logs an
 * application out when its last session there closes). */
static CK_RV login_member(ha_group *g, size_t k, CK_ULONG remote, unsigned long epoch, int force)
{
    unsigned char pin[sizeof g->pin];
    CK_ULONG pin_len;
    CK_USER_TYPE user;
    hc_buf req;
    hc_response resp;
    CK_RV rv;

    hc_lock(g->lock);
    if (!g->logged_in || (!force && g->m[k].login_epoch == epoch)) {
        hc_unlock(g->lock);
        return CKR_OK;
    }
    memcpy(pin, g->pin, sizeof pin);
    pin_len = g->pin_len;
    user = g->user;
    hc_unlock(g->lock);
    hc_buf_init(&req);
    hc_put_u16(&req, OP_LOGIN);
    hc_put_u64(&req, remote);
    hc_put_u64(&req, user);
    hc_put_opt_bytes(&req, pin, pin_len);
    explicit_bzero(pin, sizeof pin);
    rv = hc_call(g->m[k].server, &req, &resp, 0, epoch, NULL);
    hc_buf_free(&req);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    hc_response_free(&resp);
    if (rv == CKR_USER_ALREADY_LOGGED_IN)
        rv = CKR_OK;
    if (rv == CKR_OK) {
        hc_lock(g->lock);
        g->m[k].login_epoch = epoch;
        hc_unlock(g->lock);
    }
    return rv;
}

/* Makes sure the virtual session has a live session on member k (and the group's login there). */
static CK_RV ensure_open(ha_session *s, size_t k)
{
    ha_group *g = s->g;
    CK_RV rv;
    int fresh = 0;
    if (s->epoch[k] != 0 && s->epoch[k] != hc_server_epoch(g->m[k].server))
        s->epoch[k] = 0; /* the appliance ended it with our last connection */
    if (s->epoch[k] == 0) {
        fresh = 1;
        CK_ULONG remote;
        unsigned long epoch = 0;
        rv = open_member_session(g, k, s->flags, &remote, &epoch);
        if (rv != CKR_OK)
            return rv;
        s->remote[k] = remote;
        s->epoch[k] = epoch;
    }
    rv = login_member(g, k, s->remote[k], s->epoch[k], fresh);
    if (rv == CKR_SESSION_HANDLE_INVALID)
        s->epoch[k] = 0;
    return rv;
}

/* Why a member is unusable, from a transport or appliance answer, or NULL (a normal answer). */
static const char *member_failure(CK_RV rv)
{
    switch (rv) {
    case CKR_DEVICE_ERROR:
        return "the appliance cannot be reached or the connection failed";
    case CKR_TOKEN_NOT_PRESENT:
        return "the appliance does not offer the partition to this client";
    case CKR_DEVICE_REMOVED:
        return "the partition is gone";
    default:
        return NULL;
    }
}

CK_RV ha_send(ha_session *s, size_t k, ha_req *q, hc_response *resp)
{
    ha_group *g = s->g;
    CK_RV rv = CKR_DEVICE_ERROR;
    memset(resp, 0, sizeof *resp);
    if (q->body.failed)
        return q->body.data == NULL ? CKR_HOST_MEMORY : CKR_DATA_LEN_RANGE;
    for (int attempt = 0; attempt < 2; attempt++) {
        hc_buf req;
        const char *why;
        rv = ensure_open(s, k);
        if ((why = member_failure(rv)) != NULL) {
            ha_member_down(g, k, why);
            return HA_MEMBER_FAILED;
        }
        if (rv == CKR_SESSION_HANDLE_INVALID)
            continue;
        if (rv != CKR_OK && rv != CKR_PIN_INCORRECT && rv != CKR_PIN_LOCKED && rv != CKR_PIN_EXPIRED &&
            rv != CKR_USER_PIN_NOT_INITIALIZED && rv != CKR_USER_NOT_LOGGED_IN)
            return rv; /* the member refuses to open a session (its answer, e.g. CKR_SESSION_COUNT) */
        if (rv != CKR_OK) {
            /* the member refuses our login (a different PIN, locked): it cannot serve the group */
            char text[96];
            snprintf(text, sizeof text, "logging in was refused (0x%lx)", (unsigned long)rv);
            ha_member_down(g, k, text);
            return HA_MEMBER_FAILED;
        }
        hc_buf_init(&req);
        hc_put_u16(&req, q->opcode);
        hc_put_u64(&req, s->remote[k]);
        size_t base = req.len;
        hc_put_bytes_raw(&req, q->body.data + HC_FRAME_HEADER, q->body.len - HC_FRAME_HEADER);
        for (size_t i = 0; i < q->nh && !req.failed; i++) {
            CK_OBJECT_HANDLE mh = ha_obj_member_handle(g, q->hv[i], k);
            if ((mh == 0 || mh == HA_ABSENT) && q->hv[i] != 0) {
                if (!ha_obj_exists(g, q->hv[i])) {
                    hc_buf_free(&req);
                    return CKR_OBJECT_HANDLE_INVALID;
                }
                mh = ha_resolve(s, q->hv[i], k);
                if (mh == 0) {
                    hc_buf_free(&req);
                    return HA_NO_HANDLE;
                }
            }
            put_be64(req.data + base + (q->hoff[i] - HC_FRAME_HEADER), mh);
        }
        __atomic_add_fetch(&g->m[k].outstanding, 1, __ATOMIC_RELAXED);
        rv = hc_call(g->m[k].server, &req, resp, 0, s->epoch[k], NULL);
        __atomic_sub_fetch(&g->m[k].outstanding, 1, __ATOMIC_RELAXED);
        hc_buf_free(&req);
        if (rv == CKR_SESSION_HANDLE_INVALID) { /* its connections were lost since it was opened */
            s->epoch[k] = 0;
            continue;
        }
        if (rv == CKR_DEVICE_ERROR) {
            ha_member_down(g, k, "a call failed on the connection");
            return HA_MEMBER_FAILED;
        }
        if (rv != CKR_OK)
            return rv;
        if ((resp->rv == CKR_SESSION_HANDLE_INVALID || resp->rv == CKR_SESSION_CLOSED) && attempt == 0) {
            hc_response_free(resp);
            s->epoch[k] = 0;
            continue;
        }
        return CKR_OK;
    }
    /* its sessions kept vanishing under us: the member cannot serve this session */
    ha_member_down(g, k, "its sessions were lost twice in a row");
    return HA_MEMBER_FAILED;
}

/* A call that any member may answer: balanced, failing over. On CKR_OK *member is the member
 * whose answer is in resp. */
CK_RV ha_send_any(ha_session *s, ha_req *q, const CK_OBJECT_HANDLE *need, size_t nneed, hc_response *resp,
                  int *member)
{
    unsigned long long tried = 0;
    for (;;) {
        int k = ha_pick(s->g, need, nneed, tried);
        if (k < 0)
            return CKR_DEVICE_ERROR;
        CK_RV rv = ha_send(s, (size_t)k, q, resp);
        if (rv == HA_MEMBER_FAILED || rv == HA_NO_HANDLE) {
            tried |= 1ull << k;
            continue;
        }
        *member = k;
        return rv;
    }
}

/* ---- identity of objects across members ---- */

/* Member k's handle for virtual object vh, found by its identity (class, key type, label, ID,
 * modulus or EC point) as read on a member that has it; 0 when it is not there (or ambiguous). */
CK_OBJECT_HANDLE ha_resolve(ha_session *s, CK_OBJECT_HANDLE vh, size_t k)
{
    ha_group *g = s->g;
    CK_OBJECT_CLASS cls;
    CK_KEY_TYPE kt;
    CK_BBOOL token;
    static unsigned char none;
    unsigned char *label = malloc(1024), *id = malloc(1024), *modulus = malloc(1024), *point = malloc(1024);
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &kt, sizeof kt},  {CKA_TOKEN, &token, sizeof token},
        {CKA_LABEL, label, 1024},          {CKA_ID, id, 1024},              {CKA_MODULUS, modulus, 1024},
        {CKA_EC_POINT, point, 1024},
    };
    const CK_ULONG nt = sizeof t / sizeof t[0];
    CK_OBJECT_HANDLE found = 0;
    int source = -1;

    if (label == NULL || id == NULL || modulus == NULL || point == NULL)
        goto out;
    hc_lock(g->lock);
    ha_object *o = obj_find_locked(g, vh);
    for (size_t j = 0; o != NULL && j < g->n && source < 0; j++)
        if (j != k && g->m[j].alive && o->mh[j] != 0 && o->mh[j] != HA_ABSENT)
            source = (int)j;
    CK_OBJECT_HANDLE sh = source >= 0 ? o->mh[source] : 0;
    hc_unlock(g->lock);
    if (source < 0)
        goto out;
    {
        ha_req q;
        hc_response resp;
        ha_req_init(&q, OP_GET_ATTRIBUTE_VALUE);
        hc_put_u64(&q.body, sh);
        hc_put_get_template(&q.body, t, nt);
        CK_RV rv = ha_send(s, (size_t)source, &q, &resp);
        ha_req_free(&q);
        if (rv != CKR_OK)
            goto out;
        rv = resp.rv;
        if (rv == CKR_OK || rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE)
            rv = hc_read_attribute_results(&resp.r, rv, t, nt);
        hc_response_free(&resp);
        if (t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION)
            goto out;
    }
    {
        CK_ATTRIBUTE want[8];
        CK_ULONG nw = 0;
        for (CK_ULONG i = 0; i < nt; i++)
            if (t[i].ulValueLen != CK_UNAVAILABLE_INFORMATION)
                want[nw++] = t[i];
        /* a session of its own on member k, so that the application's search there is untouched */
        CK_ULONG remote;
        unsigned long epoch = 0;
        CK_RV rv = ensure_open(s, k);
        if (rv != CKR_OK)
            goto out;
        rv = open_member_session(g, k, CKF_SERIAL_SESSION, &remote, &epoch);
        if (rv != CKR_OK)
            goto out;
        hc_buf req;
        hc_response resp;
        hc_buf_init(&req);
        hc_put_u16(&req, OP_FIND_OBJECTS_INIT);
        hc_put_u64(&req, remote);
        rv = hc_put_template(&req, want, nw);
        if (rv == CKR_OK)
            rv = hc_call(g->m[k].server, &req, &resp, 0, epoch, NULL);
        hc_buf_free(&req);
        if (rv == CKR_OK) {
            CK_RV arv = resp.rv;
            hc_response_free(&resp);
            if (arv == CKR_OK) {
                hc_buf_init(&req);
                hc_put_u16(&req, OP_FIND_OBJECTS);
                hc_put_u64(&req, remote);
                hc_put_u64(&req, 2);
                if (hc_call(g->m[k].server, &req, &resp, 0, epoch, NULL) == CKR_OK) {
                    if (resp.rv == CKR_OK) {
                        uint32_t n = hc_get_u32(&resp.r);
                        CK_OBJECT_HANDLE h = (CK_OBJECT_HANDLE)hc_get_u64(&resp.r);
                        if (!resp.r.failed && n == 1)
                            found = h;
                    }
                    hc_response_free(&resp);
                }
                hc_buf_free(&req);
            }
        }
        hc_buf_init(&req);
        hc_put_u16(&req, OP_CLOSE_SESSION);
        hc_put_u64(&req, remote);
        if (hc_call(g->m[k].server, &req, &resp, 0, epoch, NULL) == CKR_OK)
            hc_response_free(&resp);
        hc_buf_free(&req);
    }
    if (found != 0) {
        ha_obj_set_member_handle(g, vh, k, found);
        hc_log("HA group %s: an object found on member %s matched on member %s", g->name,
               g->m[source].slot->partition, g->m[k].slot->partition);
    } else if (source >= 0) {
        ha_obj_set_member_handle(g, vh, k, HA_ABSENT);
    }
out:
    (void)none;
    free(label);
    free(id);
    free(modulus);
    free(point);
    return found;
}

/* ---- recovery ---- */

/* Reads the group's recovery settings and manual recovery requests from the configuration file
 * when it changed (at most once a second). Returns 1 when `hagroup recover` asked for a recovery. */
static int check_config(ha_group *g)
{
    ha_registry *r = g->reg;
    struct stat sb;
    time_t now = time(NULL);
    int manual = 0;
    hc_config cfg;
    char error[512];

    hc_lock(r->lock);
    if (r->config_checked == now || r->config_path[0] == '\0') {
        hc_unlock(r->lock);
        return 0;
    }
    r->config_checked = now;
    hc_unlock(r->lock);
    if (stat(r->config_path, &sb) != 0)
        return 0;
    hc_lock(r->lock);
    int changed = sb.st_mtim.tv_sec != r->config_mtime.tv_sec || sb.st_mtim.tv_nsec != r->config_mtime.tv_nsec ||
                  sb.st_size != r->config_size;
    r->config_mtime = sb.st_mtim;
    r->config_size = sb.st_size;
    hc_unlock(r->lock);
    if (!changed)
        return 0;
    /* hc_config_load reads the same path the library started with (the environment's) */
    if (hc_config_load(&cfg, error, sizeof error) != HC_CONFIG_OK)
        return 0;
    for (size_t i = 0; i < cfg.ngroups; i++) {
        for (size_t j = 0; j < r->n; j++) {
            ha_group *x = r->groups[j];
            if (strcmp(cfg.groups[i].name, x->name) != 0)
                continue;
            hc_lock(x->lock);
            x->retry_count = cfg.groups[i].retry_count;
            x->interval = cfg.groups[i].interval_seconds;
            if (cfg.groups[i].recovery_request != x->recovery_request_seen) {
                x->recovery_request_seen = cfg.groups[i].recovery_request;
                x->manual_recovery = 1;
            }
            if (x == g && x->manual_recovery)
                manual = 1;
            hc_unlock(x->lock);
        }
    }
    hc_config_free(&cfg);
    return manual;
}

/* Brings member k back: reachable, logged in, and every object created while it was down
 * replicated to it. Returns CKR_OK when it is a member again. */
static CK_RV recover_member(ha_group *g, size_t k)
{
    ha_session *s = ha_session_new(g, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    ha_req q;
    hc_response resp;
    CK_RV rv;
    if (s == NULL)
        return CKR_HOST_MEMORY;
    /* a session there (and the group's login) */
    ha_req_init(&q, OP_GET_SESSION_INFO);
    rv = ha_send(s, k, &q, &resp);
    ha_req_free(&q);
    if (rv == CKR_OK) {
        rv = resp.rv;
        hc_response_free(&resp);
    } else if (rv == HA_MEMBER_FAILED) {
        rv = CKR_DEVICE_ERROR;
    }
    if (rv == CKR_OK)
        rv = ha_replicate_missing(s, k);
    ha_close_member_sessions(s);
    ha_session_discard(s);
    return rv;
}

void ha_maybe_recover(ha_group *g)
{
    time_t now;
    int manual = check_config(g);
    size_t todo[HC_HA_MAX_MEMBERS], n = 0;

    now = time(NULL);
    hc_lock(g->lock);
    if (g->recovering) {
        hc_unlock(g->lock);
        return;
    }
    manual = manual || g->manual_recovery;
    for (size_t k = 0; k < g->n; k++) {
        ha_member *m = &g->m[k];
        if (m->alive)
            continue;
        int automatic = g->retry_count != 0 && (g->retry_count < 0 || m->attempts < g->retry_count) &&
                        now - m->last_attempt >= g->interval;
        if (manual || automatic) {
            m->attempts++;
            m->last_attempt = now;
            todo[n++] = k;
        }
    }
    g->manual_recovery = 0;
    if (n > 0)
        g->recovering = 1;
    hc_unlock(g->lock);
    for (size_t i = 0; i < n; i++) {
        size_t k = todo[i];
        CK_RV rv = recover_member(g, k);
        if (rv == CKR_OK) {
            ha_obj_reset_absent(g, k);
            hc_lock(g->lock);
            g->m[k].alive = 1;
            g->m[k].attempts = 0;
            hc_unlock(g->lock);
            hc_log("HA group %s: member %s (server %s) recovered%s", g->name, g->m[k].slot->partition,
                   hc_server_name(g->m[k].server), manual ? " (hagroup recover)" : "");
        } else {
            hc_log("HA group %s: member %s (server %s) not recovered: 0x%lx (attempt %ld)", g->name,
                   g->m[k].slot->partition, hc_server_name(g->m[k].server), (unsigned long)rv, g->m[k].attempts);
        }
    }
    if (n > 0) {
        hc_lock(g->lock);
        g->recovering = 0;
        hc_unlock(g->lock);
    }
}
