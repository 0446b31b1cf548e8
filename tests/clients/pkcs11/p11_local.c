/*
 * Checks of the hsmcloud PKCS#11 library that need no appliance: the ABI, the function lists,
 * initialization and its arguments, error codes, C_Initialize/C_Finalize cycles and fork.
 * Built and run by tests/clients/pkcs11/test_library_local.py:
 *
 *     p11_local MODULE CHECK [ARGS...]
 *
 * Each check prints one line per finding ("ok ..." or "FAIL ...") and exits 0 only if all
 * passed. The build needs gcc and the library's own header (native/pkcs11.h).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define HC_PKCS11_NO_PROTOTYPES
#include "pkcs11.h"

static int failures;
static void *module;
static CK_FUNCTION_LIST *p11;
static CK_FUNCTION_LIST_3_0 *p11v3;

#define EXPECT_RV(what, got, want)                                                                         \
    do {                                                                                                   \
        CK_RV got_ = (got), want_ = (want);                                                                \
        if (got_ != want_) {                                                                               \
            printf("FAIL %s: rv 0x%lx, expected 0x%lx\n", what, (unsigned long)got_, (unsigned long)want_); \
            failures++;                                                                                    \
        }                                                                                                  \
    } while (0)
#define EXPECT(what, cond)                        \
    do {                                          \
        if (!(cond)) {                            \
            printf("FAIL %s\n", what);            \
            failures++;                           \
        }                                         \
    } while (0)

/* The standard's order of CK_FUNCTION_LIST (v2.40), then what CK_FUNCTION_LIST_3_0 adds. */
static const char *v2_names[] = {
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo",
    "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
    "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState",
    "C_SetOperationState", "C_Login", "C_Logout", "C_CreateObject", "C_CopyObject", "C_DestroyObject",
    "C_GetObjectSize", "C_GetAttributeValue", "C_SetAttributeValue", "C_FindObjectsInit", "C_FindObjects",
    "C_FindObjectsFinal", "C_EncryptInit", "C_Encrypt", "C_EncryptUpdate", "C_EncryptFinal", "C_DecryptInit",
    "C_Decrypt", "C_DecryptUpdate", "C_DecryptFinal", "C_DigestInit", "C_Digest", "C_DigestUpdate",
    "C_DigestKey", "C_DigestFinal", "C_SignInit", "C_Sign", "C_SignUpdate", "C_SignFinal", "C_SignRecoverInit",
    "C_SignRecover", "C_VerifyInit", "C_Verify", "C_VerifyUpdate", "C_VerifyFinal", "C_VerifyRecoverInit",
    "C_VerifyRecover", "C_DigestEncryptUpdate", "C_DecryptDigestUpdate", "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate", "C_GenerateKey", "C_GenerateKeyPair", "C_WrapKey", "C_UnwrapKey", "C_DeriveKey",
    "C_SeedRandom", "C_GenerateRandom", "C_GetFunctionStatus", "C_CancelFunction", "C_WaitForSlotEvent",
};
static const char *v3_names[] = {
    "C_GetInterfaceList", "C_GetInterface", "C_LoginUser", "C_SessionCancel", "C_MessageEncryptInit",
    "C_EncryptMessage", "C_EncryptMessageBegin", "C_EncryptMessageNext", "C_MessageEncryptFinal",
    "C_MessageDecryptInit", "C_DecryptMessage", "C_DecryptMessageBegin", "C_DecryptMessageNext",
    "C_MessageDecryptFinal", "C_MessageSignInit", "C_SignMessage", "C_SignMessageBegin", "C_SignMessageNext",
    "C_MessageSignFinal", "C_MessageVerifyInit", "C_VerifyMessage", "C_VerifyMessageBegin",
    "C_VerifyMessageNext", "C_MessageVerifyFinal",
};
#define N_V2 (sizeof v2_names / sizeof v2_names[0])
#define N_V3 (sizeof v3_names / sizeof v3_names[0])

typedef void (*any_fn)(void);

static any_fn list_entry(const void *list, size_t i)
{
    any_fn f;
    memcpy(&f, (const char *)list + offsetof(CK_FUNCTION_LIST, C_Initialize) + i * sizeof(any_fn), sizeof f);
    return f;
}

