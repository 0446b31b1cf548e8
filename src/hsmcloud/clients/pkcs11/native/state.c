/* The library's state and lifecycle.
 *
 * Fork: PKCS#11 says a child process must call C_Initialize before using the library; until then
 * every call answers CKR_CRYPTOKI_NOT_INITIALIZED. The pthread_atfork child handler closes the
 * child's copies of the connection sockets (sending nothing, so the parent's TLS sessions go on)
 * and abandons the inherited state: the child's C_Initialize starts afresh with a new
 * application id and new connections. The abandoned memory (one copy per fork) is not freed:
 * it may hold OpenSSL objects whose locks another parent thread held at the moment of fork. */
#define _GNU_SOURCE
#include "state.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "ha.h"
#include "locks.h"
#include "log.h"

#define SESSION_BUCKETS 1024

typedef struct hc_session {
    CK_SESSION_HANDLE handle;
    CK_SLOT_ID slot;
    CK_ULONG remote;
    unsigned long epoch;
    hc_server *server;
    struct hc_session *next;
} hc_session;

struct hc_state {
    hc_config cfg;
    uint64_t application_id;
    hc_server **servers;
    size_t nservers;
    hc_slot *slots;
    size_t nslots;
    ha_registry *ha; /* HA groups and their virtual sessions */
    hc_mutex *lock; /* slot serials and the session table */
    hc_session *buckets[SESSION_BUCKETS];
    CK_SESSION_HANDLE next_handle;
    size_t nsessions;
};

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static hc_state *g_state;
static int g_initialized; /* read and written with __atomic builtins */
static long g_inflight;
static pid_t g_pid;

/* One OpenSSL library context for the life of the process, our own so that the host's OpenSSL
 * configuration (engines, providers such as a PKCS#11 provider pointing back at this library)
 * never reaches our TLS. It is kept across C_Finalize: OpenSSL keeps per-thread caches for each
 * context it has seen, so a new context per C_Initialize would grow the process a little every
 * cycle. */
static pthread_once_t libctx_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *g_libctx;

static void make_libctx(void)
{
    OSSL_LIB_CTX *l;
    ERR_set_mark();
    l = OSSL_LIB_CTX_new();
    if (l != NULL && OSSL_PROVIDER_load(l, "default") == NULL) {
        OSSL_LIB_CTX_free(l);
        l = NULL;
    }
    ERR_pop_to_mark();
    g_libctx = l;
}

/* ---- state ---- */

