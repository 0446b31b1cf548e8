/* The PKCS#11 entry points. Each C_* function checks what it can locally (initialization, NULL
 * pointers, handles), then forwards the call as one NTLS request to the appliance that holds the
 * slot or session, and copies the answer into the caller's structures. */

/* The prototypes in pkcs11.h are the only symbols this library exports. */
#pragma GCC visibility push(default)
#include "pkcs11.h"
#pragma GCC visibility pop

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha.h"
#include "log.h"
#include "state.h"
#include "transport.h"
#include "wire.h"
#include "kdfparams.h"

#define LIBRARY_MANUFACTURER "hsmcloud"
#define LIBRARY_DESCRIPTION "hsmcloud NTLS PKCS#11 library"
#define LIBRARY_VERSION_MAJOR 0
#define LIBRARY_VERSION_MINOR 1

/* ---- helpers ---- */

static void pad(CK_UTF8CHAR *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    memset(dst, ' ', n);
    memcpy(dst, src, len < n ? len : n);
}

/* One request on behalf of a session or a slot. */
typedef struct op {
    hc_state *st;
    hc_sessref s;  /* session calls */
    hc_slot *slot; /* slot calls */
    hc_server *server;
    hc_buf req;
    hc_response resp;
    unsigned long epoch;
} op_t;

static CK_RV session_begin(op_t *op, hc_state *st, CK_SESSION_HANDLE h, uint16_t opcode)
{
    CK_RV rv;
    memset(op, 0, sizeof *op);
    op->st = st;
    rv = hc_session_find(st, h, &op->s);
    if (rv != CKR_OK)
        return rv;
    op->server = op->s.server;
    hc_buf_init(&op->req);
    hc_put_u16(&op->req, opcode);
    hc_put_u64(&op->req, op->s.remote);
    return CKR_OK;
}

/* The appliance's rv for a session request (response fields in op->resp.r). */
static CK_RV session_send(op_t *op)
{
    CK_RV rv = hc_call(op->server, &op->req, &op->resp, 0, op->s.epoch, NULL);
    if (rv == CKR_SESSION_HANDLE_INVALID) { /* its connections were lost before we could send */
        hc_session_remove(op->st, op->s.handle);
        return rv;
    }
    if (rv != CKR_OK)
        return rv;
    rv = op->resp.rv;
    if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED)
        hc_session_remove(op->st, op->s.handle); /* the appliance ended it (e.g. zeroized) */
    return rv;
}

static CK_RV slot_begin(op_t *op, hc_state *st, CK_SLOT_ID id, uint16_t opcode)
{
    char serial[64];
    CK_RV rv;
    memset(op, 0, sizeof *op);
    op->st = st;
    rv = hc_slot_get(st, id, &op->slot);
    if (rv != CKR_OK)
        return rv;
    op->server = op->slot->server;
    rv = hc_slot_serial(st, op->slot, serial, sizeof serial);
    if (rv != CKR_OK)
        return rv;
    hc_buf_init(&op->req);
    hc_put_u16(&op->req, opcode);
    hc_put_string(&op->req, serial);
    return CKR_OK;
}

static CK_RV slot_send(op_t *op, unsigned flags)
{
    CK_RV rv = hc_call(op->server, &op->req, &op->resp, flags, 0, &op->epoch);
    if (rv != CKR_OK)
        return rv;
    rv = op->resp.rv;
    /* The slot is configured, so it exists: a partition the appliance no longer offers this
     * client (revoked) is a slot without a token. */
    if (rv == CKR_SLOT_ID_INVALID)
        rv = CKR_TOKEN_NOT_PRESENT;
    return rv;
}

static void op_end(op_t *op)
{
    hc_buf_free(&op->req);
    hc_response_free(&op->resp);
}

static CK_RV finish(const char *function, CK_RV rv)
{
    if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
        hc_log("%s -> 0x%lx", function, (unsigned long)rv);
    hc_leave();
    return rv;
}

#define ENTER()                        \
    hc_state *st;                      \
    CK_RV entered_rv = hc_enter(&st);  \
    if (entered_rv != CKR_OK)          \
        return entered_rv
#define LEAVE(expr) return finish(__func__, (expr))

/* A call on a virtual (HA) session: `hs` is the held session inside `expr`. */
#define HA_SESSION(h, expr)                                             \
    do {                                                                \
        ha_session *hs = ha_session_acquire(hc_state_ha(st), (h));      \
        if (hs != NULL) {                                               \
            CK_RV ha_rv_ = (expr);                                      \
            ha_session_release(hs);                                     \
            LEAVE(ha_rv_);                                              \
        }                                                               \
    } while (0)
/* A call on an HA virtual slot: `hg` is the group inside `expr`. */
#define HA_SLOT(id, expr)                                               \
    do {                                                                \
        ha_group *hg = hc_slot_group(st, (id));                         \
        if (hg != NULL)                                                 \
            LEAVE(expr);                                                \
    } while (0)

/* A session request whose answer carries nothing but rv. */
#define SIMPLE_SESSION_CALL(h, opcode, put_fields)          \
    do {                                                    \
        op_t op;                                            \
        CK_RV rv_ = session_begin(&op, st, (h), (opcode));  \
        if (rv_ == CKR_OK) {                                \
            put_fields;                                     \
            rv_ = session_send(&op);                        \
        }                                                   \
        op_end(&op);                                        \
        LEAVE(rv_);                                         \
    } while (0)

/* ---- general purpose ---- */

static CK_FUNCTION_LIST function_list;
static CK_FUNCTION_LIST_3_0 function_list_3_0;

