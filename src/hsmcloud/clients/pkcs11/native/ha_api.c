/* The PKCS#11 calls on an HA virtual slot: which member answers what.
 *
 *  - slot, token and mechanism information, session information, reading attributes, searches,
 *    wrapping, random numbers: one member (balanced), another one if it fails;
 *  - login, logout, PIN changes, creating, copying, destroying objects, setting attributes,
 *    unwrapping and deriving keys: every member (the replication of the real device);
 *  - generating keys: one member, then the new key is cloned to the others;
 *  - cryptographic operations: the member with the fewest outstanding calls at XxxInit; the
 *    operation stays there; if the member fails, the operation is started again on another member
 *    and the parts already sent are replayed there (up to HA_REPLAY_MAX bytes). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha_internal.h"
#include "log.h"

static void pad(CK_UTF8CHAR *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    memset(dst, ' ', n);
    memcpy(dst, src, len < n ? len : n);
}

/* ---- slot calls ---- */

static CK_RV slot_call(ha_group *g, uint16_t opcode, const CK_MECHANISM_TYPE *mech, hc_response *resp)
{
    unsigned long long tried = 0;
    ha_maybe_recover(g);
    for (;;) {
        char serial[64];
        hc_buf req;
        int k = ha_pick(g, NULL, 0, tried);
        CK_RV rv;
        if (k < 0)
            return CKR_DEVICE_ERROR;
        tried |= 1ull << k;
        rv = hc_slot_serial(g->reg->st, g->m[k].slot, serial, sizeof serial);
        if (rv != CKR_OK) {
            ha_member_down(g, (size_t)k, rv == CKR_DEVICE_ERROR ? "the appliance cannot be reached"
                                                                : "the appliance does not offer the partition");
            continue;
        }
        hc_buf_init(&req);
        hc_put_u16(&req, opcode);
        hc_put_string(&req, serial);
        if (mech != NULL)
            hc_put_u64(&req, *mech);
        rv = hc_call(g->m[k].server, &req, resp, HC_CALL_IDEMPOTENT, 0, NULL);
        hc_buf_free(&req);
        if (rv == CKR_DEVICE_ERROR) {
            ha_member_down(g, (size_t)k, "a call failed on the connection");
            continue;
        }
        if (rv != CKR_OK)
            return rv;
        if (resp->rv == CKR_SLOT_ID_INVALID) {
            hc_response_free(resp);
            ha_member_down(g, (size_t)k, "the appliance does not offer the partition");
            continue;
        }
        return CKR_OK;
    }
}

CK_RV ha_slot_present(ha_group *g)
{
    hc_response resp;
    CK_RV rv = slot_call(g, OP_GET_SLOT_INFO, NULL, &resp);
    if (rv == CKR_OK)
        hc_response_free(&resp);
    return rv;
}

CK_RV ha_get_slot_info(ha_group *g, CK_SLOT_INFO_PTR info)
{
    hc_response resp;
    char description[256], manufacturer[256];
    CK_RV rv = slot_call(g, OP_GET_SLOT_INFO, NULL, &resp);
    memset(info, 0, sizeof *info);
    snprintf(description, sizeof description, "HA Virtual Card Slot %s", g->name);
    pad(info->slotDescription, sizeof info->slotDescription, description);
    pad(info->manufacturerID, sizeof info->manufacturerID, "hsmcloud");
    info->flags = CKF_REMOVABLE_DEVICE;
    if (rv == CKR_OK) {
        hc_reader *r = &resp.r;
        if (resp.rv == CKR_OK) {
            hc_get_string(r, description, sizeof description);
            hc_get_string(r, manufacturer, sizeof manufacturer);
            CK_FLAGS flags = (CK_FLAGS)hc_get_u64(r);
            info->hardwareVersion.major = hc_get_u8(r);
            info->hardwareVersion.minor = hc_get_u8(r);
            info->firmwareVersion.major = hc_get_u8(r);
            info->firmwareVersion.minor = hc_get_u8(r);
            if (!r->failed) {
                pad(info->manufacturerID, sizeof info->manufacturerID, manufacturer);
                info->flags = (flags & CKF_TOKEN_PRESENT) | CKF_REMOVABLE_DEVICE;
            }
        }
        hc_response_free(&resp);
    }
    return CKR_OK;
}

CK_RV ha_get_token_info(ha_group *g, CK_TOKEN_INFO_PTR pInfo)
{
    hc_response resp;
    CK_RV rv = slot_call(g, OP_GET_TOKEN_INFO, NULL, &resp);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        CK_TOKEN_INFO info;
        hc_reader *r = &resp.r;
        hc_get_token_info(r, &info);
        if (r->failed) {
            rv = CKR_DEVICE_ERROR;
        } else {
            /* the virtual slot's token is the group: its label and serial number */
            pad(info.label, sizeof info.label, g->name);
            pad(info.serialNumber, sizeof info.serialNumber, g->serial);
            *pInfo = info;
        }
    }
    hc_response_free(&resp);
    return rv;
}

