/*
 * HA groups through the hsmcloud PKCS#11 library (tests/clients/pkcs11/test_ha_groups.py and
 * bench/ha_bench.py drive it). The Crypto Officer PIN is $HSMCLOUD_TEST_CO_PIN.
 *
 *     p11_ha MODULE outage SLOT THREADS    signing loop across a member's death and return
 *     p11_ha MODULE count SLOT PREFIX      how many token objects labelled PREFIX* the slot has
 *     p11_ha MODULE slots                  the slot list and token labels
 *     p11_ha MODULE find-sign SLOT LABEL N finds the private key LABEL and signs N times with it
 *     p11_ha MODULE gen SLOT LABEL         generates an RSA-2048 token key pair LABEL
 *     p11_ha MODULE rate SLOT THREADS SECONDS   RSA-2048 signatures per second
 *     p11_ha MODULE failover SLOT THREADS  signing while a member dies: prints "ready", reads
 *                                          "killed T" (T: the kill, Unix time in ms), then reports
 *                                          the calls that were in flight at T
 *
 * outage: logs in on SLOT, generates an RSA-2048 key pair, starts THREADS threads that sign and
 * verify in their own sessions without pause, prints "ready", then follows the lines on standard
 * input: "killed" (a member was cut: generate 3 key pairs labelled outage-N and sign with them,
 * print "outage-done"), "restarted" (print "signing"), "recovered" (sign for 3 more seconds, then
 * stop the threads and print the totals). Every failed call is printed and counted.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HC_PKCS11_NO_PROTOTYPES
#include "pkcs11.h"

static CK_FUNCTION_LIST *p11;
static const char *co_pin;
static CK_SLOT_ID slot;
static volatile int stop_threads;
static long failed, signatures;
static double slowest_ms;
static pthread_mutex_t stats = PTHREAD_MUTEX_INITIALIZER;
static CK_BBOOL yes = CK_TRUE;

static void load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get;
    if (h == NULL || (get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL || get(&p11) != CKR_OK) {
        printf("FAIL load %s: %s\n", path, dlerror());
        exit(2);
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static void fail(const char *what, CK_RV rv)
{
    pthread_mutex_lock(&stats);
    failed++;
    printf("FAIL %s: rv 0x%lx\n", what, (unsigned long)rv);
    fflush(stdout);
    pthread_mutex_unlock(&stats);
}

static CK_RV rsa_pair(CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
    CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG bits = 2048;
    CK_BYTE e[] = {1, 0, 1};
    CK_ATTRIBUTE pt[] = {{CKA_TOKEN, &yes, 1}, {CKA_VERIFY, &yes, 1}, {CKA_MODULUS_BITS, &bits, sizeof bits},
                         {CKA_PUBLIC_EXPONENT, e, 3}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ATTRIBUTE vt[] = {{CKA_TOKEN, &yes, 1}, {CKA_SIGN, &yes, 1}, {CKA_SENSITIVE, &yes, 1},
                         {CKA_PRIVATE, &yes, 1}, {CKA_LABEL, (void *)label, strlen(label)}};
    return p11->C_GenerateKeyPair(s, &m, pt, 5, vt, 5, pub, priv);
}

/* One signature and its verification; 0 when both worked. */
static int sign_verify(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub, CK_OBJECT_HANDLE priv, int verify)
{
    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_BYTE data[] = "hsmcloud HA signing loop", sig[512];
    CK_ULONG len = sizeof sig;
    CK_RV rv;
    double t0 = now_ms();
    if ((rv = p11->C_SignInit(s, &m, priv)) != CKR_OK) {
        fail("C_SignInit", rv);
        return 1;
    }
    if ((rv = p11->C_Sign(s, data, sizeof data - 1, sig, &len)) != CKR_OK) {
        fail("C_Sign", rv);
        return 1;
    }
    double took = now_ms() - t0;
    pthread_mutex_lock(&stats);
    signatures++;
    if (took > slowest_ms)
        slowest_ms = took;
    pthread_mutex_unlock(&stats);
    if (verify) {
        if ((rv = p11->C_VerifyInit(s, &m, pub)) != CKR_OK || (rv = p11->C_Verify(s, data, sizeof data - 1, sig, len)) != CKR_OK) {
            fail("C_Verify", rv);
            return 1;
        }
    }
    return 0;
}

static CK_OBJECT_HANDLE base_pub, base_priv;
static int verify_each = 1;

static void *signer(void *arg)
{
    CK_SESSION_HANDLE s;
    CK_RV rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    (void)arg;
    if (rv != CKR_OK) {
        fail("C_OpenSession (thread)", rv);
        return NULL;
    }
    while (!stop_threads)
        sign_verify(s, base_pub, base_priv, verify_each);
    p11->C_CloseSession(s);
    return NULL;
}

static int read_word(const char *want)
{
    char line[128];
    if (fgets(line, sizeof line, stdin) == NULL)
        return 0;
    line[strcspn(line, "\n")] = '\0';
    if (strcmp(line, want) != 0) {
        printf("FAIL expected '%s' on standard input, got '%s'\n", want, line);
        return 0;
    }
    return 1;
}