static void state_free(hc_state *st)
{
    if (st == NULL)
        return;
    ha_registry_free(st->ha);
    for (size_t i = 0; i < st->nservers; i++) {
        hc_server *s = st->servers[i];
        if (s == NULL)
            continue;
        if (hc_server_connected(s)) {
            /* closes this application's sessions on the appliance at once */
            hc_buf req;
            hc_response resp;
            hc_buf_init(&req);
            hc_put_u16(&req, OP_FINALIZE);
            if (hc_call(s, &req, &resp, 0, 0, NULL) == CKR_OK)
                hc_response_free(&resp);
            hc_buf_free(&req);
        }
        hc_server_free(s);
    }
    free(st->servers);
    for (size_t b = 0; b < SESSION_BUCKETS; b++) {
        hc_session *e = st->buckets[b], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    for (size_t i = 0; i < st->nslots; i++)
        free(st->slots[i].partition);
    free(st->slots);
    hc_config_free(&st->cfg);
    hc_mutex_free(st->lock);
    free(st);
}

static CK_RV state_new(hc_state **out)
{
    char error[1024];
    hc_state *st = calloc(1, sizeof *st);
    enum hc_config_result cr;

    *out = NULL;
    if (st == NULL)
        return CKR_HOST_MEMORY;
    st->lock = hc_mutex_new();
    if (st->lock == NULL) {
        free(st);
        return CKR_CANT_LOCK;
    }
    st->next_handle = 1;
    cr = hc_config_load(&st->cfg, error, sizeof error);
    if (cr == HC_CONFIG_ERROR) {
        hc_log("C_Initialize: configuration error: %s", error);
        /* C_Initialize's return code alone cannot say what is wrong with the file */
        fprintf(stderr, "hsmcloud-pkcs11: configuration error: %s\n", error);
        state_free(st);
        return CKR_GENERAL_ERROR;
    }
    if (cr == HC_CONFIG_ABSENT)
        hc_log("C_Initialize: %s; the library offers no slots", error);

    pthread_once(&libctx_once, make_libctx);
    ERR_set_mark();
    if (g_libctx == NULL ||
        RAND_bytes_ex(g_libctx, (unsigned char *)&st->application_id, sizeof st->application_id, 0) != 1) {
        ERR_pop_to_mark();
        hc_log("C_Initialize: OpenSSL's default provider is not available");
        state_free(st);
        return CKR_GENERAL_ERROR;
    }
    ERR_pop_to_mark();
    if (st->application_id == 0)
        st->application_id = 1;

    if (st->cfg.nservers > 0) {
        st->servers = calloc(st->cfg.nservers, sizeof *st->servers);
        if (st->servers == NULL) {
            state_free(st);
            return CKR_HOST_MEMORY;
        }
        st->nservers = st->cfg.nservers;
        for (size_t i = 0; i < st->nservers; i++) {
            st->servers[i] = hc_server_new(&st->cfg, i, g_libctx, st->application_id);
            if (st->servers[i] == NULL) {
                state_free(st);
                return CKR_HOST_MEMORY;
            }
        }
    }
    if (st->cfg.nslots > 0) {
        st->slots = calloc(st->cfg.nslots, sizeof *st->slots);
        if (st->slots == NULL) {
            state_free(st);
            return CKR_HOST_MEMORY;
        }
        st->nslots = st->cfg.nslots;
        for (size_t i = 0; i < st->nslots; i++) {
            st->slots[i].server = st->servers[st->cfg.slots[i].server];
            st->slots[i].partition = strdup(st->cfg.slots[i].partition);
            if (st->slots[i].partition == NULL) {
                state_free(st);
                return CKR_HOST_MEMORY;
            }
        }
    }
    st->ha = ha_registry_new(st, &st->cfg, st->slots, st->nslots);
    if (st->ha == NULL) {
        state_free(st);
        return CKR_HOST_MEMORY;
    }
    for (size_t i = 0; i < ha_group_count(st->ha); i++)
        ha_group_set_slot_id(ha_group_at(st->ha, i), (CK_SLOT_ID)((st->cfg.ha_only ? 0 : st->nslots) + i));
    if (cr == HC_CONFIG_OK)
        hc_log("C_Initialize: %s: %zu slot(s) on %zu appliance(s), %zu HA group(s)%s", st->cfg.path, st->nslots,
               st->nservers, ha_group_count(st->ha), st->cfg.ha_only ? " (HA only)" : "");
    *out = st;
    return CKR_OK;
}

/* ---- fork ---- */

static void fork_prepare(void)
{
    pthread_mutex_lock(&init_lock);
    if (g_state != NULL) {
        hc_lock(g_state->lock);
        for (size_t i = 0; i < g_state->nservers; i++)
            hc_server_fork_prepare(g_state->servers[i]);
    }
}

static void fork_parent(void)
{
    if (g_state != NULL) {
        for (size_t i = g_state->nservers; i-- > 0;)
            hc_server_fork_parent(g_state->servers[i]);
        hc_unlock(g_state->lock);
    }
    pthread_mutex_unlock(&init_lock);
}

static void fork_child(void)
{
    if (g_state != NULL) {
        for (size_t i = 0; i < g_state->nservers; i++)
            hc_server_fork_child(g_state->servers[i]);
        g_state = NULL; /* abandoned: see the comment at the top */
    }
    __atomic_store_n(&g_initialized, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&g_inflight, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&init_lock);
}

static void register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- lifecycle ---- */

CK_RV hc_initialize(CK_VOID_PTR args)
{
    const CK_C_INITIALIZE_ARGS *a = args;
    hc_state *st;
    CK_RV rv;

    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&init_lock);
    if (__atomic_load_n(&g_initialized, __ATOMIC_SEQ_CST) && g_pid == getpid()) {
        pthread_mutex_unlock(&init_lock);
        return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    }
    if (g_state != NULL && g_pid != getpid()) {
        /* a child the atfork handler did not see (e.g. a raw clone): abandon the parent's state */
        for (size_t i = 0; i < g_state->nservers; i++)
            hc_server_fork_child(g_state->servers[i]);
        g_state = NULL;
    }
    rv = hc_locks_configure(a);
    if (rv != CKR_OK) {
        pthread_mutex_unlock(&init_lock);
        return rv;
    }
    hc_log_open();
    rv = state_new(&st);
    if (rv == CKR_OK) {
        g_state = st;
        g_pid = getpid();
        __atomic_store_n(&g_inflight, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&g_initialized, 1, __ATOMIC_SEQ_CST);
    } else {
        hc_log("C_Initialize: failed with rv 0x%lx", (unsigned long)rv);
        hc_log_close();
    }
    pthread_mutex_unlock(&init_lock);
    return rv;
}