CK_RV ha_get_mechanism_list(ha_group *g, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
    hc_response resp;
    CK_RV rv = slot_call(g, OP_GET_MECHANISM_LIST, NULL, &resp);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        uint32_t n = hc_get_u32(&resp.r);
        if (resp.r.failed || (size_t)n * 8 > resp.r.left) {
            rv = CKR_DEVICE_ERROR;
        } else if (list == NULL) {
            *count = n;
        } else if (*count < n) {
            *count = n;
            rv = CKR_BUFFER_TOO_SMALL;
        } else {
            for (uint32_t i = 0; i < n; i++)
                list[i] = (CK_MECHANISM_TYPE)hc_get_u64(&resp.r);
            *count = n;
        }
    }
    hc_response_free(&resp);
    return rv;
}

CK_RV ha_get_mechanism_info(ha_group *g, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo)
{
    hc_response resp;
    CK_RV rv = slot_call(g, OP_GET_MECHANISM_INFO, &type, &resp);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        CK_MECHANISM_INFO info;
        info.ulMinKeySize = (CK_ULONG)hc_get_u64(&resp.r);
        info.ulMaxKeySize = (CK_ULONG)hc_get_u64(&resp.r);
        info.flags = (CK_FLAGS)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pInfo = info;
    }
    hc_response_free(&resp);
    return rv;
}

/* ---- sessions ---- */

CK_RV ha_open_session(ha_group *g, CK_FLAGS flags, CK_SESSION_HANDLE *handle)
{
    ha_session *s;
    CK_RV last = CKR_DEVICE_ERROR;
    size_t opened = 0;
    ha_maybe_recover(g);
    s = ha_session_new(g, flags);
    if (s == NULL)
        return CKR_HOST_MEMORY;
    for (size_t k = 0; k < g->n; k++) {
        ha_req q;
        hc_response resp;
        if (!ha_member_alive(g, k))
            continue;
        /* a call that opens the member's session and does nothing else */
        ha_req_init(&q, OP_GET_SESSION_INFO);
        CK_RV rv = ha_send(s, k, &q, &resp);
        ha_req_free(&q);
        if (rv == CKR_OK) {
            if (resp.rv == CKR_OK)
                opened++;
            else
                last = resp.rv;
            hc_response_free(&resp);
        } else if (rv != HA_MEMBER_FAILED) {
            last = rv;
        }
    }
    if (opened == 0) {
        ha_close_member_sessions(s);
        ha_session_discard(s);
        /* the members' own answer when they all refused (e.g. CKR_SESSION_READ_WRITE_SO_EXISTS) */
        return last == CKR_TOKEN_NOT_PRESENT ? CKR_DEVICE_ERROR : last;
    }
    ha_session_register(s);
    *handle = s->handle;
    return CKR_OK;
}

void ha_close_member_sessions(ha_session *s)
{
    ha_group *g = s->g;
    for (size_t k = 0; k < g->n; k++) {
        hc_buf req;
        hc_response resp;
        if (s->epoch[k] == 0)
            continue;
        if (ha_member_alive(g, k)) {
            hc_buf_init(&req);
            hc_put_u16(&req, OP_CLOSE_SESSION);
            hc_put_u64(&req, s->remote[k]);
            if (hc_call(g->m[k].server, &req, &resp, 0, s->epoch[k], NULL) == CKR_OK)
                hc_response_free(&resp);
            hc_buf_free(&req);
        }
        s->epoch[k] = 0;
    }
}

static void forget_login(ha_group *g)
{
    hc_lock(g->lock);
    g->logged_in = 0;
    explicit_bzero(g->pin, sizeof g->pin);
    g->pin_len = 0;
    for (size_t k = 0; k < g->n; k++)
        g->m[k].login_epoch = 0;
    hc_unlock(g->lock);
}

CK_RV ha_close_session(ha_session *s)
{
    ha_close_member_sessions(s);
    ha_obj_remove_owned(s->g, s->handle);
    ha_session_unregister(s);
    /* closing the last session logs the application out (PKCS#11; the members do the same) */
    if (ha_session_count(s->g) == 0)
        forget_login(s->g);
    return CKR_OK;
}

CK_RV ha_close_all_sessions(ha_group *g)
{
    ha_session **list;
    size_t n = ha_sessions_of(g, &list);
    for (size_t i = 0; i < n; i++) {
        hc_lock(list[i]->lock);
        if (!list[i]->closed)
            ha_close_session(list[i]);
        ha_session_release(list[i]); /* unlocks */
    }
    free(list);
    return CKR_OK;
}

CK_RV ha_get_session_info(ha_session *s, CK_SESSION_INFO_PTR pInfo)
{
    ha_req q;
    hc_response resp;
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_GET_SESSION_INFO);
    rv = ha_send_any(s, &q, NULL, 0, &resp, &k);
    ha_req_free(&q);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        CK_SESSION_INFO info;
        info.slotID = s->g->slot_id;
        info.state = (CK_STATE)hc_get_u64(&resp.r);
        info.flags = (CK_FLAGS)hc_get_u64(&resp.r);
        info.ulDeviceError = (CK_ULONG)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pInfo = info;
    }
    hc_response_free(&resp);
    return rv;
}

/* ---- every member ---- */

/* Sends q to every alive member; the first member that answers decides (its rv is the result,
 * and when it refuses, the others are not asked). `handles` receives, per member, the `nout`
 * object handles of a successful answer (0 where a member did not answer or refused). */