static void load(const char *path)
{
    CK_C_GetFunctionList get_list;
    CK_C_GetInterface get_interface;
    CK_INTERFACE *iface = NULL;
    module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (module == NULL) {
        printf("FAIL dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
    get_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
    get_interface = (CK_C_GetInterface)dlsym(module, "C_GetInterface");
    if (get_list == NULL || get_list(&p11) != CKR_OK || get_interface == NULL ||
        get_interface((CK_UTF8CHAR_PTR) "PKCS 11", NULL, &iface, 0) != CKR_OK) {
        printf("FAIL no function list\n");
        exit(2);
    }
    p11v3 = iface->pFunctionList;
}

/* ---- checks ---- */

/* Struct sizes and offsets of the standard ABI on LP64 Unix (no packing). */
static int check_abi(void)
{
    EXPECT("sizeof(CK_ULONG) == 8", sizeof(CK_ULONG) == 8);
    EXPECT("sizeof(CK_INFO) == 88", sizeof(CK_INFO) == 88);
    EXPECT("CK_INFO.flags at 40", offsetof(CK_INFO, flags) == 40);
    EXPECT("sizeof(CK_SLOT_INFO) == 112", sizeof(CK_SLOT_INFO) == 112);
    EXPECT("sizeof(CK_TOKEN_INFO) == 208", sizeof(CK_TOKEN_INFO) == 208);
    EXPECT("CK_TOKEN_INFO.flags at 96", offsetof(CK_TOKEN_INFO, flags) == 96);
    EXPECT("CK_TOKEN_INFO.utcTime at 188", offsetof(CK_TOKEN_INFO, utcTime) == 188);
    EXPECT("sizeof(CK_SESSION_INFO) == 32", sizeof(CK_SESSION_INFO) == 32);
    EXPECT("sizeof(CK_ATTRIBUTE) == 24", sizeof(CK_ATTRIBUTE) == 24);
    EXPECT("sizeof(CK_MECHANISM) == 24", sizeof(CK_MECHANISM) == 24);
    EXPECT("sizeof(CK_MECHANISM_INFO) == 24", sizeof(CK_MECHANISM_INFO) == 24);
    EXPECT("sizeof(CK_C_INITIALIZE_ARGS) == 48", sizeof(CK_C_INITIALIZE_ARGS) == 48);
    EXPECT("sizeof(CK_GCM_PARAMS) == 48", sizeof(CK_GCM_PARAMS) == 48);
    EXPECT("sizeof(CK_RSA_PKCS_OAEP_PARAMS) == 40", sizeof(CK_RSA_PKCS_OAEP_PARAMS) == 40);
    EXPECT("sizeof(CK_ECDH1_DERIVE_PARAMS) == 40", sizeof(CK_ECDH1_DERIVE_PARAMS) == 40);
    EXPECT("sizeof(CK_HKDF_PARAMS) == 64", sizeof(CK_HKDF_PARAMS) == 64);
    EXPECT("sizeof(CK_EDDSA_PARAMS) == 24", sizeof(CK_EDDSA_PARAMS) == 24);
    EXPECT("sizeof(CK_AES_CBC_ENCRYPT_DATA_PARAMS) == 32", sizeof(CK_AES_CBC_ENCRYPT_DATA_PARAMS) == 32);
    EXPECT("sizeof(CK_INTERFACE) == 24", sizeof(CK_INTERFACE) == 24);
    EXPECT("sizeof(CK_DATE) == 8", sizeof(CK_DATE) == 8);
    EXPECT("CK_FUNCTION_LIST has 68 functions",
           sizeof(CK_FUNCTION_LIST) == offsetof(CK_FUNCTION_LIST, C_Initialize) + 68 * sizeof(any_fn));
    EXPECT("CK_FUNCTION_LIST_3_0 has 92 functions",
           sizeof(CK_FUNCTION_LIST_3_0) == offsetof(CK_FUNCTION_LIST_3_0, C_Initialize) + 92 * sizeof(any_fn));
    return 0;
}

/* Each list entry is the exported function of that name, in the standard's order. */
static int check_function_lists(void)
{
    CK_C_GetInterfaceList get_list = (CK_C_GetInterfaceList)dlsym(module, "C_GetInterfaceList");
    CK_INTERFACE ifaces[4];
    CK_ULONG n = 0;
    CK_INTERFACE *iface;
    CK_VERSION v240 = {2, 40}, v30 = {3, 0}, v99 = {9, 9};
    CK_INFO info;

    EXPECT("v2 list version 2.40", p11->version.major == 2 && p11->version.minor == 40);
    EXPECT("v3 list version 3.0", p11v3->version.major == 3 && p11v3->version.minor == 0);
    for (size_t i = 0; i < N_V2; i++) {
        any_fn exported = (any_fn)dlsym(module, v2_names[i]);
        if (exported == NULL || list_entry(p11, i) != exported) {
            printf("FAIL v2 list entry %zu is not %s\n", i, v2_names[i]);
            failures++;
        }
        if (list_entry(p11v3, i) == NULL || (strcmp(v2_names[i], "C_GetInfo") != 0 && list_entry(p11v3, i) != exported)) {
            printf("FAIL v3 list entry %zu is not %s\n", i, v2_names[i]);
            failures++;
        }
    }
    for (size_t i = 0; i < N_V3; i++) {
        any_fn exported = (any_fn)dlsym(module, v3_names[i]);
        if (exported == NULL || list_entry(p11v3, N_V2 + i) != exported) {
            printf("FAIL v3 list entry %zu is not %s\n", N_V2 + i, v3_names[i]);
            failures++;
        }
    }

    EXPECT_RV("C_GetInterfaceList(count NULL)", get_list(NULL, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetInterfaceList size query", get_list(NULL, &n), CKR_OK);
    EXPECT("two interfaces", n == 2);
    n = 1;
    EXPECT_RV("C_GetInterfaceList too small", get_list(ifaces, &n), CKR_BUFFER_TOO_SMALL);
    EXPECT("too small reports 2", n == 2);
    n = 4;
    EXPECT_RV("C_GetInterfaceList", get_list(ifaces, &n), CKR_OK);
    EXPECT("interface names are 'PKCS 11'", n == 2 && strcmp((char *)ifaces[0].pInterfaceName, "PKCS 11") == 0 &&
                                                strcmp((char *)ifaces[1].pInterfaceName, "PKCS 11") == 0);
    EXPECT("first interface is 3.0", ((CK_VERSION *)ifaces[0].pFunctionList)->major == 3);
    EXPECT("second interface is 2.40", ifaces[1].pFunctionList == (void *)p11);
    EXPECT_RV("C_GetInterface(NULL)", p11v3->C_GetInterface(NULL, NULL, &iface, 0), CKR_OK);
    EXPECT("default interface is 3.0", ((CK_VERSION *)iface->pFunctionList)->major == 3);
    EXPECT_RV("C_GetInterface 2.40", p11v3->C_GetInterface((CK_UTF8CHAR_PTR) "PKCS 11", &v240, &iface, 0), CKR_OK);
    EXPECT("2.40 interface is the C_GetFunctionList list", iface->pFunctionList == (void *)p11);
    EXPECT_RV("C_GetInterface 3.0", p11v3->C_GetInterface(NULL, &v30, &iface, 0), CKR_OK);
    EXPECT_RV("C_GetInterface unknown version", p11v3->C_GetInterface(NULL, &v99, &iface, 0), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetInterface unknown name", p11v3->C_GetInterface((CK_UTF8CHAR_PTR) "Vendor X", NULL, &iface, 0),
              CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetInterface fork-safe (not offered)",
              p11v3->C_GetInterface(NULL, NULL, &iface, CKF_INTERFACE_FORK_SAFE), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetInterface(pp NULL)", p11v3->C_GetInterface(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetFunctionList(NULL)", p11->C_GetFunctionList(NULL), CKR_ARGUMENTS_BAD);

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_GetInfo (2.40 list)", p11->C_GetInfo(&info), CKR_OK);
    EXPECT("C_GetInfo 2.40", info.cryptokiVersion.major == 2 && info.cryptokiVersion.minor == 40);
    EXPECT("manufacturer hsmcloud", memcmp(info.manufacturerID, "hsmcloud ", 9) == 0);
    EXPECT_RV("C_GetInfo (3.0 list)", p11v3->C_GetInfo(&info), CKR_OK);
    EXPECT("C_GetInfo 3.0", info.cryptokiVersion.major == 3 && info.cryptokiVersion.minor == 0);
    EXPECT_RV("C_GetInfo(NULL)", p11->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* Every function but the four that work before C_Initialize answers CKR_CRYPTOKI_NOT_INITIALIZED. */
static void expect_all_not_initialized(const char *when)
{
    /* Calling through a pointer with extra zero arguments is harmless on the x86-64 and AArch64
     * ABIs (integer/pointer registers); the library returns before reading any of them. */
    typedef CK_RV (*wide_fn)(CK_ULONG, CK_ULONG, CK_ULONG, CK_ULONG, CK_ULONG, CK_ULONG, CK_ULONG, CK_ULONG,
                             CK_ULONG);
    for (size_t i = 0; i < N_V2 + N_V3; i++) {
        const char *name = i < N_V2 ? v2_names[i] : v3_names[i - N_V2];
        if (!strcmp(name, "C_Initialize") || !strcmp(name, "C_GetFunctionList") ||
            !strcmp(name, "C_GetInterfaceList") || !strcmp(name, "C_GetInterface"))
            continue;
        wide_fn f = (wide_fn)list_entry(p11v3, i);
        CK_RV rv = f(0, 0, 0, 0, 0, 0, 0, 0, 0);
        if (rv != CKR_CRYPTOKI_NOT_INITIALIZED) {
            printf("FAIL %s %s: rv 0x%lx, expected CKR_CRYPTOKI_NOT_INITIALIZED\n", when, name, (unsigned long)rv);
            failures++;
        }
    }
}

static int check_not_initialized(void)
{
    expect_all_not_initialized("before C_Initialize:");
    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    expect_all_not_initialized("after C_Finalize:");
    return 0;
}

/* Application mutex callbacks: counted, so the check can see the library use them. */
static long app_creates, app_destroys, app_locks, app_unlocks;
static CK_RV app_create(CK_VOID_PTR_PTR pp)
{
    pthread_mutex_t *m = malloc(sizeof *m);
    pthread_mutex_init(m, NULL);
    *pp = m;
    __atomic_add_fetch(&app_creates, 1, __ATOMIC_SEQ_CST);
    return CKR_OK;
}
static CK_RV app_destroy(CK_VOID_PTR p)
{
    pthread_mutex_destroy(p);
    free(p);
    __atomic_add_fetch(&app_destroys, 1, __ATOMIC_SEQ_CST);
    return CKR_OK;
}
static CK_RV app_lock(CK_VOID_PTR p)
{
    __atomic_add_fetch(&app_locks, 1, __ATOMIC_SEQ_CST);
    return pthread_mutex_lock(p) == 0 ? CKR_OK : CKR_MUTEX_BAD;
}
static CK_RV app_unlock(CK_VOID_PTR p)
{
    __atomic_add_fetch(&app_unlocks, 1, __ATOMIC_SEQ_CST);
    return pthread_mutex_unlock(p) == 0 ? CKR_OK : CKR_MUTEX_NOT_LOCKED;
}

static int check_init_args(void)
{
    CK_C_INITIALIZE_ARGS args;
    CK_SESSION_INFO info;
    int reserved;

    memset(&args, 0, sizeof args);
    args.pReserved = &reserved;
    EXPECT_RV("pReserved set", p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    memset(&args, 0, sizeof args);
    args.CreateMutex = app_create;
    args.LockMutex = app_lock;
    EXPECT_RV("two of four mutex callbacks", p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    EXPECT_RV("still not initialized", p11->C_GetSlotList(CK_FALSE, NULL, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);

    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    EXPECT_RV("CKF_OS_LOCKING_OK", p11->C_Initialize(&args), CKR_OK);
    EXPECT_RV("second C_Initialize", p11->C_Initialize(&args), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    EXPECT_RV("second C_Initialize(NULL)", p11->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    EXPECT_RV("C_Finalize(non-NULL)", p11->C_Finalize(&reserved), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    EXPECT_RV("C_Finalize again", p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);

    /* Callbacks without CKF_OS_LOCKING_OK: the library must lock with them. */
    memset(&args, 0, sizeof args);
    args.CreateMutex = app_create;
    args.DestroyMutex = app_destroy;
    args.LockMutex = app_lock;
    args.UnlockMutex = app_unlock;
    EXPECT_RV("application mutexes", p11->C_Initialize(&args), CKR_OK);
    EXPECT_RV("session lookup with application mutexes", p11->C_GetSessionInfo(77, &info),
              CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    printf("ok callbacks creates=%ld destroys=%ld locks=%ld unlocks=%ld\n", app_creates, app_destroys, app_locks,
           app_unlocks);
    EXPECT("the library created mutexes with the callbacks", app_creates > 0);
    EXPECT("and locked with them", app_locks > 0 && app_locks == app_unlocks);
    EXPECT("and destroyed every one at C_Finalize", app_destroys == app_creates);

    /* Callbacks and CKF_OS_LOCKING_OK: either may be used. */
    args.flags = CKF_OS_LOCKING_OK;
    EXPECT_RV("callbacks with CKF_OS_LOCKING_OK", p11->C_Initialize(&args), CKR_OK);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* Needs a configuration of exactly 3 slots whose appliance does not answer. */
static int check_errors(void)
{
    CK_SLOT_ID slots[8];
    CK_ULONG n;
    CK_SLOT_INFO slot_info;
    CK_TOKEN_INFO token_info;
    CK_SESSION_HANDLE h;
    CK_SESSION_INFO session_info;
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_MECHANISM_TYPE mechs[4];
    CK_MECHANISM_INFO mech_info;
    CK_BYTE data[32] = {0}, out[64];
    CK_ULONG out_len = sizeof out, size;
    CK_OBJECT_HANDLE objs[4], key, pub, priv;
    CK_ATTRIBUTE attr = {CKA_LABEL, out, sizeof out};
    CK_UTF8CHAR label[32];
    const CK_SESSION_HANDLE bad = 4242;

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);

    EXPECT_RV("C_GetSlotList(count NULL)", p11->C_GetSlotList(CK_FALSE, NULL, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetSlotList size query", p11->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    EXPECT("three configured slots", n == 3);
    n = 1;
    EXPECT_RV("C_GetSlotList buffer too small", p11->C_GetSlotList(CK_FALSE, slots, &n), CKR_BUFFER_TOO_SMALL);
    EXPECT("too small reports the needed count", n == 3);
    n = 8;
    EXPECT_RV("C_GetSlotList", p11->C_GetSlotList(CK_FALSE, slots, &n), CKR_OK);
    EXPECT("slot IDs 0, 1, 2", n == 3 && slots[0] == 0 && slots[1] == 1 && slots[2] == 2);
    n = 8;
    EXPECT_RV("C_GetSlotList(tokenPresent)", p11->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    EXPECT("no token present when the appliance does not answer", n == 0);

    EXPECT_RV("C_GetSlotInfo(NULL)", p11->C_GetSlotInfo(0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetSlotInfo(bad slot)", p11->C_GetSlotInfo(3, &slot_info), CKR_SLOT_ID_INVALID);
    EXPECT_RV("C_GetSlotInfo", p11->C_GetSlotInfo(1, &slot_info), CKR_OK);
    EXPECT("slot without a token", !(slot_info.flags & CKF_TOKEN_PRESENT) && (slot_info.flags & CKF_REMOVABLE_DEVICE));
    EXPECT("slot description names the server",
           memmem(slot_info.slotDescription, sizeof slot_info.slotDescription, "hsm-down", 8) != NULL);
    EXPECT_RV("C_GetTokenInfo(NULL)", p11->C_GetTokenInfo(0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetTokenInfo(bad slot)", p11->C_GetTokenInfo(99, &token_info), CKR_SLOT_ID_INVALID);
    EXPECT_RV("C_GetTokenInfo(unreachable)", p11->C_GetTokenInfo(0, &token_info), CKR_DEVICE_ERROR);
    EXPECT_RV("C_GetMechanismList(count NULL)", p11->C_GetMechanismList(0, mechs, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetMechanismList(bad slot)", p11->C_GetMechanismList(5, NULL, &n), CKR_SLOT_ID_INVALID);
    EXPECT_RV("C_GetMechanismInfo(NULL)", p11->C_GetMechanismInfo(0, CKM_AES_GCM, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetMechanismInfo(bad slot)", p11->C_GetMechanismInfo(5, CKM_AES_GCM, &mech_info),
              CKR_SLOT_ID_INVALID);
    memset(label, ' ', sizeof label);
    EXPECT_RV("C_InitToken(label NULL)", p11->C_InitToken(0, (CK_UTF8CHAR_PTR) "x", 1, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_InitToken(bad slot)", p11->C_InitToken(7, (CK_UTF8CHAR_PTR) "x", 1, label), CKR_SLOT_ID_INVALID);

    EXPECT_RV("C_OpenSession(phSession NULL)", p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL),
              CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_OpenSession(bad slot)", p11->C_OpenSession(3, CKF_SERIAL_SESSION, NULL, NULL, &h),
              CKR_SLOT_ID_INVALID);
    EXPECT_RV("C_OpenSession without CKF_SERIAL_SESSION", p11->C_OpenSession(0, CKF_RW_SESSION, NULL, NULL, &h),
              CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    EXPECT_RV("C_OpenSession(unreachable)", p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h),
              CKR_DEVICE_ERROR);
    EXPECT_RV("C_CloseAllSessions(bad slot)", p11->C_CloseAllSessions(3), CKR_SLOT_ID_INVALID);

    /* unknown session handles */
    EXPECT_RV("C_CloseSession", p11->C_CloseSession(bad), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GetSessionInfo", p11->C_GetSessionInfo(bad, &session_info), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Login", p11->C_Login(bad, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Logout", p11->C_Logout(bad), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_InitPIN", p11->C_InitPIN(bad, (CK_UTF8CHAR_PTR) "1234", 4), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SetPIN", p11->C_SetPIN(bad, (CK_UTF8CHAR_PTR) "1", 1, (CK_UTF8CHAR_PTR) "2", 1),
              CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_CreateObject", p11->C_CreateObject(bad, &attr, 1, &key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_CopyObject", p11->C_CopyObject(bad, 1, NULL, 0, &key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DestroyObject", p11->C_DestroyObject(bad, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GetObjectSize", p11->C_GetObjectSize(bad, 1, &size), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GetAttributeValue", p11->C_GetAttributeValue(bad, 1, &attr, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SetAttributeValue", p11->C_SetAttributeValue(bad, 1, &attr, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_FindObjectsInit", p11->C_FindObjectsInit(bad, NULL, 0), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_FindObjects", p11->C_FindObjects(bad, objs, 4, &n), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_FindObjectsFinal", p11->C_FindObjectsFinal(bad), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_EncryptInit", p11->C_EncryptInit(bad, &mech, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Encrypt", p11->C_Encrypt(bad, data, sizeof data, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_EncryptUpdate", p11->C_EncryptUpdate(bad, data, 1, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_EncryptFinal", p11->C_EncryptFinal(bad, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DecryptInit", p11->C_DecryptInit(bad, &mech, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Decrypt", p11->C_Decrypt(bad, data, 1, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DecryptUpdate", p11->C_DecryptUpdate(bad, data, 1, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DecryptFinal", p11->C_DecryptFinal(bad, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DigestInit", p11->C_DigestInit(bad, &mech), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Digest", p11->C_Digest(bad, data, 1, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DigestUpdate", p11->C_DigestUpdate(bad, data, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DigestKey", p11->C_DigestKey(bad, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DigestFinal", p11->C_DigestFinal(bad, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SignInit", p11->C_SignInit(bad, &mech, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Sign", p11->C_Sign(bad, data, 1, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SignUpdate", p11->C_SignUpdate(bad, data, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SignFinal", p11->C_SignFinal(bad, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_VerifyInit", p11->C_VerifyInit(bad, &mech, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Verify", p11->C_Verify(bad, data, 1, out, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_VerifyUpdate", p11->C_VerifyUpdate(bad, data, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_VerifyFinal", p11->C_VerifyFinal(bad, out, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GenerateKey", p11->C_GenerateKey(bad, &mech, NULL, 0, &key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GenerateKeyPair", p11->C_GenerateKeyPair(bad, &mech, NULL, 0, NULL, 0, &pub, &priv),
              CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_WrapKey", p11->C_WrapKey(bad, &mech, 1, 2, out, &out_len), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_UnwrapKey", p11->C_UnwrapKey(bad, &mech, 1, data, 8, NULL, 0, &key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_DeriveKey", p11->C_DeriveKey(bad, &mech, 1, NULL, 0, &key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_SeedRandom", p11->C_SeedRandom(bad, data, 4), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GenerateRandom", p11->C_GenerateRandom(bad, out, 16), CKR_SESSION_HANDLE_INVALID);

    /* NULL where the function needs a pointer */
    EXPECT_RV("C_GetSessionInfo(NULL)", p11->C_GetSessionInfo(bad, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_CreateObject(phObject NULL)", p11->C_CreateObject(bad, &attr, 1, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_CreateObject(template NULL)", p11->C_CreateObject(bad, NULL, 2, &key), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetObjectSize(NULL)", p11->C_GetObjectSize(bad, 1, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GetAttributeValue(template NULL)", p11->C_GetAttributeValue(bad, 1, NULL, 1), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_FindObjects(count NULL)", p11->C_FindObjects(bad, objs, 4, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_FindObjects(handles NULL)", p11->C_FindObjects(bad, NULL, 4, &n), CKR_ARGUMENTS_BAD);
    /* a NULL mechanism is PKCS#11 3.0's cancel: it still needs a session */
    EXPECT_RV("C_EncryptInit(mechanism NULL)", p11->C_EncryptInit(bad, NULL, 1), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Encrypt(length NULL)", p11->C_Encrypt(bad, data, 1, out, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_Encrypt(data NULL)", p11->C_Encrypt(bad, NULL, 5, out, &out_len), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_Sign(length NULL)", p11->C_Sign(bad, data, 1, out, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_SignFinal(length NULL)", p11->C_SignFinal(bad, out, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_Verify(signature NULL)", p11->C_Verify(bad, data, 1, NULL, 4), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_DigestInit(mechanism NULL)", p11->C_DigestInit(bad, NULL), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GenerateKey(phKey NULL)", p11->C_GenerateKey(bad, &mech, NULL, 0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GenerateKeyPair(phPrivateKey NULL)",
              p11->C_GenerateKeyPair(bad, &mech, NULL, 0, NULL, 0, &pub, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_WrapKey(length NULL)", p11->C_WrapKey(bad, &mech, 1, 2, out, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_UnwrapKey(wrapped NULL)", p11->C_UnwrapKey(bad, &mech, 1, NULL, 8, NULL, 0, &key),
              CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_DeriveKey(phKey NULL)", p11->C_DeriveKey(bad, &mech, 1, NULL, 0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_GenerateRandom(NULL)", p11->C_GenerateRandom(bad, NULL, 16), CKR_ARGUMENTS_BAD);
    EXPECT_RV("C_SeedRandom(NULL)", p11->C_SeedRandom(bad, NULL, 16), CKR_ARGUMENTS_BAD);

    /* what the library does not offer */
    EXPECT_RV("C_GetOperationState", p11->C_GetOperationState(bad, NULL, &n), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_SetOperationState", p11->C_SetOperationState(bad, data, 1, 0, 0), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_SignRecoverInit", p11->C_SignRecoverInit(bad, &mech, 1), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_VerifyRecoverInit", p11->C_VerifyRecoverInit(bad, &mech, 1), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_DigestEncryptUpdate", p11->C_DigestEncryptUpdate(bad, data, 1, out, &out_len),
              CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_WaitForSlotEvent", p11->C_WaitForSlotEvent(CKF_DONT_BLOCK, slots, NULL), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_GetFunctionStatus", p11->C_GetFunctionStatus(bad), CKR_FUNCTION_NOT_PARALLEL);
    EXPECT_RV("C_CancelFunction", p11->C_CancelFunction(bad), CKR_FUNCTION_NOT_PARALLEL);
    EXPECT_RV("C_MessageEncryptInit", p11v3->C_MessageEncryptInit(bad, &mech, 1), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_SignMessage", p11v3->C_SignMessage(bad, NULL, 0, data, 1, out, &out_len), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_LoginUser", p11v3->C_LoginUser(bad, CKU_USER, data, 1, data, 1), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT_RV("C_SessionCancel", p11v3->C_SessionCancel(bad, 0), CKR_FUNCTION_NOT_SUPPORTED);

    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* C_Initialize/C_Finalize many times: no descriptor and no memory left behind per cycle.
 * OpenSSL keeps a cache of fetched algorithms that fills and is flushed in a sawtooth, so the
 * check compares the heap's peak over two equal runs of cycles after a warm-up: a leak raises
 * the second peak, a cache does not. */
static int check_cycles(int cycles)
{
    CK_SLOT_INFO info;
    CK_ULONG n;
    size_t peak[2] = {0, 0};
    int fds_before = 0, fds_after;

    for (int i = 0; i < 3 * cycles; i++) {
        if (i == cycles)
            fds_before = open_fds();
        EXPECT_RV("cycle C_Initialize", p11->C_Initialize(NULL), CKR_OK);
        EXPECT_RV("cycle C_GetSlotList", p11->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
        EXPECT_RV("cycle C_GetSlotInfo", p11->C_GetSlotInfo(0, &info), CKR_OK);
        EXPECT_RV("cycle C_Finalize", p11->C_Finalize(NULL), CKR_OK);
        if (failures > 0)
            return 0;
        if (i >= cycles) {
            size_t used = mallinfo2().uordblks;
            size_t *p = &peak[i >= 2 * cycles];
            if (used > *p)
                *p = used;
        }
    }
    fds_after = open_fds();
    printf("ok cycles=%d fds %d -> %d heap peaks %zu -> %zu\n", cycles, fds_before, fds_after, peak[0], peak[1]);
    EXPECT("no descriptor left open", fds_after == fds_before);
    EXPECT("heap does not grow with cycles", peak[1] <= peak[0] + 16384);
    return 0;
}

/* fork(): the child must initialize again; the parent goes on unaffected. */
static int check_fork(void)
{
    CK_ULONG n;
    CK_INFO info;
    pid_t pid;
    int status;

    EXPECT_RV("parent C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("parent C_GetSlotList", p11->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        failures = 0;
        EXPECT_RV("child C_GetInfo before C_Initialize", p11->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
        EXPECT_RV("child C_GetSlotList before C_Initialize", p11->C_GetSlotList(CK_FALSE, NULL, &n),
                  CKR_CRYPTOKI_NOT_INITIALIZED);
        EXPECT_RV("child C_Finalize before C_Initialize", p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
        expect_all_not_initialized("child before C_Initialize:");
        EXPECT_RV("child C_Initialize", p11->C_Initialize(NULL), CKR_OK);
        n = 0;
        EXPECT_RV("child C_GetSlotList", p11->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
        EXPECT("child sees the configured slots", n == 3);
        EXPECT_RV("child C_Finalize", p11->C_Finalize(NULL), CKR_OK);
        fflush(stdout);
        _exit(failures ? 1 : 0);
    }
    EXPECT("fork", pid > 0);
    waitpid(pid, &status, 0);
    EXPECT("child passed", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_RV("parent C_GetSlotList after the child", p11->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    EXPECT_RV("parent C_GetInfo after the child", p11->C_GetInfo(&info), CKR_OK);
    EXPECT_RV("parent C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* C_Initialize's result and the slot count, for configuration checks. */
static int report_init(void)
{
    CK_ULONG n = 0;
    CK_RV rv = p11->C_Initialize(NULL);
    if (rv == CKR_OK) {
        p11->C_GetSlotList(CK_FALSE, NULL, &n);
        p11->C_Finalize(NULL);
    }
    printf("rv=0x%lx slots=%lu\n", (unsigned long)rv, (unsigned long)n);
    return 0;
}

/* Token presence and C_GetTokenInfo of slot 0, for transport checks. */
static int report_token(void)
{
    CK_ULONG n = 0;
    CK_TOKEN_INFO info;
    CK_RV rv = p11->C_Initialize(NULL);
    if (rv != CKR_OK) {
        printf("init=0x%lx\n", (unsigned long)rv);
        return 0;
    }
    p11->C_GetSlotList(CK_TRUE, NULL, &n);
    rv = p11->C_GetTokenInfo(0, &info);
    printf("present=%lu token_info=0x%lx\n", (unsigned long)n, (unsigned long)rv);
    p11->C_Finalize(NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODULE CHECK [ARGS]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    load(argv[1]);
    const char *check = argv[2];
    if (!strcmp(check, "abi"))
        check_abi();
    else if (!strcmp(check, "function-lists"))
        check_function_lists();
    else if (!strcmp(check, "not-initialized"))
        check_not_initialized();
    else if (!strcmp(check, "init-args"))
        check_init_args();
    else if (!strcmp(check, "errors"))
        check_errors();
    else if (!strcmp(check, "cycles"))
        check_cycles(argc > 3 ? atoi(argv[3]) : 200);
    else if (!strcmp(check, "fork"))
        check_fork();
    else if (!strcmp(check, "report-init"))
        return report_init();
    else if (!strcmp(check, "report-token"))
        return report_token();
    else {
        fprintf(stderr, "unknown check %s\n", check);
        return 2;
    }
    if (failures == 0)
        printf("ok %s\n", check);
    return failures ? 1 : 0;
}
