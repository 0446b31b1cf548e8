/*
 * pkcs11_speed: the same client code for every PKCS#11 module the benchmarks compare.
 *
 *   pkcs11_speed MODULE TOKEN_LABEL PIN rsa|ecdsa|aesgcm THREADS SECONDS [session|token]
 *
 * Loads MODULE with dlopen, logs in on the token labelled TOKEN_LABEL, makes one key of the kind
 * asked for (RSA-2048 key pair, EC P-256 key pair or AES-256 key; token objects unless told
 * "session"), then runs THREADS threads, each with its own session, doing whole operations
 * (C_SignInit + C_Sign, or C_EncryptInit + C_Encrypt of 4 KiB with AES-GCM) for SECONDS seconds.
 * Prints one JSON line: operations per second and per-call latency percentiles (microseconds).
 *
 * Only the standard's types are declared here (PKCS#11 v2.40); nothing module-specific.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV, CK_SLOT_ID, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_FLAGS, CK_MECHANISM_TYPE,
    CK_ATTRIBUTE_TYPE, CK_USER_TYPE, CK_OBJECT_CLASS, CK_KEY_TYPE;
typedef unsigned char CK_BYTE, CK_BBOOL;
typedef void *CK_VOID_PTR;

typedef struct { CK_BYTE major, minor; } CK_VERSION;
typedef struct { CK_ATTRIBUTE_TYPE type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;
typedef struct { CK_MECHANISM_TYPE mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;
typedef struct {
    CK_BYTE *pIv; CK_ULONG ulIvLen; CK_ULONG ulIvBits; CK_BYTE *pAAD; CK_ULONG ulAADLen; CK_ULONG ulTagBits;
} CK_GCM_PARAMS;
typedef struct {
    void *CreateMutex, *DestroyMutex, *LockMutex, *UnlockMutex; CK_FLAGS flags; void *pReserved;
} CK_C_INITIALIZE_ARGS;
typedef struct {
    CK_BYTE label[32], manufacturerID[32], model[16], serialNumber[16];
    CK_FLAGS flags;
    CK_ULONG ulMaxSessionCount, ulSessionCount, ulMaxRwSessionCount, ulRwSessionCount, ulMaxPinLen,
        ulMinPinLen, ulTotalPublicMemory, ulFreePublicMemory, ulTotalPrivateMemory, ulFreePrivateMemory;
    CK_VERSION hardwareVersion, firmwareVersion;
    CK_BYTE utcTime[16];
} CK_TOKEN_INFO;

/* The v2.40 function list, in the standard's order. */
typedef struct {
    CK_VERSION version;
    CK_RV (*C_Initialize)(void *);
    CK_RV (*C_Finalize)(void *);
    void *C_GetInfo, *C_GetFunctionList;
    CK_RV (*C_GetSlotList)(CK_BBOOL, CK_SLOT_ID *, CK_ULONG *);
    void *C_GetSlotInfo;
    CK_RV (*C_GetTokenInfo)(CK_SLOT_ID, CK_TOKEN_INFO *);
    void *C_GetMechanismList, *C_GetMechanismInfo, *C_InitToken, *C_InitPIN, *C_SetPIN;
    CK_RV (*C_OpenSession)(CK_SLOT_ID, CK_FLAGS, void *, void *, CK_SESSION_HANDLE *);
    CK_RV (*C_CloseSession)(CK_SESSION_HANDLE);
    void *C_CloseAllSessions, *C_GetSessionInfo, *C_GetOperationState, *C_SetOperationState;
    CK_RV (*C_Login)(CK_SESSION_HANDLE, CK_USER_TYPE, CK_BYTE *, CK_ULONG);
    void *C_Logout, *C_CreateObject, *C_CopyObject;
    CK_RV (*C_DestroyObject)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    void *C_GetObjectSize, *C_GetAttributeValue, *C_SetAttributeValue, *C_FindObjectsInit, *C_FindObjects,
        *C_FindObjectsFinal;
    CK_RV (*C_EncryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
    CK_RV (*C_Encrypt)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
    void *C_EncryptUpdate, *C_EncryptFinal, *C_DecryptInit, *C_Decrypt, *C_DecryptUpdate, *C_DecryptFinal,
        *C_DigestInit, *C_Digest, *C_DigestUpdate, *C_DigestKey, *C_DigestFinal;
    CK_RV (*C_SignInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
    CK_RV (*C_Sign)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
    void *C_SignUpdate, *C_SignFinal, *C_SignRecoverInit, *C_SignRecover, *C_VerifyInit, *C_Verify,
        *C_VerifyUpdate, *C_VerifyFinal, *C_VerifyRecoverInit, *C_VerifyRecover, *C_DigestEncryptUpdate,
        *C_DecryptDigestUpdate, *C_SignEncryptUpdate, *C_DecryptVerifyUpdate;
    CK_RV (*C_GenerateKey)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *);
    CK_RV (*C_GenerateKeyPair)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ATTRIBUTE *,
                               CK_ULONG, CK_OBJECT_HANDLE *, CK_OBJECT_HANDLE *);
    void *C_WrapKey, *C_UnwrapKey, *C_DeriveKey, *C_SeedRandom, *C_GenerateRandom, *C_GetFunctionStatus,
        *C_CancelFunction, *C_WaitForSlotEvent;
} CK_FUNCTION_LIST;