static CK_RV all_members(ha_session *s, ha_req *q, size_t nout, CK_OBJECT_HANDLE handles[][2])
{
    ha_group *g = s->g;
    int first = -1;
    CK_RV result = CKR_DEVICE_ERROR;
    for (size_t k = 0; k < g->n; k++) {
        hc_response resp;
        CK_RV rv, arv;
        if (!ha_member_alive(g, k))
            continue;
        rv = ha_send(s, k, q, &resp);
        if (rv == HA_MEMBER_FAILED || rv == HA_NO_HANDLE)
            continue;
        if (rv != CKR_OK) {
            if (first < 0)
                return rv;
            continue;
        }
        arv = resp.rv;
        if (arv == CKR_OK) {
            for (size_t i = 0; i < nout; i++)
                handles[k][i] = (CK_OBJECT_HANDLE)hc_get_u64(&resp.r);
            if (resp.r.failed)
                arv = CKR_DEVICE_ERROR;
        }
        hc_response_free(&resp);
        if (first < 0) {
            first = (int)k;
            result = arv;
            if (arv != CKR_OK)
                return arv;
        } else if (arv != CKR_OK) {
            for (size_t i = 0; i < nout; i++)
                handles[k][i] = 0;
            hc_log("HA group %s: member %s answered 0x%lx where member %s succeeded; run hagroup synchronize",
                   g->name, g->m[k].slot->partition, (unsigned long)arv, g->m[first].slot->partition);
        }
    }
    return result;
}

static int template_token(const CK_ATTRIBUTE *t, CK_ULONG n, int otherwise)
{
    for (CK_ULONG i = 0; i < n; i++)
        if (t[i].type == CKA_TOKEN && t[i].pValue != NULL && t[i].ulValueLen == sizeof(CK_BBOOL))
            return *(CK_BBOOL *)t[i].pValue != CK_FALSE;
    return otherwise;
}

static CK_RV new_object(ha_session *s, CK_OBJECT_HANDLE handles[][2], size_t which, int token,
                        CK_OBJECT_HANDLE_PTR out)
{
    CK_OBJECT_HANDLE mh[HC_HA_MAX_MEMBERS] = {0};
    for (size_t k = 0; k < s->g->n; k++)
        mh[k] = handles[k][which];
    CK_OBJECT_HANDLE vh = ha_obj_add(s->g, mh, token, s->handle);
    if (vh == CK_INVALID_HANDLE)
        return CKR_HOST_MEMORY;
    *out = vh;
    return CKR_OK;
}

CK_RV ha_login(ha_session *s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
    ha_group *g = s->g;
    ha_req q;
    CK_RV result = CKR_DEVICE_ERROR;
    int first = -1;

    if (pin != NULL && pin_len > sizeof g->pin)
        return CKR_PIN_LEN_RANGE;
    ha_req_init(&q, OP_LOGIN);
    hc_put_u64(&q.body, user);
    hc_put_opt_bytes(&q.body, pin, pin_len);
    for (size_t k = 0; k < g->n && first < 0; k++) {
        hc_response resp;
        if (!ha_member_alive(g, k))
            continue;
        CK_RV rv = ha_send(s, k, &q, &resp);
        if (rv == HA_MEMBER_FAILED)
            continue;
        if (rv != CKR_OK) {
            result = rv;
            break;
        }
        result = resp.rv;
        hc_response_free(&resp);
        first = (int)k;
    }
    ha_req_free(&q);
    if (first < 0 || (result != CKR_OK && result != CKR_USER_ALREADY_LOGGED_IN) || user == CKU_CONTEXT_SPECIFIC)
        return result;
    hc_lock(g->lock);
    g->logged_in = 1;
    g->user = user;
    memset(g->pin, 0, sizeof g->pin);
    if (pin != NULL)
        memcpy(g->pin, pin, pin_len);
    g->pin_len = pin != NULL ? pin_len : 0;
    g->m[first].login_epoch = s->epoch[first];
    hc_unlock(g->lock);
    /* the others log in as their sessions are opened: now for this session's */
    for (size_t k = 0; k < g->n; k++) {
        ha_req probe;
        hc_response resp;
        if ((int)k == first || !ha_member_alive(g, k))
            continue;
        ha_req_init(&probe, OP_GET_SESSION_INFO);
        if (ha_send(s, k, &probe, &resp) == CKR_OK)
            hc_response_free(&resp);
        ha_req_free(&probe);
    }
    return result;
}

CK_RV ha_logout(ha_session *s)
{
    ha_group *g = s->g;
    ha_req q;
    CK_OBJECT_HANDLE none[HC_HA_MAX_MEMBERS][2];
    CK_RV rv;
    ha_req_init(&q, OP_LOGOUT);
    rv = all_members(s, &q, 0, none);
    ha_req_free(&q);
    forget_login(g);
    return rv;
}

CK_RV ha_init_pin(ha_session *s, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    ha_req q;
    CK_OBJECT_HANDLE none[HC_HA_MAX_MEMBERS][2];
    CK_RV rv;
    ha_req_init(&q, OP_INIT_PIN);
    hc_put_opt_bytes(&q.body, pin, len);
    rv = all_members(s, &q, 0, none);
    ha_req_free(&q);
    return rv;
}