static int setup(CK_SESSION_HANDLE *s)
{
    CK_RV rv = p11->C_Initialize(NULL);
    if (rv != CKR_OK) {
        printf("FAIL C_Initialize: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
    if (rv == CKR_OK)
        rv = p11->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)co_pin, strlen(co_pin));
    if (rv != CKR_OK) {
        printf("FAIL open and login on slot %lu: 0x%lx\n", (unsigned long)slot, (unsigned long)rv);
        return 1;
    }
    return 0;
}

static int outage(int threads)
{
    CK_SESSION_HANDLE s;
    pthread_t tid[64];
    if (threads > 64)
        threads = 64;
    if (setup(&s))
        return 1;
    CK_RV rv = rsa_pair(s, "ha-base", &base_pub, &base_priv);
    if (rv != CKR_OK) {
        printf("FAIL generating the base key: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, signer, NULL);
    usleep(300000);
    printf("ready\n");
    fflush(stdout);
    if (!read_word("killed"))
        return 1;
    for (int i = 0; i < 3; i++) {
        char label[32];
        CK_OBJECT_HANDLE pub, priv;
        snprintf(label, sizeof label, "outage-%d", i);
        rv = rsa_pair(s, label, &pub, &priv);
        if (rv != CKR_OK)
            fail("C_GenerateKeyPair during the outage", rv);
        else
            sign_verify(s, pub, priv, 1);
    }
    printf("outage-done\n");
    fflush(stdout);
    if (!read_word("restarted"))
        return 1;
    usleep(1500000);
    printf("signing\n");
    fflush(stdout);
    if (!read_word("recovered"))
        return 1;
    /* calls go on: the library notices the recovery request at its next calls */
    double until = now_ms() + 3000;
    while (now_ms() < until)
        sign_verify(s, base_pub, base_priv, 0);
    stop_threads = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    p11->C_Logout(s);
    p11->C_CloseSession(s);
    p11->C_Finalize(NULL);
    printf("done signatures=%ld failed=%ld slowest_ms=%.1f\n", signatures, failed, slowest_ms);
    return failed != 0;
}

static int count(const char *prefix)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}};
    CK_OBJECT_HANDLE found[256];
    CK_ULONG n = 0, matching = 0;
    if (setup(&s))
        return 1;
    if (p11->C_FindObjectsInit(s, t, 1) != CKR_OK || p11->C_FindObjects(s, found, 256, &n) != CKR_OK) {
        printf("FAIL find\n");
        return 1;
    }
    p11->C_FindObjectsFinal(s);
    for (CK_ULONG i = 0; i < n; i++) {
        char label[128] = {0};
        CK_ATTRIBUTE lt = {CKA_LABEL, label, sizeof label - 1};
        if (p11->C_GetAttributeValue(s, found[i], &lt, 1) == CKR_OK && strncmp(label, prefix, strlen(prefix)) == 0)
            matching++;
    }
    p11->C_Finalize(NULL);
    printf("count=%lu\n", (unsigned long)matching);
    return 0;
}

static int find_sign(const char *label, int n)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE key;
    CK_ULONG found = 0;
    if (setup(&s))
        return 1;
    if (p11->C_FindObjectsInit(s, t, 2) != CKR_OK || p11->C_FindObjects(s, &key, 1, &found) != CKR_OK ||
        p11->C_FindObjectsFinal(s) != CKR_OK || found != 1) {
        printf("FAIL find %s\n", label);
        return 1;
    }
    for (int i = 0; i < n; i++)
        sign_verify(s, 0, key, 0);
    p11->C_Finalize(NULL);
    printf("signed=%ld failed=%ld\n", signatures, failed);
    return failed != 0;
}

static int gen(const char *label)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE pub, priv;
    if (setup(&s))
        return 1;
    CK_RV rv = rsa_pair(s, label, &pub, &priv);
    p11->C_Finalize(NULL);
    printf("gen rv=0x%lx\n", (unsigned long)rv);
    return rv != CKR_OK;
}