CK_RV C_Initialize(CK_VOID_PTR pInitArgs)
{
    return hc_initialize(pInitArgs);
}

CK_RV C_Finalize(CK_VOID_PTR pReserved)
{
    return hc_finalize(pReserved);
}

static CK_RV get_info(CK_INFO_PTR pInfo, CK_BYTE major, CK_BYTE minor)
{
    if (pInfo == NULL)
        return CKR_ARGUMENTS_BAD;
    memset(pInfo, 0, sizeof *pInfo);
    pInfo->cryptokiVersion.major = major;
    pInfo->cryptokiVersion.minor = minor;
    pad(pInfo->manufacturerID, sizeof pInfo->manufacturerID, LIBRARY_MANUFACTURER);
    pad(pInfo->libraryDescription, sizeof pInfo->libraryDescription, LIBRARY_DESCRIPTION);
    pInfo->libraryVersion.major = LIBRARY_VERSION_MAJOR;
    pInfo->libraryVersion.minor = LIBRARY_VERSION_MINOR;
    return CKR_OK;
}

CK_RV C_GetInfo(CK_INFO_PTR pInfo)
{
    ENTER();
    (void)st;
    LEAVE(get_info(pInfo, 2, 40));
}

/* C_GetInfo as the 3.0 interface reports it. */
static CK_RV get_info_3_0(CK_INFO_PTR pInfo)
{
    ENTER();
    (void)st;
    LEAVE(get_info(pInfo, 3, 0));
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
    if (ppFunctionList == NULL)
        return CKR_ARGUMENTS_BAD;
    *ppFunctionList = &function_list;
    return CKR_OK;
}

static CK_INTERFACE interfaces[] = {
    {(CK_CHAR *)"PKCS 11", &function_list_3_0, 0},
    {(CK_CHAR *)"PKCS 11", &function_list, 0},
};
#define INTERFACE_COUNT (sizeof interfaces / sizeof interfaces[0])

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
    if (pulCount == NULL)
        return CKR_ARGUMENTS_BAD;
    if (pInterfacesList == NULL) {
        *pulCount = INTERFACE_COUNT;
        return CKR_OK;
    }
    if (*pulCount < INTERFACE_COUNT) {
        *pulCount = INTERFACE_COUNT;
        return CKR_BUFFER_TOO_SMALL;
    }
    memcpy(pInterfacesList, interfaces, sizeof interfaces);
    *pulCount = INTERFACE_COUNT;
    return CKR_OK;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion, CK_INTERFACE_PTR_PTR ppInterface,
                     CK_FLAGS flags)
{
    if (ppInterface == NULL)
        return CKR_ARGUMENTS_BAD;
    for (size_t i = 0; i < INTERFACE_COUNT; i++) {
        const CK_VERSION *v = (const CK_VERSION *)interfaces[i].pFunctionList; /* each list starts with it */
        if (pInterfaceName != NULL && strcmp((const char *)pInterfaceName, (const char *)interfaces[i].pInterfaceName) != 0)
            continue;
        if (pVersion != NULL && (pVersion->major != v->major || pVersion->minor != v->minor))
            continue;
        if ((interfaces[i].flags & flags) != flags)
            continue;
        *ppInterface = &interfaces[i];
        return CKR_OK;
    }
    *ppInterface = NULL;
    return CKR_ARGUMENTS_BAD;
}

/* ---- slots and tokens ---- */

CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount)
{
    ENTER();
    size_t nphys = hc_slot_count(st), ngroups = ha_group_count(hc_state_ha(st)), found = 0;
    size_t first = hc_ha_only(st) ? 0 : nphys, n = first + ngroups;
    int *present;
    CK_RV rv = CKR_OK;

    if (pulCount == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    present = calloc(n > 0 ? n : 1, sizeof *present);
    if (present == NULL)
        LEAVE(CKR_HOST_MEMORY);
    if (tokenPresent) {
        if (first > 0)
            hc_slots_present(st, present);
        for (size_t i = 0; i < ngroups; i++)
            present[first + i] = ha_slot_present(hc_slot_group(st, first + i)) == CKR_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (!tokenPresent || present[i])
            found++;
    if (pSlotList != NULL && *pulCount < found) {
        rv = CKR_BUFFER_TOO_SMALL;
    } else if (pSlotList != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!tokenPresent || present[i])
                pSlotList[k++] = (CK_SLOT_ID)i;
    }
    *pulCount = found;
    free(present);
    LEAVE(rv);
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
    ENTER();
    op_t op;
    CK_RV rv;
    hc_slot *slot;

    if (pInfo == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SLOT(slotID, ha_get_slot_info(hg, pInfo));
    rv = hc_slot_get(st, slotID, &slot);
    if (rv != CKR_OK)
        LEAVE(rv);
    rv = slot_begin(&op, st, slotID, OP_GET_SLOT_INFO);
    if (rv == CKR_OK)
        rv = slot_send(&op, HC_CALL_IDEMPOTENT);
    memset(pInfo, 0, sizeof *pInfo);
    if (rv == CKR_OK) {
        char description[256], manufacturer[256];
        hc_reader *r = &op.resp.r;
        hc_get_string(r, description, sizeof description);
        hc_get_string(r, manufacturer, sizeof manufacturer);
        pInfo->flags = (CK_FLAGS)hc_get_u64(r);
        pInfo->hardwareVersion.major = hc_get_u8(r);
        pInfo->hardwareVersion.minor = hc_get_u8(r);
        pInfo->firmwareVersion.major = hc_get_u8(r);
        pInfo->firmwareVersion.minor = hc_get_u8(r);
        if (r->failed) {
            rv = CKR_DEVICE_ERROR;
        } else {
            pad(pInfo->slotDescription, sizeof pInfo->slotDescription, description);
            pad(pInfo->manufacturerID, sizeof pInfo->manufacturerID, manufacturer);
            /* the token can go away (appliance down, assignment revoked) */
            pInfo->flags |= CKF_REMOVABLE_DEVICE;
        }
    }
    op_end(&op);
    if (rv != CKR_OK) {
        /* The slot exists whatever the appliance says: describe it without a token. */
        char description[256];
        snprintf(description, sizeof description, "hsmcloud %s partition %s", hc_server_name(slot->server),
                 slot->partition);
        memset(pInfo, 0, sizeof *pInfo);
        pad(pInfo->slotDescription, sizeof pInfo->slotDescription, description);
        pad(pInfo->manufacturerID, sizeof pInfo->manufacturerID, LIBRARY_MANUFACTURER);
        pInfo->flags = CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
    }
    LEAVE(CKR_OK);
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
    ENTER();
    op_t op;
    CK_RV rv;

    if (pInfo == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SLOT(slotID, ha_get_token_info(hg, pInfo));
    rv = slot_begin(&op, st, slotID, OP_GET_TOKEN_INFO);
    if (rv == CKR_OK)
        rv = slot_send(&op, HC_CALL_IDEMPOTENT);
    if (rv == CKR_OK) {
        CK_TOKEN_INFO info;
        hc_reader *r = &op.resp.r;
        hc_get_token_info(r, &info);
        if (r->failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pInfo = info;
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount)
{
    ENTER();
    op_t op;
    CK_RV rv;

    if (pulCount == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SLOT(slotID, ha_get_mechanism_list(hg, pMechanismList, pulCount));
    rv = slot_begin(&op, st, slotID, OP_GET_MECHANISM_LIST);
    if (rv == CKR_OK)
        rv = slot_send(&op, HC_CALL_IDEMPOTENT);
    if (rv == CKR_OK) {
        uint32_t n = hc_get_u32(&op.resp.r);
        if (op.resp.r.failed || (size_t)n * 8 > op.resp.r.left) {
            rv = CKR_DEVICE_ERROR;
        } else if (pMechanismList == NULL) {
            *pulCount = n;
        } else if (*pulCount < n) {
            *pulCount = n;
            rv = CKR_BUFFER_TOO_SMALL;
        } else {
            for (uint32_t i = 0; i < n; i++)
                pMechanismList[i] = (CK_MECHANISM_TYPE)hc_get_u64(&op.resp.r);
            *pulCount = n;
        }
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo)
{
    ENTER();
    op_t op;
    CK_RV rv;

    if (pInfo == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SLOT(slotID, ha_get_mechanism_info(hg, type, pInfo));
    rv = slot_begin(&op, st, slotID, OP_GET_MECHANISM_INFO);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, type);
        rv = slot_send(&op, HC_CALL_IDEMPOTENT);
    }
    if (rv == CKR_OK) {
        CK_MECHANISM_INFO info;
        info.ulMinKeySize = (CK_ULONG)hc_get_u64(&op.resp.r);
        info.ulMaxKeySize = (CK_ULONG)hc_get_u64(&op.resp.r);
        info.flags = (CK_FLAGS)hc_get_u64(&op.resp.r);
        if (op.resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pInfo = info;
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel)
{
    ENTER();
    op_t op;
    CK_RV rv;

    if (pLabel == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    /* no administration through the virtual slot (as on the real device): initialize members */
    HA_SLOT(slotID, ((void)hg, CKR_FUNCTION_NOT_SUPPORTED));
    rv = slot_begin(&op, st, slotID, OP_INIT_TOKEN);
    if (rv == CKR_OK) {
        hc_put_opt_bytes(&op.req, pPin, ulPinLen);
        hc_put_bytes(&op.req, pLabel, 32);
        rv = slot_send(&op, 0);
    }
    op_end(&op);
    LEAVE(rv);
}

/* ---- sessions ---- */

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                    CK_SESSION_HANDLE_PTR phSession)
{
    ENTER();
    op_t op;
    CK_RV rv;
    hc_slot *slot;

    (void)pApplication;
    (void)Notify; /* the appliance sends no notifications */
    if (phSession == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    if (hc_slot_group(st, slotID) != NULL && !(flags & CKF_SERIAL_SESSION))
        LEAVE(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    HA_SLOT(slotID, ha_open_session(hg, flags, phSession));
    rv = hc_slot_get(st, slotID, &slot);
    if (rv != CKR_OK)
        LEAVE(rv);
    if (!(flags & CKF_SERIAL_SESSION))
        LEAVE(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    rv = slot_begin(&op, st, slotID, OP_OPEN_SESSION);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, flags);
        rv = slot_send(&op, 0);
    }
    if (rv == CKR_OK) {
        CK_ULONG remote = (CK_ULONG)hc_get_u64(&op.resp.r);
        if (op.resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            rv = hc_session_add(st, slotID, remote, op.epoch, phSession);
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession)
{
    ENTER();
    op_t op;
    HA_SESSION(hSession, ha_close_session(hs));
    CK_RV rv = session_begin(&op, st, hSession, OP_CLOSE_SESSION);
    if (rv == CKR_OK) {
        rv = session_send(&op);
        hc_session_remove(st, hSession); /* whatever the answer: the application is done with it */
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID)
{
    ENTER();
    op_t op;
    hc_slot *slot;
    HA_SLOT(slotID, ha_close_all_sessions(hg));
    CK_RV rv = hc_slot_get(st, slotID, &slot);
    if (rv != CKR_OK)
        LEAVE(rv);
    hc_sessions_remove_slot(st, slotID);
    rv = slot_begin(&op, st, slotID, OP_CLOSE_ALL_SESSIONS);
    if (rv == CKR_OK)
        rv = slot_send(&op, 0);
    op_end(&op);
    if (rv == CKR_TOKEN_NOT_PRESENT)
        rv = CKR_OK; /* no token: no session of ours is left there */
    LEAVE(rv);
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo)
{
    ENTER();
    op_t op;
    CK_RV rv;

    if (pInfo == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_get_session_info(hs, pInfo));
    rv = session_begin(&op, st, hSession, OP_GET_SESSION_INFO);
    if (rv == CKR_OK)
        rv = session_send(&op);
    if (rv == CKR_OK) {
        CK_SESSION_INFO info;
        info.slotID = op.s.slot;
        info.state = (CK_STATE)hc_get_u64(&op.resp.r);
        info.flags = (CK_FLAGS)hc_get_u64(&op.resp.r);
        info.ulDeviceError = (CK_ULONG)hc_get_u64(&op.resp.r);
        if (op.resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pInfo = info;
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_GetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,
                          CK_ULONG_PTR pulOperationStateLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pOperationState, (void)pulOperationStateLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen,
                          CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey)
{
    ENTER();
    (void)st, (void)hSession, (void)pOperationState, (void)ulOperationStateLen, (void)hEncryptionKey,
        (void)hAuthenticationKey;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
    ENTER();
    HA_SESSION(hSession, ha_init_pin(hs, pPin, ulPinLen));
    SIMPLE_SESSION_CALL(hSession, OP_INIT_PIN, {
        hc_put_opt_bytes(&op.req, pPin, ulPinLen);
    });
}

CK_RV C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin,
               CK_ULONG ulNewLen)
{
    ENTER();
    HA_SESSION(hSession, ha_set_pin(hs, pOldPin, ulOldLen, pNewPin, ulNewLen));
    SIMPLE_SESSION_CALL(hSession, OP_SET_PIN, {
        hc_put_opt_bytes(&op.req, pOldPin, ulOldLen);
        hc_put_opt_bytes(&op.req, pNewPin, ulNewLen);
    });
}

CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
    ENTER();
    HA_SESSION(hSession, ha_login(hs, userType, pPin, ulPinLen));
    SIMPLE_SESSION_CALL(hSession, OP_LOGIN, {
        hc_put_u64(&op.req, userType);
        hc_put_opt_bytes(&op.req, pPin, ulPinLen);
    });
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession)
{
    ENTER();
    HA_SESSION(hSession, ha_logout(hs));
    SIMPLE_SESSION_CALL(hSession, OP_LOGOUT, {});
}

/* ---- objects ---- */

/* Sends a request whose answer is one object handle. */
static CK_RV object_answer(op_t *op, CK_OBJECT_HANDLE_PTR ph)
{
    CK_RV rv = session_send(op);
    if (rv == CKR_OK) {
        CK_OBJECT_HANDLE h = (CK_OBJECT_HANDLE)hc_get_u64(&op->resp.r);
        if (op->resp.r.failed)
            return CKR_DEVICE_ERROR;
        *ph = h;
    }
    return rv;
}

CK_RV C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                     CK_OBJECT_HANDLE_PTR phObject)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (phObject == NULL || (pTemplate == NULL && ulCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_create_object(hs, pTemplate, ulCount, phObject));
    rv = session_begin(&op, st, hSession, OP_CREATE_OBJECT);
    if (rv == CKR_OK) {
        rv = hc_put_template(&op.req, pTemplate, ulCount);
    }
    if (rv == CKR_OK)
        rv = object_answer(&op, phObject);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_CopyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                   CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (phNewObject == NULL || (pTemplate == NULL && ulCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_copy_object(hs, hObject, pTemplate, ulCount, phNewObject));
    rv = session_begin(&op, st, hSession, OP_COPY_OBJECT);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hObject);
        rv = hc_put_template(&op.req, pTemplate, ulCount);
    }
    if (rv == CKR_OK)
        rv = object_answer(&op, phNewObject);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject)
{
    ENTER();
    HA_SESSION(hSession, ha_destroy_object(hs, hObject));
    SIMPLE_SESSION_CALL(hSession, OP_DESTROY_OBJECT, hc_put_u64(&op.req, hObject));
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pulSize == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_get_object_size(hs, hObject, pulSize));
    rv = session_begin(&op, st, hSession, OP_GET_OBJECT_SIZE);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hObject);
        rv = session_send(&op);
    }
    if (rv == CKR_OK) {
        CK_ULONG size = (CK_ULONG)hc_get_u64(&op.resp.r);
        if (op.resp.r.failed)
            rv = CKR_DEVICE_ERROR;
        else
            *pulSize = size;
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                          CK_ULONG ulCount)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pTemplate == NULL && ulCount > 0)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_get_attribute_value(hs, hObject, pTemplate, ulCount));
    rv = session_begin(&op, st, hSession, OP_GET_ATTRIBUTE_VALUE);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hObject);
        hc_put_get_template(&op.req, pTemplate, ulCount);
        rv = session_send(&op);
    }
    if (rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
        rv == CKR_BUFFER_TOO_SMALL) {
        if (op.resp.data != NULL)
            rv = hc_read_attribute_results(&op.resp.r, rv, pTemplate, ulCount);
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                          CK_ULONG ulCount)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pTemplate == NULL && ulCount > 0)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_set_attribute_value(hs, hObject, pTemplate, ulCount));
    rv = session_begin(&op, st, hSession, OP_SET_ATTRIBUTE_VALUE);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hObject);
        rv = hc_put_template(&op.req, pTemplate, ulCount);
    }
    if (rv == CKR_OK)
        rv = session_send(&op);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pTemplate == NULL && ulCount > 0)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_find_objects_init(hs, pTemplate, ulCount));
    rv = session_begin(&op, st, hSession, OP_FIND_OBJECTS_INIT);
    if (rv == CKR_OK)
        rv = hc_put_template(&op.req, pTemplate, ulCount);
    if (rv == CKR_OK)
        rv = session_send(&op);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount,
                    CK_ULONG_PTR pulObjectCount)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pulObjectCount == NULL || (phObject == NULL && ulMaxObjectCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_find_objects(hs, phObject, ulMaxObjectCount, pulObjectCount));
    rv = session_begin(&op, st, hSession, OP_FIND_OBJECTS);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, ulMaxObjectCount);
        rv = session_send(&op);
    }
    if (rv == CKR_OK) {
        uint32_t n = hc_get_u32(&op.resp.r);
        if (op.resp.r.failed || n > ulMaxObjectCount || (size_t)n * 8 > op.resp.r.left) {
            rv = CKR_DEVICE_ERROR;
        } else {
            for (uint32_t i = 0; i < n; i++)
                phObject[i] = (CK_OBJECT_HANDLE)hc_get_u64(&op.resp.r);
            *pulObjectCount = n;
        }
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession)
{
    ENTER();
    HA_SESSION(hSession, ha_find_objects_final(hs));
    SIMPLE_SESSION_CALL(hSession, OP_FIND_OBJECTS_FINAL, {});
}