CK_RV hc_finalize(CK_VOID_PTR reserved)
{
    hc_state *st;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
    long waited_ms = 0, limit_ms;

    pthread_mutex_lock(&init_lock);
    if (!__atomic_load_n(&g_initialized, __ATOMIC_SEQ_CST) || g_pid != getpid()) {
        pthread_mutex_unlock(&init_lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (reserved != NULL) {
        pthread_mutex_unlock(&init_lock);
        return CKR_ARGUMENTS_BAD;
    }
    st = g_state;
    /* New calls now answer CKR_CRYPTOKI_NOT_INITIALIZED; calls already running finish first
     * (PKCS#11 leaves C_Finalize during other calls undefined; this makes it safe). */
    __atomic_store_n(&g_initialized, 0, __ATOMIC_SEQ_CST);
    limit_ms = (long)(st->cfg.receive_timeout_seconds > 0 ? st->cfg.receive_timeout_seconds : 20) * 2000L + 1000L;
    while (__atomic_load_n(&g_inflight, __ATOMIC_SEQ_CST) > 0 && waited_ms < limit_ms) {
        nanosleep(&pause, NULL);
        waited_ms++;
    }
    g_state = NULL;
    if (__atomic_load_n(&g_inflight, __ATOMIC_SEQ_CST) > 0) {
        hc_log("C_Finalize: calls still running after %ld ms; their state is left allocated", waited_ms);
    } else {
        state_free(st);
    }
    hc_log("C_Finalize: done");
    hc_log_close();
    pthread_mutex_unlock(&init_lock);
    return CKR_OK;
}

CK_RV hc_enter(hc_state **st)
{
    __atomic_add_fetch(&g_inflight, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&g_initialized, __ATOMIC_SEQ_CST) || g_pid != getpid()) {
        __atomic_sub_fetch(&g_inflight, 1, __ATOMIC_SEQ_CST);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    *st = g_state;
    return CKR_OK;
}

void hc_leave(void)
{
    __atomic_sub_fetch(&g_inflight, 1, __ATOMIC_SEQ_CST);
}

/* ---- slots ---- */

size_t hc_slot_count(hc_state *st)
{
    return st->nslots;
}

int hc_ha_only(hc_state *st)
{
    return st->cfg.ha_only;
}

ha_registry *hc_state_ha(hc_state *st)
{
    return st->ha;
}

ha_group *hc_slot_group(hc_state *st, CK_SLOT_ID id)
{
    size_t first = st->cfg.ha_only ? 0 : st->nslots;
    if (id < first || id - first >= ha_group_count(st->ha))
        return NULL;
    return ha_group_at(st->ha, (size_t)(id - first));
}

CK_SESSION_HANDLE hc_handle_new(hc_state *st)
{
    CK_SESSION_HANDLE h;
    hc_lock(st->lock);
    h = st->next_handle++;
    if (st->next_handle == CK_INVALID_HANDLE)
        st->next_handle = 1;
    hc_unlock(st->lock);
    return h;
}

CK_RV hc_slot_get(hc_state *st, CK_SLOT_ID id, hc_slot **slot)
{
    if (st->cfg.ha_only || id >= st->nslots)
        return CKR_SLOT_ID_INVALID;
    *slot = &st->slots[id];
    return CKR_OK;
}

typedef struct partition_entry {
    char serial[64];
    char name[128];
} partition_entry;

/* LIST_PARTITIONS: the partitions this client certificate is assigned to. */
static CK_RV list_partitions(hc_server *s, partition_entry **out, size_t *n_out)
{
    hc_buf req;
    hc_response resp;
    CK_RV rv;
    partition_entry *list = NULL;
    uint32_t n = 0;

    *out = NULL;
    *n_out = 0;
    hc_buf_init(&req);
    hc_put_u16(&req, OP_LIST_PARTITIONS);
    rv = hc_call(s, &req, &resp, HC_CALL_IDEMPOTENT, 0, NULL);
    hc_buf_free(&req);
    if (rv != CKR_OK)
        return rv;
    rv = resp.rv;
    if (rv == CKR_OK) {
        n = hc_get_u32(&resp.r);
        if (n > 4096 || resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else if (n > 0 && (list = calloc(n, sizeof *list)) == NULL)
            rv = CKR_HOST_MEMORY;
        for (uint32_t i = 0; rv == CKR_OK && i < n; i++) {
            char label[64];
            hc_get_string(&resp.r, list[i].serial, sizeof list[i].serial);
            hc_get_string(&resp.r, list[i].name, sizeof list[i].name);
            (void)hc_get_u8(&resp.r);
            hc_get_string(&resp.r, label, sizeof label);
        }
        if (rv == CKR_OK && resp.r.failed)
            rv = CKR_DEVICE_ERROR;
    }
    hc_response_free(&resp);
    if (rv != CKR_OK) {
        free(list);
        return rv;
    }
    *out = list;
    *n_out = n;
    return CKR_OK;
}

/* The serial of the configured partition (a serial or a name) in a listing, or NULL. */
static const char *find_partition(const partition_entry *list, size_t n, const char *wanted)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].serial, wanted) == 0)
            return list[i].serial;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, wanted) == 0)
            return list[i].serial;
    return NULL;
}

