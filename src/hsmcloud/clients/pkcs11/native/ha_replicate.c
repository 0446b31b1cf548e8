/* Replicating objects between members with the appliances' cloning (CLONE_OFFER on the target,
 * CLONE_EXPORT on the source, CLONE_IMPORT on the target): key material travels only as a blob
 * encrypted for the target partition's cloning domain, never in clear through the library.
 * Cloning needs the Crypto Officer logged in; session objects are not cloned. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "ha_internal.h"
#include "log.h"

#define CLONE_BATCH 256

/* bytes field of a successful answer into a new buffer */
static CK_RV take_bytes(hc_response *resp, unsigned char **out, size_t *len)
{
    size_t n;
    const unsigned char *p = hc_get_bytes(&resp->r, &n);
    if (resp->r.failed)
        return CKR_DEVICE_ERROR;
    *out = malloc(n > 0 ? n : 1);
    if (*out == NULL)
        return CKR_HOST_MEMORY;
    memcpy(*out, p, n);
    *len = n;
    return CKR_OK;
}

static CK_RV answer(CK_RV rv, hc_response *resp)
{
    if (rv == HA_MEMBER_FAILED)
        return CKR_DEVICE_ERROR;
    if (rv != CKR_OK)
        return rv;
    return resp->rv;
}

/* Clones member `from`'s objects `src` (member handles) to member `to`; dst receives the new
 * handles in the same order. */
static CK_RV clone_batch(ha_session *s, size_t from, size_t to, const CK_OBJECT_HANDLE *src, size_t n,
                         CK_OBJECT_HANDLE *dst)
{
    ha_req q;
    hc_response resp;
    unsigned char *offer = NULL, *blob = NULL;
    size_t offer_len = 0, blob_len = 0;
    CK_RV rv;

    ha_req_init(&q, OP_CLONE_OFFER);
    rv = ha_send(s, to, &q, &resp);
    ha_req_free(&q);
    rv = answer(rv, &resp);
    if (rv == CKR_OK)
        rv = take_bytes(&resp, &offer, &offer_len);
    if (resp.data != NULL)
        hc_response_free(&resp);
    if (rv != CKR_OK)
        return rv;

    ha_req_init(&q, OP_CLONE_EXPORT);
    hc_put_bytes(&q.body, offer, offer_len);
    hc_put_u32(&q.body, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        hc_put_u64(&q.body, src[i]);
    free(offer);
    rv = ha_send(s, from, &q, &resp);
    ha_req_free(&q);
    rv = answer(rv, &resp);
    if (rv == CKR_OK)
        rv = take_bytes(&resp, &blob, &blob_len);
    if (resp.data != NULL)
        hc_response_free(&resp);
    if (rv != CKR_OK)
        return rv;

    ha_req_init(&q, OP_CLONE_IMPORT);
    hc_put_bytes(&q.body, blob, blob_len);
    explicit_bzero(blob, blob_len);
    free(blob);
    rv = ha_send(s, to, &q, &resp);
    ha_req_free(&q);
    rv = answer(rv, &resp);
    if (rv == CKR_OK) {
        uint32_t got = hc_get_u32(&resp.r);
        if (resp.r.failed || got != n)
            rv = CKR_DEVICE_ERROR;
        for (size_t i = 0; rv == CKR_OK && i < n; i++)
            dst[i] = (CK_OBJECT_HANDLE)hc_get_u64(&resp.r);
        if (resp.r.failed)
            rv = CKR_DEVICE_ERROR;
    }
    if (resp.data != NULL)
        hc_response_free(&resp);
    return rv;
}

CK_RV ha_replicate_object(ha_session *s, CK_OBJECT_HANDLE vh, size_t from, size_t to)
{
    ha_group *g = s->g;
    CK_OBJECT_HANDLE src, dst = 0;
    int token;
    hc_lock(g->lock);
    token = 0;
    for (ha_object *o = g->objs[vh % HA_OBJECT_BUCKETS]; o != NULL; o = o->next)
        if (o->vh == vh)
            token = o->token;
    hc_unlock(g->lock);
    if (!token)
        return CKR_OK; /* a session object lives on the member that made it */
    src = ha_obj_member_handle(g, vh, from);
    if (src == 0 || src == HA_ABSENT)
        return CKR_OBJECT_HANDLE_INVALID;
    CK_RV rv = clone_batch(s, from, to, &src, 1, &dst);
    if (rv == CKR_OK)
        ha_obj_set_member_handle(g, vh, to, dst);
    return rv;
}

typedef struct fingerprint {
    CK_OBJECT_HANDLE handle;
    unsigned char fp[32];
} fingerprint;

static CK_RV list_fingerprints(ha_session *s, size_t k, fingerprint **out, size_t *n_out)
{
    ha_req q;
    hc_response resp;
    CK_RV rv;
    fingerprint *list = NULL;
    uint32_t n = 0;
    *out = NULL;
    *n_out = 0;
    ha_req_init(&q, OP_LIST_OBJECT_FINGERPRINTS);
    rv = ha_send(s, k, &q, &resp);
    ha_req_free(&q);
    rv = answer(rv, &resp);
    if (rv == CKR_OK) {
        n = hc_get_u32(&resp.r);
        if (resp.r.failed || (size_t)n * 20 > resp.r.left)
            rv = CKR_DEVICE_ERROR;
        else if (n > 0 && (list = calloc(n, sizeof *list)) == NULL)
            rv = CKR_HOST_MEMORY;
        for (uint32_t i = 0; rv == CKR_OK && i < n; i++) {
            size_t len;
            list[i].handle = (CK_OBJECT_HANDLE)hc_get_u64(&resp.r);
            (void)hc_get_u64(&resp.r);
            const unsigned char *p = hc_get_bytes(&resp.r, &len);
            if (resp.r.failed || len != 32)
                rv = CKR_DEVICE_ERROR;
            else
                memcpy(list[i].fp, p, 32);
        }
    }
    if (resp.data != NULL)
        hc_response_free(&resp);
    if (rv != CKR_OK) {
        free(list);
        return rv;
    }
    *out = list;
    *n_out = n;
    return CKR_OK;
}

static const fingerprint *find_fp(const fingerprint *list, size_t n, const unsigned char *fp)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(list[i].fp, fp, 32) == 0)
            return &list[i];
    return NULL;
}