/* ---- cryptographic operations ---- */

/* Which part of an operation an opcode is (HA: single-part and final calls end it). */
static enum ha_op_kind op_kind(uint16_t opcode)
{
    switch (opcode) {
    case OP_ENCRYPT_UPDATE:
    case OP_DECRYPT_UPDATE:
    case OP_DIGEST_UPDATE:
    case OP_SIGN_UPDATE:
    case OP_VERIFY_UPDATE:
        return HA_UPDATE;
    case OP_ENCRYPT_FINAL:
    case OP_DECRYPT_FINAL:
    case OP_DIGEST_FINAL:
    case OP_SIGN_FINAL:
    case OP_VERIFY_FINAL:
        return HA_FINAL;
    default:
        return HA_SINGLE;
    }
}

/* XxxInit(session, mechanism[, key]) */
static CK_RV init_call(hc_state *st, CK_SESSION_HANDLE h, uint16_t opcode, CK_MECHANISM_PTR m, int with_key,
                       CK_OBJECT_HANDLE key)
{
    op_t op;
    CK_RV rv;
    ha_session *hs = ha_session_acquire(hc_state_ha(st), h);
    if (hs != NULL) {
        rv = ha_op_init(hs, opcode, m, with_key, key);
        ha_session_release(hs);
        return rv;
    }
    rv = session_begin(&op, st, h, opcode);
    if (rv == CKR_OK)
        rv = m != NULL ? hc_put_mechanism(&op.req, m) : hc_put_cancel(&op.req);
    if (rv == CKR_OK) {
        if (with_key)
            hc_put_u64(&op.req, key);
        rv = session_send(&op);
    }
    op_end(&op);
    return rv;
}