CK_RV ha_set_pin(ha_session *s, CK_UTF8CHAR_PTR old_pin, CK_ULONG old_len, CK_UTF8CHAR_PTR new_pin, CK_ULONG new_len)
{
    ha_group *g = s->g;
    ha_req q;
    CK_OBJECT_HANDLE none[HC_HA_MAX_MEMBERS][2];
    CK_RV rv;
    if (new_pin != NULL && new_len > sizeof g->pin)
        return CKR_PIN_LEN_RANGE;
    ha_req_init(&q, OP_SET_PIN);
    hc_put_opt_bytes(&q.body, old_pin, old_len);
    hc_put_opt_bytes(&q.body, new_pin, new_len);
    rv = all_members(s, &q, 0, none);
    ha_req_free(&q);
    if (rv == CKR_OK) {
        hc_lock(g->lock);
        if (g->logged_in && new_pin != NULL) {
            memset(g->pin, 0, sizeof g->pin);
            memcpy(g->pin, new_pin, new_len);
            g->pin_len = new_len;
        }
        hc_unlock(g->lock);
    }
    return rv;
}

/* ---- objects ---- */

CK_RV ha_create_object(ha_session *s, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    ha_req q;
    CK_OBJECT_HANDLE handles[HC_HA_MAX_MEMBERS][2] = {{0}};
    CK_RV rv;
    ha_req_init(&q, OP_CREATE_OBJECT);
    rv = hc_put_template(&q.body, t, n);
    if (rv == CKR_OK)
        rv = all_members(s, &q, 1, handles);
    ha_req_free(&q);
    if (rv == CKR_OK)
        rv = new_object(s, handles, 0, template_token(t, n, 0), out);
    return rv;
}

CK_RV ha_copy_object(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    ha_req q;
    CK_OBJECT_HANDLE handles[HC_HA_MAX_MEMBERS][2] = {{0}};
    CK_RV rv;
    ha_req_init(&q, OP_COPY_OBJECT);
    ha_req_handle(&q, h);
    rv = hc_put_template(&q.body, t, n);
    if (rv == CKR_OK)
        rv = all_members(s, &q, 1, handles);
    ha_req_free(&q);
    if (rv == CKR_OK)
        rv = new_object(s, handles, 0, template_token(t, n, 1), out);
    return rv;
}

CK_RV ha_destroy_object(ha_session *s, CK_OBJECT_HANDLE h)
{
    ha_req q;
    CK_OBJECT_HANDLE none[HC_HA_MAX_MEMBERS][2];
    CK_RV rv;
    ha_req_init(&q, OP_DESTROY_OBJECT);
    ha_req_handle(&q, h);
    rv = all_members(s, &q, 0, none);
    ha_req_free(&q);
    if (rv == CKR_OK)
        ha_obj_remove(s->g, h);
    return rv;
}

CK_RV ha_set_attribute_value(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    ha_req q;
    CK_OBJECT_HANDLE none[HC_HA_MAX_MEMBERS][2];
    CK_RV rv;
    ha_req_init(&q, OP_SET_ATTRIBUTE_VALUE);
    ha_req_handle(&q, h);
    rv = hc_put_template(&q.body, t, n);
    if (rv == CKR_OK)
        rv = all_members(s, &q, 0, none);
    ha_req_free(&q);
    return rv;
}

CK_RV ha_get_object_size(ha_session *s, CK_OBJECT_HANDLE h, CK_ULONG_PTR size)
{
    ha_req q;
    hc_response resp;
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_GET_OBJECT_SIZE);
    ha_req_handle(&q, h);
    rv = ha_send_any(s, &q, &h, 1, &resp, &k);
    ha_req_free(&q);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        CK_ULONG v = (CK_ULONG)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *size = v;
    }
    hc_response_free(&resp);
    return rv;
}

CK_RV ha_get_attribute_value(ha_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    ha_req q;
    hc_response resp;
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_GET_ATTRIBUTE_VALUE);
    ha_req_handle(&q, h);
    hc_put_get_template(&q.body, t, n);
    rv = ha_send_any(s, &q, &h, 1, &resp, &k);
    ha_req_free(&q);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
        rv == CKR_BUFFER_TOO_SMALL)
        rv = hc_read_attribute_results(&resp.r, rv, t, n);
    hc_response_free(&resp);
    return rv;
}

/* ---- searches ---- */

static void find_clear_(ha_session *s)
{
    free(s->find_tmpl);
    free(s->found);
    s->find_tmpl = NULL;
    s->found = NULL;
    s->find_tmpl_len = s->nfound = s->capfound = 0;
    s->find_member = -1;
}


void ha_find_clear(ha_session *s)
{
    find_clear_(s);
}

static CK_RV find_start(ha_session *s, unsigned long long *tried)
{
    for (;;) {
        ha_req q;
        hc_response resp;
        int k = ha_pick(s->g, NULL, 0, *tried);
        CK_RV rv;
        if (k < 0)
            return CKR_DEVICE_ERROR;
        ha_req_init(&q, OP_FIND_OBJECTS_INIT);
        hc_put_bytes_raw(&q.body, s->find_tmpl, s->find_tmpl_len);
        rv = ha_send(s, (size_t)k, &q, &resp);
        ha_req_free(&q);
        if (rv == HA_MEMBER_FAILED) {
            *tried |= 1ull << k;
            continue;
        }
        if (rv != CKR_OK)
            return rv;
        rv = resp.rv;
        hc_response_free(&resp);
        if (rv == CKR_OK)
            s->find_member = k;
        return rv;
    }
}