#define CKR_OK 0UL
#define CKF_SERIAL_SESSION 0x4UL
#define CKF_RW_SESSION 0x2UL
#define CKF_OS_LOCKING_OK 0x2UL
#define CKU_USER 1UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKA_CLASS 0x0UL
#define CKA_TOKEN 0x1UL
#define CKA_PRIVATE 0x2UL
#define CKA_LABEL 0x3UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_SENSITIVE 0x103UL
#define CKA_ENCRYPT 0x104UL
#define CKA_DECRYPT 0x105UL
#define CKA_SIGN 0x108UL
#define CKA_VERIFY 0x10AUL
#define CKA_MODULUS_BITS 0x121UL
#define CKA_PUBLIC_EXPONENT 0x122UL
#define CKA_VALUE_LEN 0x161UL
#define CKA_EC_PARAMS 0x180UL
#define CKM_RSA_PKCS_KEY_PAIR_GEN 0x0UL
#define CKM_RSA_PKCS 0x1UL
#define CKM_EC_KEY_PAIR_GEN 0x1040UL
#define CKM_ECDSA 0x1041UL
#define CKM_AES_KEY_GEN 0x1080UL
#define CKM_AES_GCM 0x1087UL

typedef CK_RV (*get_function_list_fn)(CK_FUNCTION_LIST **);

static CK_FUNCTION_LIST *p11;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static int kind; /* 0 rsa, 1 ecdsa, 2 aesgcm */
static double seconds;
static volatile int go;

/* A SHA-256 DigestInfo, what a TLS server signs with CKM_RSA_PKCS. */
static CK_BYTE digest_info[51] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
                                  0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

struct worker {
    pthread_t thread;
    double *latencies;
    size_t count, capacity;
    CK_RV error;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, CK_RV rv) {
    fprintf(stderr, "pkcs11_speed: %s failed: CKR 0x%lx\n", what, rv);
    exit(2);
}