/* A call that sends data (or nothing: has_data 0) and returns output into the caller's buffer. */
static CK_RV output_call(hc_state *st, CK_SESSION_HANDLE h, uint16_t opcode, int has_data, CK_BYTE_PTR data,
                         CK_ULONG data_len, CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
    op_t op;
    CK_RV rv;
    if (out_len == NULL || (has_data && data == NULL && data_len > 0))
        return CKR_ARGUMENTS_BAD;
    ha_session *hs = ha_session_acquire(hc_state_ha(st), h);
    if (hs != NULL) {
        enum ha_op_kind kind = op_kind(opcode);
        rv = ha_op_call(hs, opcode, kind, has_data, data, data_len, 0, NULL, 0, out, out_len);
        ha_session_release(hs);
        return rv;
    }
    rv = session_begin(&op, st, h, opcode);
    if (rv == CKR_OK) {
        if (has_data)
            hc_put_bytes(&op.req, data, data_len);
        hc_put_outbuf(&op.req, out, *out_len);
        rv = session_send(&op);
        if (op.resp.data != NULL)
            rv = hc_read_output(&op.resp.r, rv, out, out_len);
    }
    op_end(&op);
    return rv;
}

/* A call that sends data and gets nothing back but rv. */
static CK_RV data_call(hc_state *st, CK_SESSION_HANDLE h, uint16_t opcode, CK_BYTE_PTR data, CK_ULONG len)
{
    op_t op;
    CK_RV rv;
    if (data == NULL && len > 0)
        return CKR_ARGUMENTS_BAD;
    ha_session *hs = ha_session_acquire(hc_state_ha(st), h);
    if (hs != NULL) {
        if (opcode == OP_SEED_RANDOM)
            rv = ha_seed_random(hs, data, len);
        else
            rv = ha_op_call(hs, opcode, op_kind(opcode), 1, data, len, 0, NULL, 0, NULL, NULL);
        ha_session_release(hs);
        return rv;
    }
    rv = session_begin(&op, st, h, opcode);
    if (rv == CKR_OK) {
        hc_put_bytes(&op.req, data, len);
        rv = session_send(&op);
    }
    op_end(&op);
    return rv;
}