CK_RV ha_find_objects_init(ha_session *s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    hc_buf b;
    CK_RV rv;
    unsigned long long tried = 0;
    if (s->find_member >= 0)
        return CKR_OPERATION_ACTIVE;
    hc_buf_init(&b);
    rv = hc_put_template(&b, t, n);
    if (rv == CKR_OK && b.failed)
        rv = CKR_HOST_MEMORY;
    if (rv == CKR_OK) {
        find_clear_(s);
        s->find_tmpl_len = b.len - HC_FRAME_HEADER;
        s->find_tmpl = malloc(s->find_tmpl_len > 0 ? s->find_tmpl_len : 1);
        if (s->find_tmpl == NULL)
            rv = CKR_HOST_MEMORY;
        else
            memcpy(s->find_tmpl, b.data + HC_FRAME_HEADER, s->find_tmpl_len);
    }
    hc_buf_free(&b);
    if (rv == CKR_OK)
        rv = find_start(s, &tried);
    if (rv != CKR_OK)
        find_clear_(s);
    return rv;
}

static int already_found(ha_session *s, CK_OBJECT_HANDLE vh)
{
    for (size_t i = 0; i < s->nfound; i++)
        if (s->found[i] == vh)
            return 1;
    return 0;
}

CK_RV ha_find_objects(ha_session *s, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR count)
{
    unsigned long long tried = 0;
    CK_ULONG got = 0;
    if (s->find_member < 0)
        return CKR_OPERATION_NOT_INITIALIZED;
    while (got < max) {
        ha_req q;
        hc_response resp;
        size_t k = (size_t)s->find_member;
        CK_ULONG want = max - got;
        CK_RV rv;
        ha_req_init(&q, OP_FIND_OBJECTS);
        hc_put_u64(&q.body, want);
        rv = ha_send(s, k, &q, &resp);
        ha_req_free(&q);
        if (rv == HA_MEMBER_FAILED) {
            /* the same search on another member; what was already returned is skipped */
            tried |= 1ull << k;
            rv = find_start(s, &tried);
            if (rv != CKR_OK)
                return rv;
            continue;
        }
        if (rv != CKR_OK)
            return rv;
        rv = resp.rv;
        if (rv != CKR_OK) {
            hc_response_free(&resp);
            return rv;
        }
        uint32_t n = hc_get_u32(&resp.r);
        if (resp.r.failed || n > want || (size_t)n * 8 > resp.r.left) {
            hc_response_free(&resp);
            return CKR_DEVICE_ERROR;
        }
        for (uint32_t i = 0; i < n; i++) {
            CK_OBJECT_HANDLE vh = ha_obj_from_member(s->g, k, (CK_OBJECT_HANDLE)hc_get_u64(&resp.r));
            if (vh == CK_INVALID_HANDLE || already_found(s, vh))
                continue;
            if (s->nfound == s->capfound) {
                size_t cap = s->capfound ? 2 * s->capfound : 64;
                CK_OBJECT_HANDLE *bigger = realloc(s->found, cap * sizeof *bigger);
                if (bigger == NULL) {
                    hc_response_free(&resp);
                    return CKR_HOST_MEMORY;
                }
                s->found = bigger;
                s->capfound = cap;
            }
            s->found[s->nfound++] = vh;
            out[got++] = vh;
        }
        hc_response_free(&resp);
        if (n < want)
            break; /* the member has no more */
    }
    *count = got;
    return CKR_OK;
}

CK_RV ha_find_objects_final(ha_session *s)
{
    CK_RV rv = CKR_OK;
    if (s->find_member < 0)
        return CKR_OPERATION_NOT_INITIALIZED;
    ha_req q;
    hc_response resp;
    ha_req_init(&q, OP_FIND_OBJECTS_FINAL);
    if (ha_send(s, (size_t)s->find_member, &q, &resp) == CKR_OK) {
        rv = resp.rv;
        hc_response_free(&resp);
    }
    ha_req_free(&q);
    find_clear_(s);
    return rv;
}

/* ---- cryptographic operations ---- */

static void parts_free(ha_session *s)
{
    ha_part *p = s->parts, *next;
    for (; p != NULL; p = next) {
        next = p->next;
        explicit_bzero(p->body, p->len);
        free(p->body);
        free(p);
    }
    s->parts = s->parts_tail = NULL;
    s->parts_bytes = 0;
    s->parts_overflow = 0;
}


void ha_op_clear(ha_session *s)
{
    parts_free(s);
    if (s->op_mech != NULL)
        explicit_bzero(s->op_mech, s->op_mech_len);
    free(s->op_mech);
    s->op_mech = NULL;
    s->op_mech_len = 0;
    s->op_member = -1;
}

static void init_request(ha_session *s, ha_req *q)
{
    ha_req_init(q, s->op_init);
    hc_put_bytes_raw(&q->body, s->op_mech, s->op_mech_len);
    if (s->op_with_key)
        ha_req_handle(q, s->op_key);
}