CK_RV hc_slot_serial(hc_state *st, hc_slot *slot, char *serial, size_t len)
{
    partition_entry *list;
    size_t n;
    const char *found;
    CK_RV rv;

    hc_lock(st->lock);
    snprintf(serial, len, "%s", slot->serial);
    hc_unlock(st->lock);
    if (serial[0] != '\0')
        return CKR_OK;
    rv = list_partitions(slot->server, &list, &n);
    if (rv != CKR_OK)
        return rv == CKR_SLOT_ID_INVALID ? CKR_TOKEN_NOT_PRESENT : rv;
    found = find_partition(list, n, slot->partition);
    if (found != NULL) {
        hc_lock(st->lock);
        snprintf(slot->serial, sizeof slot->serial, "%s", found);
        hc_unlock(st->lock);
        snprintf(serial, len, "%s", found);
    } else {
        hc_log("server %s: partition '%s' is not assigned to this client", hc_server_name(slot->server),
               slot->partition);
    }
    free(list);
    return found != NULL ? CKR_OK : CKR_TOKEN_NOT_PRESENT;
}

void hc_slots_present(hc_state *st, int *present)
{
    for (size_t i = 0; i < st->nslots; i++)
        present[i] = -1; /* not asked yet */
    for (size_t i = 0; i < st->nslots; i++) {
        partition_entry *list = NULL;
        size_t n = 0;
        hc_server *s = st->slots[i].server;
        if (present[i] != -1)
            continue;
        CK_RV rv = list_partitions(s, &list, &n);
        for (size_t j = i; j < st->nslots; j++) {
            if (st->slots[j].server != s)
                continue;
            const char *found = rv == CKR_OK ? find_partition(list, n, st->slots[j].partition) : NULL;
            present[j] = found != NULL;
            if (found != NULL) {
                hc_lock(st->lock);
                snprintf(st->slots[j].serial, sizeof st->slots[j].serial, "%s", found);
                hc_unlock(st->lock);
            }
        }
        free(list);
    }
}