CK_RV C_EncryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    LEAVE(init_call(st, hSession, OP_ENCRYPT_INIT, pMechanism, 1, hKey));
}

CK_RV C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData,
                CK_ULONG_PTR pulEncryptedDataLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_ENCRYPT, 1, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen));
}

CK_RV C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart,
                      CK_ULONG_PTR pulEncryptedPartLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_ENCRYPT_UPDATE, 1, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen));
}

CK_RV C_EncryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart, CK_ULONG_PTR pulLastEncryptedPartLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_ENCRYPT_FINAL, 0, NULL, 0, pLastEncryptedPart, pulLastEncryptedPartLen));
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    LEAVE(init_call(st, hSession, OP_DECRYPT_INIT, pMechanism, 1, hKey));
}

CK_RV C_Decrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen, CK_BYTE_PTR pData,
                CK_ULONG_PTR pulDataLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_DECRYPT, 1, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen));
}

CK_RV C_DecryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                      CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_DECRYPT_UPDATE, 1, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen));
}

CK_RV C_DecryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_DECRYPT_FINAL, 0, NULL, 0, pLastPart, pulLastPartLen));
}

CK_RV C_DigestInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism)
{
    ENTER();
    LEAVE(init_call(st, hSession, OP_DIGEST_INIT, pMechanism, 0, 0));
}

CK_RV C_Digest(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
               CK_ULONG_PTR pulDigestLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_DIGEST, 1, pData, ulDataLen, pDigest, pulDigestLen));
}

CK_RV C_DigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
    ENTER();
    LEAVE(data_call(st, hSession, OP_DIGEST_UPDATE, pPart, ulPartLen));
}

CK_RV C_DigestKey(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    HA_SESSION(hSession, ha_digest_key(hs, hKey));
    SIMPLE_SESSION_CALL(hSession, OP_DIGEST_KEY, hc_put_u64(&op.req, hKey));
}

CK_RV C_DigestFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_DIGEST_FINAL, 0, NULL, 0, pDigest, pulDigestLen));
}

CK_RV C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    LEAVE(init_call(st, hSession, OP_SIGN_INIT, pMechanism, 1, hKey));
}

CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
             CK_ULONG_PTR pulSignatureLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_SIGN, 1, pData, ulDataLen, pSignature, pulSignatureLen));
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
    ENTER();
    LEAVE(data_call(st, hSession, OP_SIGN_UPDATE, pPart, ulPartLen));
}

CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
    ENTER();
    LEAVE(output_call(st, hSession, OP_SIGN_FINAL, 0, NULL, 0, pSignature, pulSignatureLen));
}

CK_RV C_SignRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    (void)st, (void)hSession, (void)pMechanism, (void)hKey;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                    CK_ULONG_PTR pulSignatureLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pData, (void)ulDataLen, (void)pSignature, (void)pulSignatureLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    LEAVE(init_call(st, hSession, OP_VERIFY_INIT, pMechanism, 1, hKey));
}

CK_RV C_Verify(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
               CK_ULONG ulSignatureLen)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if ((pData == NULL && ulDataLen > 0) || (pSignature == NULL && ulSignatureLen > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_op_call(hs, OP_VERIFY, HA_SINGLE, 1, pData, ulDataLen, 1, pSignature, ulSignatureLen,
                                    NULL, NULL));
    rv = session_begin(&op, st, hSession, OP_VERIFY);
    if (rv == CKR_OK) {
        hc_put_bytes(&op.req, pData, ulDataLen);
        hc_put_bytes(&op.req, pSignature, ulSignatureLen);
        rv = session_send(&op);
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_VerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
    ENTER();
    LEAVE(data_call(st, hSession, OP_VERIFY_UPDATE, pPart, ulPartLen));
}

CK_RV C_VerifyFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
    ENTER();
    LEAVE(data_call(st, hSession, OP_VERIFY_FINAL, pSignature, ulSignatureLen));
}

CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
    ENTER();
    (void)st, (void)hSession, (void)pMechanism, (void)hKey;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_VerifyRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen, CK_BYTE_PTR pData,
                      CK_ULONG_PTR pulDataLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pSignature, (void)ulSignatureLen, (void)pData, (void)pulDataLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

/* Dual-function operations: not offered (no mechanism of the appliance runs two at once). */
#define DUAL_FUNCTION(name)                                                                             \
    CK_RV name(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pIn, CK_ULONG ulInLen, CK_BYTE_PTR pOut,          \
               CK_ULONG_PTR pulOutLen)                                                                  \
    {                                                                                                   \
        ENTER();                                                                                        \
        (void)st, (void)hSession, (void)pIn, (void)ulInLen, (void)pOut, (void)pulOutLen;                \
        LEAVE(CKR_FUNCTION_NOT_SUPPORTED);                                                              \
    }
DUAL_FUNCTION(C_DigestEncryptUpdate)
DUAL_FUNCTION(C_DecryptDigestUpdate)
DUAL_FUNCTION(C_SignEncryptUpdate)
DUAL_FUNCTION(C_DecryptVerifyUpdate)

/* ---- keys ---- */