/* Starts the operation on a member not in `tried` and replays its parts there: the member, or -1. */
static int restart_elsewhere(ha_session *s, unsigned long long tried)
{
    for (;;) {
        int k = ha_pick(s->g, s->op_with_key ? &s->op_key : NULL, s->op_with_key ? 1 : 0, tried);
        ha_req q;
        hc_response resp;
        CK_RV rv;
        int ok = 1;
        if (k < 0)
            return -1;
        tried |= 1ull << k;
        init_request(s, &q);
        rv = ha_send(s, (size_t)k, &q, &resp);
        ha_req_free(&q);
        if (rv == HA_MEMBER_FAILED || rv == HA_NO_HANDLE)
            continue;
        if (rv != CKR_OK)
            return -1;
        rv = resp.rv;
        hc_response_free(&resp);
        if (rv != CKR_OK)
            return -1;
        for (ha_part *p = s->parts; p != NULL && ok; p = p->next) {
            static const unsigned char scratch;
            ha_req_init(&q, p->opcode);
            hc_put_bytes_raw(&q.body, p->body, p->len);
            if (p->outcap > 0)
                hc_put_outbuf(&q.body, &scratch, p->outcap);
            rv = ha_send(s, (size_t)k, &q, &resp);
            ha_req_free(&q);
            if (rv == HA_MEMBER_FAILED) {
                ok = 0;
                break;
            }
            if (rv != CKR_OK)
                return -1;
            rv = resp.rv; /* the output of a replayed part was returned already: dropped */
            hc_response_free(&resp);
            if (rv != CKR_OK)
                return -1;
        }
        if (!ok)
            continue;
        hc_log("HA group %s: an operation moved to member %s", s->g->name, s->g->m[k].slot->partition);
        s->op_member = k;
        return k;
    }
}

CK_RV ha_op_init(ha_session *s, uint16_t opcode, CK_MECHANISM_PTR m, int with_key, CK_OBJECT_HANDLE key)
{
    hc_buf mech;
    CK_RV rv;
    unsigned long long tried = 0;

    if (m == NULL) { /* cancel (PKCS#11 3.0) */
        if (s->op_member >= 0) {
            ha_req q;
            hc_response resp;
            ha_req_init(&q, opcode);
            hc_put_cancel(&q.body);
            if (with_key)
                hc_put_u64(&q.body, 0);
            if (ha_send(s, (size_t)s->op_member, &q, &resp) == CKR_OK)
                hc_response_free(&resp);
            ha_req_free(&q);
        }
        ha_op_clear(s);
        return CKR_OK;
    }
    hc_buf_init(&mech);
    rv = hc_put_mechanism(&mech, m);
    if (rv == CKR_OK && mech.failed)
        rv = CKR_HOST_MEMORY;
    if (rv != CKR_OK) {
        hc_buf_free(&mech);
        return rv;
    }
    if (s->op_member >= 0)
        ha_op_clear(s); /* the application starts another operation: the appliance decides */
    s->op_init = opcode;
    s->op_mech_len = mech.len - HC_FRAME_HEADER;
    s->op_mech = malloc(s->op_mech_len);
    if (s->op_mech == NULL) {
        hc_buf_free(&mech);
        return CKR_HOST_MEMORY;
    }
    memcpy(s->op_mech, mech.data + HC_FRAME_HEADER, s->op_mech_len);
    hc_buf_free(&mech);
    s->op_with_key = with_key;
    s->op_key = key;
    for (;;) {
        ha_req q;
        hc_response resp;
        int k = ha_pick(s->g, with_key ? &key : NULL, with_key ? 1 : 0, tried);
        if (k < 0) {
            ha_op_clear(s);
            return CKR_DEVICE_ERROR;
        }
        init_request(s, &q);
        rv = ha_send(s, (size_t)k, &q, &resp);
        ha_req_free(&q);
        if (rv == HA_MEMBER_FAILED || rv == HA_NO_HANDLE) {
            tried |= 1ull << k;
            continue;
        }
        if (rv != CKR_OK) {
            ha_op_clear(s);
            return rv == CKR_OBJECT_HANDLE_INVALID ? CKR_KEY_HANDLE_INVALID : rv;
        }
        rv = resp.rv;
        hc_response_free(&resp);
        if (rv == CKR_OK)
            s->op_member = k;
        else
            ha_op_clear(s);
        return rv;
    }
}

static void remember_part(ha_session *s, uint16_t opcode, const unsigned char *body, size_t len, CK_ULONG outcap)
{
    ha_part *p;
    if (s->parts_overflow)
        return;
    if (s->parts_bytes + len > HA_REPLAY_MAX || (p = calloc(1, sizeof *p)) == NULL) {
        s->parts_overflow = 1;
        return;
    }
    p->body = malloc(len > 0 ? len : 1);
    if (p->body == NULL) {
        free(p);
        s->parts_overflow = 1;
        return;
    }
    memcpy(p->body, body, len);
    p->len = len;
    p->opcode = opcode;
    p->outcap = outcap;
    if (s->parts_tail)
        s->parts_tail->next = p;
    else
        s->parts = p;
    s->parts_tail = p;
    s->parts_bytes += len;
}