/* ---- sessions ---- */

static size_t bucket_of(CK_SESSION_HANDLE h)
{
    return (size_t)(h % SESSION_BUCKETS);
}

CK_RV hc_session_add(hc_state *st, CK_SLOT_ID slot, CK_ULONG remote, unsigned long epoch,
                     CK_SESSION_HANDLE *handle)
{
    hc_session *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CKR_HOST_MEMORY;
    e->slot = slot;
    e->remote = remote;
    e->epoch = epoch;
    e->server = st->slots[slot].server;
    e->handle = hc_handle_new(st);
    hc_lock(st->lock);
    e->next = st->buckets[bucket_of(e->handle)];
    st->buckets[bucket_of(e->handle)] = e;
    st->nsessions++;
    hc_unlock(st->lock);
    *handle = e->handle;
    return CKR_OK;
}

static hc_session *unlink_locked(hc_state *st, CK_SESSION_HANDLE h)
{
    hc_session **pp = &st->buckets[bucket_of(h)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->handle == h) {
            hc_session *e = *pp;
            *pp = e->next;
            st->nsessions--;
            return e;
        }
    }
    return NULL;
}

CK_RV hc_session_find(hc_state *st, CK_SESSION_HANDLE handle, hc_sessref *ref)
{
    hc_session *e;
    hc_server *server = NULL;
    unsigned long epoch = 0;

    hc_lock(st->lock);
    for (e = st->buckets[bucket_of(handle)]; e != NULL; e = e->next)
        if (e->handle == handle)
            break;
    if (e != NULL) {
        ref->handle = handle;
        ref->slot = e->slot;
        ref->server = server = e->server;
        ref->remote = e->remote;
        ref->epoch = epoch = e->epoch;
    }
    hc_unlock(st->lock);
    if (e == NULL)
        return CKR_SESSION_HANDLE_INVALID;
    if (hc_server_epoch(server) != epoch) {
        hc_session_remove(st, handle); /* the appliance ended it with our last connection */
        return CKR_SESSION_HANDLE_INVALID;
    }
    return CKR_OK;
}

void hc_session_remove(hc_state *st, CK_SESSION_HANDLE handle)
{
    hc_session *e;
    hc_lock(st->lock);
    e = unlink_locked(st, handle);
    hc_unlock(st->lock);
    free(e);
}

void hc_sessions_remove_slot(hc_state *st, CK_SLOT_ID slot)
{
    hc_session *gone = NULL;
    hc_lock(st->lock);
    for (size_t b = 0; b < SESSION_BUCKETS; b++) {
        hc_session **pp = &st->buckets[b];
        while (*pp != NULL) {
            hc_session *e = *pp;
            if (e->slot == slot) {
                *pp = e->next;
                e->next = gone;
                gone = e;
                st->nsessions--;
            } else {
                pp = &e->next;
            }
        }
    }
    hc_unlock(st->lock);
    while (gone != NULL) {
        hc_session *next = gone->next;
        free(gone);
        gone = next;
    }
}

size_t hc_session_count(hc_state *st)
{
    size_t n;
    hc_lock(st->lock);
    n = st->nsessions;
    hc_unlock(st->lock);
    return n;
}