CK_RV C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,
                    CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pMechanism == NULL || phKey == NULL || (pTemplate == NULL && ulCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_generate_key(hs, pMechanism, pTemplate, ulCount, phKey));
    rv = session_begin(&op, st, hSession, OP_GENERATE_KEY);
    if (rv == CKR_OK)
        rv = hc_put_mechanism(&op.req, pMechanism);
    if (rv == CKR_OK)
        rv = hc_put_template(&op.req, pTemplate, ulCount);
    if (rv == CKR_OK)
        rv = object_answer(&op, phKey);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pPublicKeyTemplate,
                        CK_ULONG ulPublicKeyAttributeCount, CK_ATTRIBUTE_PTR pPrivateKeyTemplate,
                        CK_ULONG ulPrivateKeyAttributeCount, CK_OBJECT_HANDLE_PTR phPublicKey,
                        CK_OBJECT_HANDLE_PTR phPrivateKey)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pMechanism == NULL || phPublicKey == NULL || phPrivateKey == NULL ||
        (pPublicKeyTemplate == NULL && ulPublicKeyAttributeCount > 0) ||
        (pPrivateKeyTemplate == NULL && ulPrivateKeyAttributeCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_generate_key_pair(hs, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount,
                                              pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey,
                                              phPrivateKey));
    rv = session_begin(&op, st, hSession, OP_GENERATE_KEY_PAIR);
    if (rv == CKR_OK)
        rv = hc_put_mechanism(&op.req, pMechanism);
    if (rv == CKR_OK)
        rv = hc_put_template(&op.req, pPublicKeyTemplate, ulPublicKeyAttributeCount);
    if (rv == CKR_OK)
        rv = hc_put_template(&op.req, pPrivateKeyTemplate, ulPrivateKeyAttributeCount);
    if (rv == CKR_OK)
        rv = session_send(&op);
    if (rv == CKR_OK) {
        CK_OBJECT_HANDLE pub = (CK_OBJECT_HANDLE)hc_get_u64(&op.resp.r);
        CK_OBJECT_HANDLE priv = (CK_OBJECT_HANDLE)hc_get_u64(&op.resp.r);
        if (op.resp.r.failed) {
            rv = CKR_DEVICE_ERROR;
        } else {
            *phPublicKey = pub;
            *phPrivateKey = priv;
        }
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_WrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey,
                CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pMechanism == NULL || pulWrappedKeyLen == NULL)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_wrap_key(hs, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen));
    rv = session_begin(&op, st, hSession, OP_WRAP_KEY);
    if (rv == CKR_OK)
        rv = hc_put_mechanism(&op.req, pMechanism);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hWrappingKey);
        hc_put_u64(&op.req, hKey);
        hc_put_outbuf(&op.req, pWrappedKey, *pulWrappedKeyLen);
        rv = session_send(&op);
        if (op.resp.data != NULL)
            rv = hc_read_output(&op.resp.r, rv, pWrappedKey, pulWrappedKeyLen);
    }
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_UnwrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hUnwrappingKey,
                  CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
                  CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pMechanism == NULL || phKey == NULL || (pWrappedKey == NULL && ulWrappedKeyLen > 0) ||
        (pTemplate == NULL && ulAttributeCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_unwrap_key(hs, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate,
                                       ulAttributeCount, phKey));
    rv = session_begin(&op, st, hSession, OP_UNWRAP_KEY);
    if (rv == CKR_OK)
        rv = hc_put_mechanism(&op.req, pMechanism);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hUnwrappingKey);
        hc_put_bytes(&op.req, pWrappedKey, ulWrappedKeyLen);
        rv = hc_put_template(&op.req, pTemplate, ulAttributeCount);
    }
    if (rv == CKR_OK)
        rv = object_answer(&op, phKey);
    op_end(&op);
    LEAVE(rv);
}

CK_RV C_DeriveKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey,
                  CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (pMechanism == NULL || phKey == NULL || (pTemplate == NULL && ulAttributeCount > 0))
        LEAVE(CKR_ARGUMENTS_BAD);
    CK_DERIVED_KEY *more; /* SP 800-108's additional derived keys */
    CK_ULONG n_more = hc_sp800_108_additional_keys(pMechanism, &more);
    /* a virtual slot derives one key per call (additional derived keys are not replicated) */
    HA_SESSION(hSession, n_more > 0 ? CKR_FUNCTION_NOT_SUPPORTED
                                    : ha_derive_key(hs, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey));
    rv = session_begin(&op, st, hSession, n_more > 0 ? OP_DERIVE_KEYS : OP_DERIVE_KEY);
    if (rv == CKR_OK)
        rv = hc_put_mechanism(&op.req, pMechanism);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, hBaseKey);
        rv = hc_put_template(&op.req, pTemplate, ulAttributeCount);
    }
    if (rv == CKR_OK)
        rv = object_answer(&op, phKey);
    if (rv == CKR_OK && n_more > 0)
        rv = hc_read_additional_keys(&op.resp.r, more, n_more);
    op_end(&op);
    LEAVE(rv);
}

/* ---- random numbers ---- */

CK_RV C_SeedRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen)
{
    ENTER();
    LEAVE(data_call(st, hSession, OP_SEED_RANDOM, pSeed, ulSeedLen));
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR RandomData, CK_ULONG ulRandomLen)
{
    ENTER();
    op_t op;
    CK_RV rv;
    if (RandomData == NULL && ulRandomLen > 0)
        LEAVE(CKR_ARGUMENTS_BAD);
    HA_SESSION(hSession, ha_generate_random(hs, RandomData, ulRandomLen));
    rv = session_begin(&op, st, hSession, OP_GENERATE_RANDOM);
    if (rv == CKR_OK) {
        hc_put_u64(&op.req, ulRandomLen);
        rv = session_send(&op);
    }
    if (rv == CKR_OK) {
        size_t n;
        const unsigned char *p = hc_get_bytes(&op.resp.r, &n);
        if (op.resp.r.failed || n != ulRandomLen)
            rv = CKR_DEVICE_ERROR;
        else if (n > 0)
            memcpy(RandomData, p, n);
    }
    op_end(&op);
    LEAVE(rv);
}