/* Member k of this process's view: map each known object to member k's copy (by fingerprint)
 * and clone from member j what k lacks. */
static CK_RV sync_from(ha_session *s, size_t j, size_t k, size_t *cloned)
{
    ha_group *g = s->g;
    fingerprint *fj = NULL, *fk = NULL;
    size_t nj = 0, nk = 0;
    CK_OBJECT_HANDLE src[CLONE_BATCH], dst[CLONE_BATCH];
    size_t batch = 0;
    CK_RV rv = list_fingerprints(s, j, &fj, &nj);
    if (rv == CKR_OK)
        rv = list_fingerprints(s, k, &fk, &nk);
    for (size_t i = 0; rv == CKR_OK && i <= nj; i++) {
        if (i < nj) {
            const fingerprint *there = find_fp(fk, nk, fj[i].fp);
            if (there != NULL) {
                CK_OBJECT_HANDLE vh = ha_obj_find_by_member(g, j, fj[i].handle);
                CK_OBJECT_HANDLE known = vh != 0 ? ha_obj_member_handle(g, vh, k) : 0;
                if (vh != 0 && (known == 0 || known == HA_ABSENT))
                    ha_obj_set_member_handle(g, vh, k, there->handle);
                continue;
            }
            src[batch++] = fj[i].handle;
        }
        if (batch == CLONE_BATCH || (i == nj && batch > 0)) {
            rv = clone_batch(s, j, k, src, batch, dst);
            for (size_t b = 0; rv == CKR_OK && b < batch; b++) {
                CK_OBJECT_HANDLE vh = ha_obj_find_by_member(g, j, src[b]);
                if (vh != 0)
                    ha_obj_set_member_handle(g, vh, k, dst[b]);
            }
            if (rv == CKR_OK)
                *cloned += batch;
            batch = 0;
        }
    }
    free(fj);
    free(fk);
    return rv;
}

CK_RV ha_replicate_missing(ha_session *s, size_t k)
{
    ha_group *g = s->g;
    CK_RV rv = CKR_OK;
    size_t cloned = 0;
    int logged_in;
    hc_lock(g->lock);
    logged_in = g->logged_in && g->user == CKU_USER;
    hc_unlock(g->lock);
    if (!logged_in) {
        hc_log("HA group %s: member %s returns without replication (the application is not logged in as "
               "Crypto Officer); hagroup synchronize copies what it lacks", g->name, g->m[k].slot->partition);
        return CKR_OK;
    }
    for (size_t j = 0; j < g->n; j++) {
        if (j == k || !ha_member_alive(g, j))
            continue;
        rv = sync_from(s, j, k, &cloned);
        break; /* members are identical: one source is enough */
    }
    if (rv == CKR_OK)
        hc_log("HA group %s: member %s synchronized (%zu object(s) cloned to it)", g->name, g->m[k].slot->partition,
               cloned);
    return rv;
}