CK_RV ha_op_call(ha_session *s, uint16_t opcode, enum ha_op_kind kind, int has_data, const CK_BYTE *data,
                 CK_ULONG data_len, int has_data2, const CK_BYTE *data2, CK_ULONG data2_len, CK_BYTE_PTR out,
                 CK_ULONG_PTR out_len)
{
    ha_req q;
    hc_response resp;
    CK_RV rv, arv;
    size_t input_len;
    unsigned long long tried = 0;

    if (s->op_member < 0)
        return CKR_OPERATION_NOT_INITIALIZED;
    ha_req_init(&q, opcode);
    if (has_data)
        hc_put_bytes(&q.body, data, data_len);
    if (has_data2)
        hc_put_bytes(&q.body, data2, data2_len);
    input_len = q.body.len - HC_FRAME_HEADER;
    if (out_len != NULL)
        hc_put_outbuf(&q.body, out, *out_len);
    for (;;) {
        size_t k = (size_t)s->op_member;
        rv = ha_send(s, k, &q, &resp);
        if (rv == HA_MEMBER_FAILED) {
            tried |= 1ull << k;
            if (s->parts_overflow || restart_elsewhere(s, tried) < 0) {
                hc_log("HA group %s: an operation could not be moved to another member", s->g->name);
                ha_op_clear(s);
                ha_req_free(&q);
                return CKR_DEVICE_ERROR;
            }
            continue;
        }
        break;
    }
    if (rv != CKR_OK) {
        ha_req_free(&q);
        return rv;
    }
    arv = resp.rv;
    if (out_len != NULL && resp.data != NULL)
        arv = hc_read_output(&resp.r, arv, out, out_len);
    hc_response_free(&resp);
    int size_query = out_len != NULL && out == NULL && arv == CKR_OK;
    if (kind == HA_UPDATE) {
        if (arv == CKR_OK && !size_query)
            remember_part(s, opcode, q.body.data + HC_FRAME_HEADER, input_len,
                          out_len != NULL ? data_len + 4096 : 0);
        else if (arv != CKR_OK && arv != CKR_BUFFER_TOO_SMALL)
            ha_op_clear(s);
    } else if (!(arv == CKR_BUFFER_TOO_SMALL || size_query)) {
        ha_op_clear(s); /* the operation is over, whatever its result */
    }
    ha_req_free(&q);
    return arv;
}

CK_RV ha_digest_key(ha_session *s, CK_OBJECT_HANDLE key)
{
    ha_req q;
    hc_response resp;
    CK_RV rv;
    if (s->op_member < 0)
        return CKR_OPERATION_NOT_INITIALIZED;
    ha_req_init(&q, OP_DIGEST_KEY);
    ha_req_handle(&q, key);
    rv = ha_send(s, (size_t)s->op_member, &q, &resp);
    ha_req_free(&q);
    if (rv == HA_MEMBER_FAILED || rv == HA_NO_HANDLE) {
        ha_op_clear(s);
        return CKR_DEVICE_ERROR;
    }
    if (rv != CKR_OK)
        return rv == CKR_OBJECT_HANDLE_INVALID ? CKR_KEY_HANDLE_INVALID : rv;
    rv = resp.rv;
    hc_response_free(&resp);
    s->parts_overflow = 1; /* a digested key is not replayed on another member */
    if (rv != CKR_OK)
        ha_op_clear(s);
    return rv;
}

/* ---- keys ---- */

/* Generation on one member, then the new objects are cloned to the others. */
static CK_RV generate(ha_session *s, ha_req *q, size_t nout, CK_OBJECT_HANDLE_PTR out0, CK_OBJECT_HANDLE_PTR out1,
                      int token0, int token1)
{
    ha_group *g = s->g;
    unsigned long long tried = 0;
    hc_response resp;
    CK_RV rv;
    int k;
    CK_OBJECT_HANDLE mh[2] = {0, 0}, vh[2] = {0, 0};
    for (;;) {
        k = ha_pick(g, NULL, 0, tried);
        if (k < 0)
            return CKR_DEVICE_ERROR;
        rv = ha_send(s, (size_t)k, q, &resp);
        if (rv == HA_MEMBER_FAILED) {
            tried |= 1ull << k;
            continue;
        }
        break;
    }
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        for (size_t i = 0; i < nout; i++)
            mh[i] = (CK_OBJECT_HANDLE)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
    }
    hc_response_free(&resp);
    if (rv != CKR_OK)
        return rv;
    for (size_t i = 0; i < nout; i++) {
        CK_OBJECT_HANDLE all[HC_HA_MAX_MEMBERS] = {0};
        all[k] = mh[i];
        vh[i] = ha_obj_add(g, all, i == 0 ? token0 : token1, s->handle);
        if (vh[i] == CK_INVALID_HANDLE)
            return CKR_HOST_MEMORY;
    }
    for (size_t j = 0; j < g->n; j++) {
        if ((int)j == k || !ha_member_alive(g, j))
            continue;
        for (size_t i = 0; i < nout; i++) {
            CK_RV r = ha_replicate_object(s, vh[i], (size_t)k, j);
            if (r != CKR_OK)
                hc_log("HA group %s: a generated key was not cloned to member %s (0x%lx); hagroup synchronize "
                       "copies it", g->name, g->m[j].slot->partition, (unsigned long)r);
        }
    }
    *out0 = vh[0];
    if (out1 != NULL)
        *out1 = vh[1];
    return CKR_OK;
}

CK_RV ha_generate_key(ha_session *s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    ha_req q;
    CK_RV rv;
    ha_req_init(&q, OP_GENERATE_KEY);
    rv = hc_put_mechanism(&q.body, m);
    if (rv == CKR_OK)
        rv = hc_put_template(&q.body, t, n);
    if (rv == CKR_OK)
        rv = generate(s, &q, 1, out, NULL, template_token(t, n, 0), 0);
    ha_req_free(&q);
    return rv;
}