/* ---- legacy and events ---- */

CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession)
{
    ENTER();
    (void)st, (void)hSession;
    LEAVE(CKR_FUNCTION_NOT_PARALLEL);
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession)
{
    ENTER();
    (void)st, (void)hSession;
    LEAVE(CKR_FUNCTION_NOT_PARALLEL);
}

CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved)
{
    ENTER();
    (void)st, (void)flags, (void)pSlot, (void)pReserved;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

/* ---- PKCS#11 3.0 functions this library does not offer ---- */

CK_RV C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                  CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen)
{
    ENTER();
    (void)st, (void)hSession, (void)userType, (void)pPin, (void)ulPinLen, (void)pUsername, (void)ulUsernameLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags)
{
    ENTER();
    (void)st, (void)hSession, (void)flags;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

#define MESSAGE_INIT(name)                                                                              \
    CK_RV name(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)           \
    {                                                                                                   \
        ENTER();                                                                                        \
        (void)st, (void)hSession, (void)pMechanism, (void)hKey;                                         \
        LEAVE(CKR_FUNCTION_NOT_SUPPORTED);                                                              \
    }
#define MESSAGE_FINAL(name)                                                                             \
    CK_RV name(CK_SESSION_HANDLE hSession)                                                              \
    {                                                                                                   \
        ENTER();                                                                                        \
        (void)st, (void)hSession;                                                                       \
        LEAVE(CKR_FUNCTION_NOT_SUPPORTED);                                                              \
    }
MESSAGE_INIT(C_MessageEncryptInit)
MESSAGE_INIT(C_MessageDecryptInit)
MESSAGE_INIT(C_MessageSignInit)
MESSAGE_INIT(C_MessageVerifyInit)
MESSAGE_FINAL(C_MessageEncryptFinal)
MESSAGE_FINAL(C_MessageDecryptFinal)
MESSAGE_FINAL(C_MessageSignFinal)
MESSAGE_FINAL(C_MessageVerifyFinal)

CK_RV C_EncryptMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                       CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pPlaintext,
                       CK_ULONG ulPlaintextLen, CK_BYTE_PTR pCiphertext, CK_ULONG_PTR pulCiphertextLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pAssociatedData,
        (void)ulAssociatedDataLen, (void)pPlaintext, (void)ulPlaintextLen, (void)pCiphertext, (void)pulCiphertextLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_EncryptMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                            CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pAssociatedData,
        (void)ulAssociatedDataLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_EncryptMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                           CK_BYTE_PTR pPlaintextPart, CK_ULONG ulPlaintextPartLen, CK_BYTE_PTR pCiphertextPart,
                           CK_ULONG_PTR pulCiphertextPartLen, CK_FLAGS flags)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pPlaintextPart, (void)ulPlaintextPartLen,
        (void)pCiphertextPart, (void)pulCiphertextPartLen, (void)flags;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_DecryptMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                       CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pCiphertext,
                       CK_ULONG ulCiphertextLen, CK_BYTE_PTR pPlaintext, CK_ULONG_PTR pulPlaintextLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pAssociatedData,
        (void)ulAssociatedDataLen, (void)pCiphertext, (void)ulCiphertextLen, (void)pPlaintext, (void)pulPlaintextLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_DecryptMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                            CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pAssociatedData,
        (void)ulAssociatedDataLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_DecryptMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                           CK_BYTE_PTR pCiphertextPart, CK_ULONG ulCiphertextPartLen, CK_BYTE_PTR pPlaintextPart,
                           CK_ULONG_PTR pulPlaintextPartLen, CK_FLAGS flags)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pCiphertextPart,
        (void)ulCiphertextPartLen, (void)pPlaintextPart, (void)pulPlaintextPartLen, (void)flags;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SignMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                    CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pData, (void)ulDataLen, (void)pSignature,
        (void)pulSignatureLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SignMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_SignMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                        CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pData, (void)ulDataLen, (void)pSignature,
        (void)pulSignatureLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_VerifyMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                      CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pData, (void)ulDataLen, (void)pSignature,
        (void)ulSignatureLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_VerifyMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

CK_RV C_VerifyMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                          CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen)
{
    ENTER();
    (void)st, (void)hSession, (void)pParameter, (void)ulParameterLen, (void)pData, (void)ulDataLen, (void)pSignature,
        (void)ulSignatureLen;
    LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

/* ---- the function lists ---- */

#define LIST_ENTRY(name, args) .name = name,
static CK_FUNCTION_LIST function_list = {
    .version = {2, 40},
    HC_PKCS11_V2_FUNCTIONS(LIST_ENTRY)
};

/* The 3.0 list's C_GetInfo reports version 3.0: it overrides the entry the shared list gives. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
static CK_FUNCTION_LIST_3_0 function_list_3_0 = {
    .version = {3, 0},
    HC_PKCS11_V2_FUNCTIONS(LIST_ENTRY)
    HC_PKCS11_V3_FUNCTIONS(LIST_ENTRY)
    .C_GetInfo = get_info_3_0,
};
#pragma GCC diagnostic pop
#undef LIST_ENTRY