static int slots(void)
{
    CK_SLOT_ID list[64];
    CK_ULONG n = 64;
    CK_RV rv = p11->C_Initialize(NULL);
    if (rv == CKR_OK)
        rv = p11->C_GetSlotList(CK_TRUE, list, &n);
    if (rv != CKR_OK) {
        printf("FAIL slots: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_SLOT_INFO si;
        if (p11->C_GetTokenInfo(list[i], &ti) != CKR_OK || p11->C_GetSlotInfo(list[i], &si) != CKR_OK)
            continue;
        printf("slot %lu label=%.32s serial=%.16s desc=%.64s\n", (unsigned long)list[i], ti.label, ti.serialNumber,
               si.slotDescription);
    }
    p11->C_Finalize(NULL);
    return 0;
}

/* ---- failover: calls in flight when a member died ---- */

#define RECORDS 8192
typedef struct call_record {
    double start, end; /* CLOCK_REALTIME, ms */
    int ok;
} call_record;

static double real_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static int sessions_open; /* __atomic */

typedef struct recorder {
    call_record rec[RECORDS];
    size_t n;
} recorder;

static void *recording_signer(void *arg)
{
    recorder *r = arg;
    CK_SESSION_HANDLE s;
    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_BYTE data[] = "hsmcloud HA failover", sig[512];
    CK_RV rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        fail("C_OpenSession (thread)", rv);
        return NULL;
    }
    __atomic_add_fetch(&sessions_open, 1, __ATOMIC_SEQ_CST);
    while (!stop_threads) {
        CK_ULONG len = sizeof sig;
        call_record *c = &r->rec[r->n % RECORDS];
        c->start = real_ms();
        rv = p11->C_SignInit(s, &m, base_priv);
        if (rv == CKR_OK)
            rv = p11->C_Sign(s, data, sizeof data - 1, sig, &len);
        c->end = real_ms();
        c->ok = rv == CKR_OK;
        if (rv != CKR_OK)
            fail("C_SignInit/C_Sign", rv);
        r->n++;
    }
    p11->C_CloseSession(s);
    return NULL;
}

static int failover(int threads)
{
    CK_SESSION_HANDLE s;
    pthread_t tid[64];
    static recorder rec[64];
    char line[128];
    double t_kill;
    if (threads > 64)
        threads = 64;
    if (setup(&s))
        return 1;
    CK_RV rv = rsa_pair(s, "ha-failover", &base_pub, &base_priv);
    if (rv != CKR_OK) {
        printf("FAIL key: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, recording_signer, &rec[i]);
    while (__atomic_load_n(&sessions_open, __ATOMIC_SEQ_CST) < threads && failed == 0)
        usleep(10000);
    usleep(300000);
    printf("ready\n");
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL || sscanf(line, "killed %lf", &t_kill) != 1)
        return 1;
    usleep(3500000);
    stop_threads = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double worst = 0, first_after = -1;
    long spanning = 0, total = 0;
    for (int i = 0; i < threads; i++) {
        size_t n = rec[i].n < RECORDS ? rec[i].n : RECORDS;
        total += (long)rec[i].n;
        for (size_t j = 0; j < n; j++) {
            call_record *c = &rec[i].rec[j];
            if (c->start <= t_kill && c->end >= t_kill && c->ok) {
                spanning++;
                if (c->end - t_kill > worst)
                    worst = c->end - t_kill;
            }
            if (c->ok && c->start >= t_kill && (first_after < 0 || c->end - t_kill < first_after))
                first_after = c->end - t_kill;
        }
    }
    p11->C_Finalize(NULL);
    printf("failover in_flight=%ld worst_ms=%.1f first_new_ms=%.1f signatures=%ld failed=%ld\n", spanning, worst,
           first_after, total, failed);
    return failed != 0;
}

static int rate(int threads, int seconds)
{
    CK_SESSION_HANDLE s;
    pthread_t tid[64];
    if (threads > 64)
        threads = 64;
    if (setup(&s))
        return 1;
    CK_RV rv = rsa_pair(s, "ha-bench", &base_pub, &base_priv);
    if (rv != CKR_OK) {
        printf("FAIL key: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    verify_each = 0;
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, signer, NULL);
    usleep(500000); /* sessions open, warm */
    pthread_mutex_lock(&stats);
    long start_count = signatures;
    pthread_mutex_unlock(&stats);
    double t0 = now_ms();
    usleep((useconds_t)seconds * 1000000u);
    pthread_mutex_lock(&stats);
    long end_count = signatures;
    pthread_mutex_unlock(&stats);
    double t1 = now_ms();
    stop_threads = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    p11->C_DestroyObject(s, base_priv);
    p11->C_DestroyObject(s, base_pub);
    p11->C_Finalize(NULL);
    printf("rate=%.1f failed=%ld\n", (end_count - start_count) * 1000.0 / (t1 - t0), failed);
    return failed != 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: p11_ha MODULE outage|count|slots|rate ...\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    load(argv[1]);
    co_pin = getenv("HSMCLOUD_TEST_CO_PIN");
    if (co_pin == NULL)
        co_pin = "";
    if (argc > 3)
        slot = strtoul(argv[3], NULL, 10);
    if (!strcmp(argv[2], "outage") && argc > 4)
        return outage(atoi(argv[4]));
    if (!strcmp(argv[2], "count") && argc > 4)
        return count(argv[4]);
    if (!strcmp(argv[2], "find-sign") && argc > 5)
        return find_sign(argv[4], atoi(argv[5]));
    if (!strcmp(argv[2], "gen") && argc > 4)
        return gen(argv[4]);
    if (!strcmp(argv[2], "slots"))
        return slots();
    if (!strcmp(argv[2], "failover") && argc > 4)
        return failover(atoi(argv[4]));
    if (!strcmp(argv[2], "rate") && argc > 5)
        return rate(atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "bad arguments\n");
    return 2;
}