static void *work(void *arg) {
    struct worker *w = arg;
    CK_SESSION_HANDLE s;
    CK_RV rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) { w->error = rv; return NULL; }
    static CK_BYTE plain[4096];
    CK_BYTE out[4096 + 64], iv[12] = {0};
    CK_GCM_PARAMS gcm = {iv, sizeof iv, 96, NULL, 0, 128};
    CK_MECHANISM mech = {kind == 0 ? CKM_RSA_PKCS : kind == 1 ? CKM_ECDSA : CKM_AES_GCM,
                         kind == 2 ? &gcm : NULL, kind == 2 ? sizeof gcm : 0};
    while (!go) { }
    double end = now() + seconds;
    uint64_t counter = 0;
    for (;;) {
        double t0 = now();
        if (t0 >= end) break;
        CK_ULONG outlen = sizeof out;
        if (kind == 2) {
            memcpy(iv, &counter, sizeof counter); /* a fresh IV per message */
            counter++;
            rv = p11->C_EncryptInit(s, &mech, key);
            if (rv == CKR_OK) rv = p11->C_Encrypt(s, plain, sizeof plain, out, &outlen);
        } else {
            rv = p11->C_SignInit(s, &mech, key);
            if (rv == CKR_OK)
                rv = p11->C_Sign(s, kind == 0 ? digest_info : digest_info + 19, kind == 0 ? 51 : 32, out, &outlen);
        }
        if (rv != CKR_OK) { w->error = rv; break; }
        if (w->count == w->capacity) {
            w->capacity = w->capacity ? w->capacity * 2 : 4096;
            w->latencies = realloc(w->latencies, w->capacity * sizeof(double));
        }
        w->latencies[w->count++] = (now() - t0) * 1e6;
    }
    p11->C_CloseSession(s);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODULE TOKEN_LABEL PIN rsa|ecdsa|aesgcm THREADS SECONDS [session|token]\n",
                argv[0]);
        return 2;
    }
    const char *label = argv[2], *pin = argv[3];
    kind = !strcmp(argv[4], "rsa") ? 0 : !strcmp(argv[4], "ecdsa") ? 1 : !strcmp(argv[4], "aesgcm") ? 2 : -1;
    int threads = atoi(argv[5]);
    seconds = atof(argv[6]);
    CK_BBOOL on_token = !(argc > 7 && !strcmp(argv[7], "session"));
    if (kind < 0 || threads < 1 || threads > 256 || seconds <= 0) { fprintf(stderr, "bad arguments\n"); return 2; }

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    get_function_list_fn gfl = (get_function_list_fn)dlsym(lib, "C_GetFunctionList");
    if (!gfl || gfl(&p11) != CKR_OK) { fprintf(stderr, "C_GetFunctionList missing\n"); return 2; }
    CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    CK_RV rv = p11->C_Initialize(&init);
    if (rv != CKR_OK) die("C_Initialize", rv);

    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    if ((rv = p11->C_GetSlotList(1, slots, &n)) != CKR_OK) die("C_GetSlotList", rv);
    int found = 0;
    for (CK_ULONG i = 0; i < n && !found; i++) {
        CK_TOKEN_INFO info;
        if (p11->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
        size_t len = strlen(label);
        if (len <= 32 && !memcmp(info.label, label, len) && (len == 32 || info.label[len] == ' ')) {
            slot = slots[i];
            found = 1;
        }
    }
    if (!found) { fprintf(stderr, "no token labelled '%s'\n", label); return 2; }

    CK_SESSION_HANDLE setup;
    if ((rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &setup)) != CKR_OK)
        die("C_OpenSession", rv);
    rv = p11->C_Login(setup, CKU_USER, (CK_BYTE *)pin, strlen(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) die("C_Login", rv);

    CK_BBOOL yes = 1;
    CK_OBJECT_HANDLE pub = 0;
    char keylabel[] = "pkcs11_speed";
    if (kind == 2) {
        CK_ULONG len = 32;
        CK_ATTRIBUTE t[] = {{CKA_TOKEN, &on_token, 1}, {CKA_LABEL, keylabel, sizeof keylabel - 1},
                            {CKA_VALUE_LEN, &len, sizeof len}, {CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1},
                            {CKA_SENSITIVE, &yes, 1}, {CKA_PRIVATE, &yes, 1}};
        CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
        if ((rv = p11->C_GenerateKey(setup, &m, t, sizeof t / sizeof t[0], &key)) != CKR_OK)
            die("C_GenerateKey", rv);
    } else {
        CK_ULONG bits = 2048;
        CK_BYTE exponent[] = {1, 0, 1};
        CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
        CK_ATTRIBUTE pt_rsa[] = {{CKA_TOKEN, &on_token, 1}, {CKA_LABEL, keylabel, sizeof keylabel - 1},
                                 {CKA_MODULUS_BITS, &bits, sizeof bits}, {CKA_PUBLIC_EXPONENT, exponent, 3},
                                 {CKA_VERIFY, &yes, 1}};
        CK_ATTRIBUTE pt_ec[] = {{CKA_TOKEN, &on_token, 1}, {CKA_LABEL, keylabel, sizeof keylabel - 1},
                                {CKA_EC_PARAMS, p256, sizeof p256}, {CKA_VERIFY, &yes, 1}};
        CK_ATTRIBUTE st[] = {{CKA_TOKEN, &on_token, 1}, {CKA_LABEL, keylabel, sizeof keylabel - 1},
                             {CKA_SIGN, &yes, 1}, {CKA_SENSITIVE, &yes, 1}, {CKA_PRIVATE, &yes, 1}};
        CK_MECHANISM m = {kind == 0 ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
        rv = kind == 0 ? p11->C_GenerateKeyPair(setup, &m, pt_rsa, 5, st, 5, &pub, &key)
                       : p11->C_GenerateKeyPair(setup, &m, pt_ec, 4, st, 5, &pub, &key);
        if (rv != CKR_OK) die("C_GenerateKeyPair", rv);
    }

    struct worker *workers = calloc(threads, sizeof *workers);
    for (int i = 0; i < threads; i++) pthread_create(&workers[i].thread, NULL, work, &workers[i]);
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL); /* every thread has its session open before the clock starts */
    double start = now();
    go = 1;
    size_t total = 0;
    CK_RV error = CKR_OK;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].count;
        if (workers[i].error) error = workers[i].error;
    }
    double elapsed = now() - start;
    double *all = malloc((total ? total : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, workers[i].latencies, workers[i].count * sizeof(double));
        k += workers[i].count;
    }
    qsort(all, total, sizeof(double), cmp);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)(total * 0.99)] : 0;
    if (on_token) {
        p11->C_DestroyObject(setup, key);
        if (pub) p11->C_DestroyObject(setup, pub);
    }
    p11->C_CloseSession(setup);
    p11->C_Finalize(NULL);
    printf("{\"operation\": \"%s\", \"threads\": %d, \"seconds\": %.3f, \"operations\": %zu, "
           "\"ops_per_second\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"error\": \"0x%lx\"}\n",
           argv[4], threads, elapsed, total, total / elapsed, p50, p99, error);
    return error == CKR_OK ? 0 : 1;
}