CK_RV ha_generate_key_pair(ha_session *s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub, CK_ULONG npub,
                           CK_ATTRIBUTE_PTR priv, CK_ULONG npriv, CK_OBJECT_HANDLE_PTR hpub,
                           CK_OBJECT_HANDLE_PTR hpriv)
{
    ha_req q;
    CK_RV rv;
    ha_req_init(&q, OP_GENERATE_KEY_PAIR);
    rv = hc_put_mechanism(&q.body, m);
    if (rv == CKR_OK)
        rv = hc_put_template(&q.body, pub, npub);
    if (rv == CKR_OK)
        rv = hc_put_template(&q.body, priv, npriv);
    if (rv == CKR_OK)
        rv = generate(s, &q, 2, hpub, hpriv, template_token(pub, npub, 0), template_token(priv, npriv, 0));
    ha_req_free(&q);
    return rv;
}

CK_RV ha_wrap_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wrapping, CK_OBJECT_HANDLE key,
                  CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
    ha_req q;
    hc_response resp;
    CK_OBJECT_HANDLE need[2] = {wrapping, key};
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_WRAP_KEY);
    rv = hc_put_mechanism(&q.body, m);
    if (rv == CKR_OK) {
        ha_req_handle(&q, wrapping);
        ha_req_handle(&q, key);
        hc_put_outbuf(&q.body, out, *out_len);
        rv = ha_send_any(s, &q, need, 2, &resp, &k);
        if (rv == CKR_OK) {
            rv = resp.data != NULL ? hc_read_output(&resp.r, resp.rv, out, out_len) : resp.rv;
            hc_response_free(&resp);
        } else if (rv == CKR_OBJECT_HANDLE_INVALID) {
            rv = ha_obj_exists(s->g, wrapping) ? CKR_KEY_HANDLE_INVALID : CKR_WRAPPING_KEY_HANDLE_INVALID;
        }
    }
    ha_req_free(&q);
    return rv;
}

CK_RV ha_unwrap_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE unwrapping, CK_BYTE_PTR wrapped,
                    CK_ULONG wrapped_len, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    ha_req q;
    CK_OBJECT_HANDLE handles[HC_HA_MAX_MEMBERS][2] = {{0}};
    CK_RV rv;
    ha_req_init(&q, OP_UNWRAP_KEY);
    rv = hc_put_mechanism(&q.body, m);
    if (rv == CKR_OK) {
        ha_req_handle(&q, unwrapping);
        hc_put_bytes(&q.body, wrapped, wrapped_len);
        rv = hc_put_template(&q.body, t, n);
    }
    if (rv == CKR_OK) { /* the same wrapped key gives the same key on every member */
        rv = all_members(s, &q, 1, handles);
        if (rv == CKR_OBJECT_HANDLE_INVALID)
            rv = CKR_UNWRAPPING_KEY_HANDLE_INVALID;
    }
    ha_req_free(&q);
    if (rv == CKR_OK)
        rv = new_object(s, handles, 0, template_token(t, n, 0), out);
    return rv;
}

CK_RV ha_derive_key(ha_session *s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                    CK_OBJECT_HANDLE_PTR out)
{
    ha_req q;
    CK_OBJECT_HANDLE handles[HC_HA_MAX_MEMBERS][2] = {{0}};
    CK_RV rv;
    ha_req_init(&q, OP_DERIVE_KEY);
    rv = hc_put_mechanism(&q.body, m);
    if (rv == CKR_OK) {
        ha_req_handle(&q, base);
        rv = hc_put_template(&q.body, t, n);
    }
    if (rv == CKR_OK) { /* derivation is deterministic: the same key on every member */
        rv = all_members(s, &q, 1, handles);
        if (rv == CKR_OBJECT_HANDLE_INVALID)
            rv = CKR_KEY_HANDLE_INVALID;
    }
    ha_req_free(&q);
    if (rv == CKR_OK)
        rv = new_object(s, handles, 0, template_token(t, n, 0), out);
    return rv;
}

/* ---- random numbers ---- */

CK_RV ha_seed_random(ha_session *s, CK_BYTE_PTR seed, CK_ULONG len)
{
    ha_req q;
    hc_response resp;
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_SEED_RANDOM);
    hc_put_bytes(&q.body, seed, len);
    rv = ha_send_any(s, &q, NULL, 0, &resp, &k);
    ha_req_free(&q);
    if (rv == CKR_OK) {
        rv = resp.rv;
        hc_response_free(&resp);
    }
    return rv;
}

CK_RV ha_generate_random(ha_session *s, CK_BYTE_PTR out, CK_ULONG len)
{
    ha_req q;
    hc_response resp;
    int k;
    CK_RV rv;
    ha_req_init(&q, OP_GENERATE_RANDOM);
    hc_put_u64(&q.body, len);
    rv = ha_send_any(s, &q, NULL, 0, &resp, &k);
    ha_req_free(&q);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        size_t n;
        const unsigned char *p = hc_get_bytes(&resp.r, &n);
        if (resp.r.failed || n != len)
            rv = CKR_DEVICE_ERROR;
        else if (n > 0)
            memcpy(out, p, n);
    }
    hc_response_free(&resp);
    return rv;
}
