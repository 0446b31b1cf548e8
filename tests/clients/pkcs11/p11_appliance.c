/*
 * Checks of the hsmcloud PKCS#11 library against a real appliance (tests/clients/pkcs11/
 * test_library_appliance.py starts one). Slot 0 is a ready partition (Crypto Officer PIN in
 * $HSMCLOUD_TEST_CO_PIN), slot 1 an uninitialized one, slot 2 one not assigned to this client.
 *
 *     p11_appliance MODULE CHECK [ARGS...]
 *
 * Prints "ok ..." / "FAIL ..." lines; exits 0 only if every expectation held.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define HC_PKCS11_NO_PROTOTYPES
#include "pkcs11.h"

static int failures;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *p11;
static const char *co_pin;

#define FAILF(...)                              \
    do {                                        \
        pthread_mutex_lock(&out_lock);          \
        printf("FAIL " __VA_ARGS__);            \
        printf("\n");                           \
        failures++;                             \
        pthread_mutex_unlock(&out_lock);        \
    } while (0)
#define EXPECT_RV(what, got, want)                                                               \
    do {                                                                                         \
        CK_RV got_ = (got), want_ = (want);                                                      \
        if (got_ != want_)                                                                       \
            FAILF("%s: rv 0x%lx, expected 0x%lx", what, (unsigned long)got_, (unsigned long)want_); \
    } while (0)
#define EXPECT(what, cond)  \
    do {                    \
        if (!(cond))        \
            FAILF("%s", what); \
    } while (0)

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static const CK_BYTE p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

static void load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get;
    if (h == NULL || (get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL || get(&p11) != CKR_OK) {
        printf("FAIL load %s: %s\n", path, dlerror());
        exit(2);
    }
}

static CK_RV login_co(CK_SESSION_HANDLE s)
{
    return p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)co_pin, strlen(co_pin));
}

static CK_RV aes_key(CK_SESSION_HANDLE s, CK_BBOOL extractable, CK_OBJECT_HANDLE *key)
{
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE t[] = {
        {CKA_VALUE_LEN, &len, sizeof len},   {CKA_TOKEN, &no, 1},       {CKA_ENCRYPT, &yes, 1},
        {CKA_DECRYPT, &yes, 1},              {CKA_WRAP, &yes, 1},       {CKA_UNWRAP, &yes, 1},
        {CKA_SENSITIVE, &yes, 1},            {CKA_EXTRACTABLE, &extractable, 1},
        {CKA_LABEL, "lib-aes", 7},
    };
    return p11->C_GenerateKey(s, &m, t, sizeof t / sizeof t[0], key);
}

static CK_RV ec_pair(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv, CK_BBOOL derive)
{
    CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)p256_oid, sizeof p256_oid}, {CKA_TOKEN, &no, 1},
                         {CKA_VERIFY, &yes, 1}};
    CK_ATTRIBUTE st[] = {{CKA_TOKEN, &no, 1}, {CKA_SIGN, &yes, 1}, {CKA_SENSITIVE, &yes, 1},
                         {CKA_DERIVE, &derive, 1}};
    return p11->C_GenerateKeyPair(s, &m, pt, 3, st, 4, pub, priv);
}

/* ---- basics: one session through most of the API ---- */

static void check_tokens(void)
{
    CK_SLOT_ID slots[4];
    CK_ULONG n = 4;
    CK_TOKEN_INFO info;
    CK_SLOT_INFO slot_info;

    EXPECT_RV("C_GetSlotList(tokenPresent)", p11->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    EXPECT("the assigned partitions have a token", n == 2 && slots[0] == 0 && slots[1] == 1);
    n = 4;
    EXPECT_RV("C_GetSlotList(all)", p11->C_GetSlotList(CK_FALSE, slots, &n), CKR_OK);
    EXPECT("three configured slots", n == 3);
    EXPECT_RV("C_GetSlotInfo(unassigned)", p11->C_GetSlotInfo(2, &slot_info), CKR_OK);
    EXPECT("no token in the unassigned slot", !(slot_info.flags & CKF_TOKEN_PRESENT));
    EXPECT_RV("C_GetTokenInfo(unassigned)", p11->C_GetTokenInfo(2, &info), CKR_TOKEN_NOT_PRESENT);
    EXPECT_RV("C_GetSlotInfo", p11->C_GetSlotInfo(0, &slot_info), CKR_OK);
    EXPECT("token present in slot 0", slot_info.flags & CKF_TOKEN_PRESENT);
    EXPECT_RV("C_GetTokenInfo(0)", p11->C_GetTokenInfo(0, &info), CKR_OK);
    EXPECT("slot 0 is initialized", info.flags & CKF_TOKEN_INITIALIZED);
    EXPECT("slot 0's label", memcmp(info.label, "app1 ", 5) == 0);
    EXPECT_RV("C_GetTokenInfo(1)", p11->C_GetTokenInfo(1, &info), CKR_OK);
    EXPECT("slot 1 is not initialized", !(info.flags & CKF_TOKEN_INITIALIZED));
}

static void check_attributes(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
    CK_BYTE label[64], one[1], value[64];
    CK_ULONG value_len = 0;
    CK_ATTRIBUTE q1[] = {{CKA_LABEL, NULL, 0}};
    CK_ATTRIBUTE q2[] = {{CKA_LABEL, one, sizeof one}, {CKA_VALUE_LEN, &value_len, sizeof value_len}};
    CK_ATTRIBUTE q3[] = {{CKA_VALUE, value, sizeof value}, {CKA_LABEL, label, sizeof label}};
    CK_ATTRIBUTE q4[] = {{0x7ffffff0UL, value, sizeof value}};

    EXPECT_RV("C_GetAttributeValue size query", p11->C_GetAttributeValue(s, key, q1, 1), CKR_OK);
    EXPECT("size query gives the label's length", q1[0].ulValueLen == 7);
    EXPECT_RV("C_GetAttributeValue small buffer", p11->C_GetAttributeValue(s, key, q2, 2), CKR_BUFFER_TOO_SMALL);
    EXPECT("too small: CK_UNAVAILABLE_INFORMATION", q2[0].ulValueLen == CK_UNAVAILABLE_INFORMATION);
    EXPECT("the other attribute is still returned", q2[1].ulValueLen == sizeof(CK_ULONG) && value_len == 32);
    EXPECT_RV("C_GetAttributeValue sensitive", p11->C_GetAttributeValue(s, key, q3, 2), CKR_ATTRIBUTE_SENSITIVE);
    EXPECT("sensitive: CK_UNAVAILABLE_INFORMATION", q3[0].ulValueLen == CK_UNAVAILABLE_INFORMATION);
    EXPECT("label beside it", q3[1].ulValueLen == 7 && memcmp(label, "lib-aes", 7) == 0);
    EXPECT_RV("C_GetAttributeValue unknown type", p11->C_GetAttributeValue(s, key, q4, 1),
              CKR_ATTRIBUTE_TYPE_INVALID);
    EXPECT("unknown: CK_UNAVAILABLE_INFORMATION", q4[0].ulValueLen == CK_UNAVAILABLE_INFORMATION);
}

static void check_aes(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
    CK_BYTE iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, aad[5] = "head", plain[100], cipher[200], back[200];
    CK_GCM_PARAMS gcm = {iv, sizeof iv, 96, aad, 4, 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof gcm};
    CK_ULONG n = 0, needed, back_len;
    CK_BYTE cbc_iv[16] = {0};
    CK_MECHANISM pad = {CKM_AES_CBC_PAD, cbc_iv, sizeof cbc_iv};
    CK_ULONG a, b, total;

    for (size_t i = 0; i < sizeof plain; i++)
        plain[i] = (CK_BYTE)i;
    EXPECT_RV("C_EncryptInit GCM", p11->C_EncryptInit(s, &m, key), CKR_OK);
    EXPECT_RV("C_Encrypt size query", p11->C_Encrypt(s, plain, sizeof plain, NULL, &n), CKR_OK);
    EXPECT("GCM output length", n == sizeof plain + 16);
    needed = n;
    n = 1;
    EXPECT_RV("C_Encrypt too small", p11->C_Encrypt(s, plain, sizeof plain, cipher, &n), CKR_BUFFER_TOO_SMALL);
    EXPECT("too small reports the needed length", n == needed);
    n = sizeof cipher;
    EXPECT_RV("C_Encrypt", p11->C_Encrypt(s, plain, sizeof plain, cipher, &n), CKR_OK);
    EXPECT("ciphertext length", n == needed);
    EXPECT_RV("C_Encrypt after the operation ended", p11->C_Encrypt(s, plain, 1, cipher, &n),
              CKR_OPERATION_NOT_INITIALIZED);
    EXPECT_RV("C_DecryptInit GCM", p11->C_DecryptInit(s, &m, key), CKR_OK);
    back_len = sizeof back;
    EXPECT_RV("C_Decrypt", p11->C_Decrypt(s, cipher, needed, back, &back_len), CKR_OK);
    EXPECT("GCM round trip", back_len == sizeof plain && memcmp(back, plain, sizeof plain) == 0);
    cipher[3] ^= 1;
    EXPECT_RV("C_DecryptInit GCM", p11->C_DecryptInit(s, &m, key), CKR_OK);
    back_len = sizeof back;
    EXPECT_RV("C_Decrypt tampered", p11->C_Decrypt(s, cipher, needed, back, &back_len), CKR_ENCRYPTED_DATA_INVALID);

    /* multi-part CBC-PAD */
    EXPECT_RV("C_EncryptInit CBC-PAD", p11->C_EncryptInit(s, &pad, key), CKR_OK);
    a = sizeof cipher;
    EXPECT_RV("C_EncryptUpdate", p11->C_EncryptUpdate(s, plain, 40, cipher, &a), CKR_OK);
    b = sizeof cipher - a;
    EXPECT_RV("C_EncryptUpdate 2", p11->C_EncryptUpdate(s, plain + 40, 60, cipher + a, &b), CKR_OK);
    total = a + b;
    a = sizeof cipher - total;
    EXPECT_RV("C_EncryptFinal", p11->C_EncryptFinal(s, cipher + total, &a), CKR_OK);
    total += a;
    EXPECT("CBC-PAD length", total == 112);
    EXPECT_RV("C_DecryptInit CBC-PAD", p11->C_DecryptInit(s, &pad, key), CKR_OK);
    back_len = sizeof back;
    EXPECT_RV("C_Decrypt CBC-PAD", p11->C_Decrypt(s, cipher, total, back, &back_len), CKR_OK);
    EXPECT("CBC-PAD round trip", back_len == sizeof plain && memcmp(back, plain, sizeof plain) == 0);
}

static void check_digest(CK_SESSION_HANDLE s)
{
    static const CK_BYTE abc_sha256[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                           0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                           0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    CK_MECHANISM m = {CKM_SHA256, NULL, 0};
    CK_BYTE out[64];
    CK_ULONG n = sizeof out;
    EXPECT_RV("C_DigestInit", p11->C_DigestInit(s, &m), CKR_OK);
    EXPECT_RV("C_Digest", p11->C_Digest(s, (CK_BYTE_PTR) "abc", 3, out, &n), CKR_OK);
    EXPECT("SHA-256(abc)", n == 32 && memcmp(out, abc_sha256, 32) == 0);
    EXPECT_RV("C_DigestInit", p11->C_DigestInit(s, &m), CKR_OK);
    EXPECT_RV("C_DigestUpdate", p11->C_DigestUpdate(s, (CK_BYTE_PTR) "a", 1), CKR_OK);
    EXPECT_RV("C_DigestUpdate", p11->C_DigestUpdate(s, (CK_BYTE_PTR) "bc", 2), CKR_OK);
    n = sizeof out;
    EXPECT_RV("C_DigestFinal", p11->C_DigestFinal(s, out, &n), CKR_OK);
    EXPECT("SHA-256(a|bc)", n == 32 && memcmp(out, abc_sha256, 32) == 0);
}

static void check_ec(CK_SESSION_HANDLE s)
{
    CK_OBJECT_HANDLE pub, priv;
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    CK_BYTE sig[128], data[] = "message to sign";
    CK_ULONG n = sizeof sig;

    EXPECT_RV("C_GenerateKeyPair EC P-256", ec_pair(s, &pub, &priv, CK_FALSE), CKR_OK);
    EXPECT_RV("C_SignInit ECDSA-SHA256", p11->C_SignInit(s, &m, priv), CKR_OK);
    EXPECT_RV("C_Sign", p11->C_Sign(s, data, sizeof data, sig, &n), CKR_OK);
    EXPECT("P-256 signature is 64 bytes", n == 64);
    EXPECT_RV("C_VerifyInit", p11->C_VerifyInit(s, &m, pub), CKR_OK);
    EXPECT_RV("C_Verify", p11->C_Verify(s, data, sizeof data, sig, n), CKR_OK);
    sig[10] ^= 0x40;
    EXPECT_RV("C_VerifyInit", p11->C_VerifyInit(s, &m, pub), CKR_OK);
    EXPECT_RV("C_Verify wrong signature", p11->C_Verify(s, data, sizeof data, sig, n), CKR_SIGNATURE_INVALID);
    EXPECT_RV("C_SignInit", p11->C_SignInit(s, &m, priv), CKR_OK);
    EXPECT_RV("C_SignUpdate", p11->C_SignUpdate(s, data, 4), CKR_OK);
    EXPECT_RV("C_SignUpdate", p11->C_SignUpdate(s, data + 4, sizeof data - 4), CKR_OK);
    n = sizeof sig;
    EXPECT_RV("C_SignFinal", p11->C_SignFinal(s, sig, &n), CKR_OK);
    EXPECT_RV("C_VerifyInit", p11->C_VerifyInit(s, &m, pub), CKR_OK);
    EXPECT_RV("C_VerifyUpdate", p11->C_VerifyUpdate(s, data, sizeof data), CKR_OK);
    EXPECT_RV("C_VerifyFinal", p11->C_VerifyFinal(s, sig, n), CKR_OK);
    /* PKCS#11 3.0: an Init with no mechanism ends the active operation of that kind. */
    EXPECT_RV("C_SignInit", p11->C_SignInit(s, &m, priv), CKR_OK);
    EXPECT_RV("C_SignUpdate", p11->C_SignUpdate(s, data, 4), CKR_OK);
    EXPECT_RV("C_SignInit again while active", p11->C_SignInit(s, &m, priv), CKR_OPERATION_ACTIVE);
    EXPECT_RV("C_SignInit(NULL) cancels", p11->C_SignInit(s, NULL, priv), CKR_OK);
    EXPECT_RV("C_SignUpdate after the cancel", p11->C_SignUpdate(s, data, 4), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT_RV("C_SignInit after the cancel", p11->C_SignInit(s, &m, priv), CKR_OK);
    n = sizeof sig;
    EXPECT_RV("C_Sign", p11->C_Sign(s, data, sizeof data, sig, &n), CKR_OK);
}

static void check_rsa(CK_SESSION_HANDLE s)
{
    CK_MECHANISM gen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG bits = 2048;
    CK_BYTE e[] = {1, 0, 1};
    CK_ATTRIBUTE pt[] = {{CKA_MODULUS_BITS, &bits, sizeof bits}, {CKA_PUBLIC_EXPONENT, e, 3},
                         {CKA_TOKEN, &no, 1}, {CKA_VERIFY, &yes, 1}, {CKA_ENCRYPT, &yes, 1}};
    CK_ATTRIBUTE st[] = {{CKA_TOKEN, &no, 1}, {CKA_SIGN, &yes, 1}, {CKA_DECRYPT, &yes, 1}};
    CK_OBJECT_HANDLE pub, priv;
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM sign = {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof pss};
    CK_BYTE label[] = "oaep label";
    CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, label, sizeof label};
    CK_MECHANISM crypt = {CKM_RSA_PKCS_OAEP, &oaep, sizeof oaep};
    CK_BYTE sig[512], data[] = "rsa data", back[512];
    CK_ULONG n = sizeof sig, m = sizeof back;

    EXPECT_RV("C_GenerateKeyPair RSA-2048", p11->C_GenerateKeyPair(s, &gen, pt, 5, st, 3, &pub, &priv), CKR_OK);
    EXPECT_RV("C_SignInit PSS", p11->C_SignInit(s, &sign, priv), CKR_OK);
    EXPECT_RV("C_Sign PSS", p11->C_Sign(s, data, sizeof data, sig, &n), CKR_OK);
    EXPECT("RSA-2048 signature is 256 bytes", n == 256);
    EXPECT_RV("C_VerifyInit PSS", p11->C_VerifyInit(s, &sign, pub), CKR_OK);
    EXPECT_RV("C_Verify PSS", p11->C_Verify(s, data, sizeof data, sig, n), CKR_OK);
    n = sizeof sig;
    EXPECT_RV("C_EncryptInit OAEP", p11->C_EncryptInit(s, &crypt, pub), CKR_OK);
    EXPECT_RV("C_Encrypt OAEP", p11->C_Encrypt(s, data, sizeof data, sig, &n), CKR_OK);
    EXPECT_RV("C_DecryptInit OAEP", p11->C_DecryptInit(s, &crypt, priv), CKR_OK);
    EXPECT_RV("C_Decrypt OAEP", p11->C_Decrypt(s, sig, n, back, &m), CKR_OK);
    EXPECT("OAEP round trip (label carried)", m == sizeof data && memcmp(back, data, m) == 0);
    oaep.ulSourceDataLen = 3; /* another label: decryption must fail */
    m = sizeof back;
    EXPECT_RV("C_DecryptInit OAEP other label", p11->C_DecryptInit(s, &crypt, priv), CKR_OK);
    EXPECT("C_Decrypt OAEP other label fails", p11->C_Decrypt(s, sig, n, back, &m) != CKR_OK);
}

static void check_wrap_and_derive(CK_SESSION_HANDLE s)
{
    CK_OBJECT_HANDLE kek, target, unwrapped, pub1, priv1, pub2, priv2, d1, d2;
    CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
    CK_BYTE wrapped[256], point1[160], point2[160], v1[64], v2[64];
    CK_ULONG n = 0, needed, p1 = sizeof point1, p2 = sizeof point2;
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
    CK_KEY_TYPE aes = CKK_AES, generic = CKK_GENERIC_SECRET;
    CK_ULONG len32 = 32;
    CK_ATTRIBUTE inner[] = {{CKA_EXTRACTABLE, &yes, 1}};
    CK_ATTRIBUTE kek_t[] = {{CKA_VALUE_LEN, &len32, sizeof len32}, {CKA_TOKEN, &no, 1}, {CKA_WRAP, &yes, 1},
                            {CKA_UNWRAP, &yes, 1}, {CKA_WRAP_TEMPLATE, inner, sizeof inner}};
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ATTRIBUTE unwrap_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                               {CKA_TOKEN, &no, 1}, {CKA_ENCRYPT, &yes, 1}};
    CK_ATTRIBUTE a1[] = {{CKA_EC_POINT, point1, sizeof point1}}, a2[] = {{CKA_EC_POINT, point2, sizeof point2}};
    CK_ATTRIBUTE derived_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &generic, sizeof generic},
                                {CKA_VALUE_LEN, &len32, sizeof len32}, {CKA_TOKEN, &no, 1},
                                {CKA_SENSITIVE, &no, 1}, {CKA_EXTRACTABLE, &yes, 1}};
    CK_ECDH1_DERIVE_PARAMS e1, e2;
    CK_MECHANISM ecdh1 = {CKM_ECDH1_DERIVE, &e1, sizeof e1}, ecdh2 = {CKM_ECDH1_DERIVE, &e2, sizeof e2};
    CK_ATTRIBUTE r1[] = {{CKA_VALUE, v1, sizeof v1}}, r2[] = {{CKA_VALUE, v2, sizeof v2}};

    EXPECT_RV("C_GenerateKey with CKA_WRAP_TEMPLATE", p11->C_GenerateKey(s, &gen, kek_t, 5, &kek), CKR_OK);
    EXPECT_RV("extractable AES key", aes_key(s, CK_TRUE, &target), CKR_OK);
    EXPECT_RV("C_WrapKey size query", p11->C_WrapKey(s, &wrap, kek, target, NULL, &n), CKR_OK);
    needed = n;
    /* CKM_AES_KEY_WRAP_PAD: PKCS#7 padding to 8-byte blocks, then RFC 3394 (32 -> 40 -> 48) */
    if (needed != 48)
        FAILF("wrapped length %lu, expected 48", (unsigned long)needed);
    n = sizeof wrapped;
    EXPECT_RV("C_WrapKey", p11->C_WrapKey(s, &wrap, kek, target, wrapped, &n), CKR_OK);
    EXPECT("wrapped length as announced", n == needed);
    EXPECT_RV("C_UnwrapKey", p11->C_UnwrapKey(s, &wrap, kek, wrapped, n, unwrap_t, 4, &unwrapped), CKR_OK);
    EXPECT_RV("non-extractable AES key", aes_key(s, CK_FALSE, &target), CKR_OK);
    n = sizeof wrapped;
    EXPECT_RV("C_WrapKey of a non-extractable key", p11->C_WrapKey(s, &wrap, kek, target, wrapped, &n),
              CKR_KEY_UNEXTRACTABLE);

    /* ECDH: both sides derive the same secret */
    EXPECT_RV("EC pair 1", ec_pair(s, &pub1, &priv1, CK_TRUE), CKR_OK);
    EXPECT_RV("EC pair 2", ec_pair(s, &pub2, &priv2, CK_TRUE), CKR_OK);
    EXPECT_RV("CKA_EC_POINT 1", p11->C_GetAttributeValue(s, pub1, a1, 1), CKR_OK);
    EXPECT_RV("CKA_EC_POINT 2", p11->C_GetAttributeValue(s, pub2, a2, 1), CKR_OK);
    p1 = a1[0].ulValueLen;
    p2 = a2[0].ulValueLen;
    e1 = (CK_ECDH1_DERIVE_PARAMS){CKD_NULL, 0, NULL, p2, point2};
    e2 = (CK_ECDH1_DERIVE_PARAMS){CKD_NULL, 0, NULL, p1, point1};
    EXPECT_RV("C_DeriveKey ECDH 1", p11->C_DeriveKey(s, &ecdh1, priv1, derived_t, 6, &d1), CKR_OK);
    EXPECT_RV("C_DeriveKey ECDH 2", p11->C_DeriveKey(s, &ecdh2, priv2, derived_t, 6, &d2), CKR_OK);
    EXPECT_RV("derived value 1", p11->C_GetAttributeValue(s, d1, r1, 1), CKR_OK);
    EXPECT_RV("derived value 2", p11->C_GetAttributeValue(s, d2, r2, 1), CKR_OK);
    EXPECT("ECDH agrees", r1[0].ulValueLen == 32 && r2[0].ulValueLen == 32 && memcmp(v1, v2, 32) == 0);
}

/* Structured mechanism parameters against published known answers. */
static void check_kdfs(CK_SESSION_HANDLE s)
{
    /* RFC 5869 test case 1 */
    CK_BYTE ikm[22], salt[13], info[10], okm[64];
    static const CK_BYTE expected_okm[42] = {
        0x3c, 0xb2, 0x5f, 0x25, 0xfa, 0xac, 0xd5, 0x7a, 0x90, 0x43, 0x4f, 0x64, 0xd0, 0x36,
        0x2f, 0x2a, 0x2d, 0x2d, 0x0a, 0x90, 0xcf, 0x1a, 0x5a, 0x4c, 0x5d, 0xb0, 0x2d, 0x56,
        0xec, 0xc4, 0xc5, 0xbf, 0x34, 0x00, 0x72, 0x08, 0xd5, 0xb8, 0x87, 0x18, 0x58, 0x65};
    /* FIPS-197 appendix C.1: AES-128 */
    static const CK_BYTE aes_key_value[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    static const CK_BYTE block[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                      0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    static const CK_BYTE expected_block[16] = {0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30,
                                               0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a};
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
    CK_KEY_TYPE generic = CKK_GENERIC_SECRET, aes = CKK_AES;
    CK_ULONG len42 = 42, len16 = 16;
    CK_OBJECT_HANDLE base, derived, aes_base;
    CK_ATTRIBUTE base_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &generic, sizeof generic},
                             {CKA_TOKEN, &no, 1}, {CKA_DERIVE, &yes, 1}, {CKA_VALUE, ikm, sizeof ikm}};
    CK_ATTRIBUTE out_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &generic, sizeof generic},
                            {CKA_VALUE_LEN, &len42, sizeof len42}, {CKA_TOKEN, &no, 1},
                            {CKA_SENSITIVE, &no, 1}, {CKA_EXTRACTABLE, &yes, 1}};
    CK_ATTRIBUTE aes_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                            {CKA_TOKEN, &no, 1}, {CKA_DERIVE, &yes, 1},
                            {CKA_VALUE, (void *)aes_key_value, sizeof aes_key_value}};
    CK_ATTRIBUTE aes_out_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                                {CKA_VALUE_LEN, &len16, sizeof len16}, {CKA_TOKEN, &no, 1},
                                {CKA_SENSITIVE, &no, 1}, {CKA_EXTRACTABLE, &yes, 1}};
    CK_ATTRIBUTE value[] = {{CKA_VALUE, okm, sizeof okm}};
    CK_HKDF_PARAMS hkdf;
    CK_MECHANISM m = {CKM_HKDF_DERIVE, &hkdf, sizeof hkdf};
    CK_KEY_DERIVATION_STRING_DATA ecb_data = {(CK_BYTE_PTR)block, sizeof block};
    CK_AES_CBC_ENCRYPT_DATA_PARAMS cbc_data;
    CK_MECHANISM ecb = {CKM_AES_ECB_ENCRYPT_DATA, &ecb_data, sizeof ecb_data};
    CK_MECHANISM cbc = {CKM_AES_CBC_ENCRYPT_DATA, &cbc_data, sizeof cbc_data};

    memset(ikm, 0x0b, sizeof ikm);
    for (int i = 0; i < 13; i++)
        salt[i] = (CK_BYTE)i;
    for (int i = 0; i < 10; i++)
        info[i] = (CK_BYTE)(0xf0 + i);
    hkdf = (CK_HKDF_PARAMS){CK_TRUE, CK_TRUE, CKM_SHA256, CKF_HKDF_SALT_DATA, salt, sizeof salt, 0, info, sizeof info};
    EXPECT_RV("C_CreateObject HKDF input key", p11->C_CreateObject(s, base_t, 5, &base), CKR_OK);
    EXPECT_RV("C_DeriveKey HKDF", p11->C_DeriveKey(s, &m, base, out_t, 6, &derived), CKR_OK);
    EXPECT_RV("HKDF output", p11->C_GetAttributeValue(s, derived, value, 1), CKR_OK);
    EXPECT("HKDF matches RFC 5869 test case 1", value[0].ulValueLen == 42 && memcmp(okm, expected_okm, 42) == 0);

    EXPECT_RV("C_CreateObject AES base key", p11->C_CreateObject(s, aes_t, 5, &aes_base), CKR_OK);
    EXPECT_RV("C_DeriveKey AES-ECB encrypt data", p11->C_DeriveKey(s, &ecb, aes_base, aes_out_t, 6, &derived), CKR_OK);
    value[0].ulValueLen = sizeof okm;
    EXPECT_RV("ECB-derived value", p11->C_GetAttributeValue(s, derived, value, 1), CKR_OK);
    EXPECT("AES-ECB encrypt data matches FIPS-197", value[0].ulValueLen == 16 && memcmp(okm, expected_block, 16) == 0);
    memset(cbc_data.iv, 0, sizeof cbc_data.iv); /* zero IV: one CBC block is the ECB block */
    cbc_data.pData = (CK_BYTE_PTR)block;
    cbc_data.length = sizeof block;
    EXPECT_RV("C_DeriveKey AES-CBC encrypt data", p11->C_DeriveKey(s, &cbc, aes_base, aes_out_t, 6, &derived), CKR_OK);
    value[0].ulValueLen = sizeof okm;
    EXPECT_RV("CBC-derived value", p11->C_GetAttributeValue(s, derived, value, 1), CKR_OK);
    EXPECT("AES-CBC encrypt data matches FIPS-197", value[0].ulValueLen == 16 && memcmp(okm, expected_block, 16) == 0);
}

static void check_eddsa(CK_SESSION_HANDLE s)
{
    static const CK_BYTE ed25519_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    CK_MECHANISM gen = {CKM_EC_EDWARDS_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)ed25519_oid, sizeof ed25519_oid}, {CKA_TOKEN, &no, 1},
                         {CKA_VERIFY, &yes, 1}};
    CK_ATTRIBUTE st[] = {{CKA_TOKEN, &no, 1}, {CKA_SIGN, &yes, 1}};
    CK_OBJECT_HANDLE pub, priv;
    CK_EDDSA_PARAMS plain_params = {CK_FALSE, 0, NULL};
    CK_MECHANISM pure = {CKM_EDDSA, NULL, 0}, with_params = {CKM_EDDSA, &plain_params, sizeof plain_params};
    CK_BYTE sig[128], sig2[128], data[] = "ed25519 message";
    CK_ULONG n = sizeof sig, n2 = sizeof sig2;

    EXPECT_RV("C_GenerateKeyPair Ed25519", p11->C_GenerateKeyPair(s, &gen, pt, 3, st, 2, &pub, &priv), CKR_OK);
    EXPECT_RV("C_SignInit EdDSA", p11->C_SignInit(s, &pure, priv), CKR_OK);
    EXPECT_RV("C_Sign EdDSA", p11->C_Sign(s, data, sizeof data, sig, &n), CKR_OK);
    EXPECT("Ed25519 signature is 64 bytes", n == 64);
    EXPECT_RV("C_VerifyInit EdDSA", p11->C_VerifyInit(s, &pure, pub), CKR_OK);
    EXPECT_RV("C_Verify EdDSA", p11->C_Verify(s, data, sizeof data, sig, n), CKR_OK);
    /* CK_EDDSA_PARAMS without prehash or context is plain Ed25519, which is deterministic */
    EXPECT_RV("C_SignInit EdDSA with CK_EDDSA_PARAMS", p11->C_SignInit(s, &with_params, priv), CKR_OK);
    EXPECT_RV("C_Sign EdDSA with CK_EDDSA_PARAMS", p11->C_Sign(s, data, sizeof data, sig2, &n2), CKR_OK);
    EXPECT("the same signature", n2 == n && memcmp(sig, sig2, n) == 0);
}

static void check_objects_and_random(CK_SESSION_HANDLE s)
{
    CK_OBJECT_CLASS data_class = CKO_DATA;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &data_class, sizeof data_class}, {CKA_TOKEN, &no, 1},
                        {CKA_LABEL, "lib-data", 8}, {CKA_VALUE, "payload", 7}};
    CK_ATTRIBUTE find[] = {{CKA_LABEL, "lib-data", 8}};
    CK_ATTRIBUTE relabel[] = {{CKA_LABEL, "renamed", 7}};
    CK_BYTE label[16];
    CK_ATTRIBUTE get[] = {{CKA_LABEL, label, sizeof label}};
    CK_OBJECT_HANDLE obj, found[4];
    CK_ULONG n, size;
    CK_BYTE r1[32], r2[32];

    EXPECT_RV("C_CreateObject", p11->C_CreateObject(s, t, 4, &obj), CKR_OK);
    EXPECT_RV("C_GetObjectSize", p11->C_GetObjectSize(s, obj, &size), CKR_OK);
    EXPECT_RV("C_FindObjectsInit", p11->C_FindObjectsInit(s, find, 1), CKR_OK);
    EXPECT_RV("C_FindObjects", p11->C_FindObjects(s, found, 4, &n), CKR_OK);
    EXPECT("found the data object", n == 1 && found[0] == obj);
    EXPECT_RV("C_FindObjectsFinal", p11->C_FindObjectsFinal(s), CKR_OK);
    EXPECT_RV("C_SetAttributeValue", p11->C_SetAttributeValue(s, obj, relabel, 1), CKR_OK);
    EXPECT_RV("C_GetAttributeValue", p11->C_GetAttributeValue(s, obj, get, 1), CKR_OK);
    EXPECT("renamed", get[0].ulValueLen == 7 && memcmp(label, "renamed", 7) == 0);
    EXPECT_RV("C_DestroyObject", p11->C_DestroyObject(s, obj), CKR_OK);
    EXPECT_RV("C_GetAttributeValue of a destroyed object", p11->C_GetAttributeValue(s, obj, get, 1),
              CKR_OBJECT_HANDLE_INVALID);
    EXPECT_RV("C_GenerateRandom", p11->C_GenerateRandom(s, r1, sizeof r1), CKR_OK);
    EXPECT_RV("C_GenerateRandom", p11->C_GenerateRandom(s, r2, sizeof r2), CKR_OK);
    EXPECT("random differs", memcmp(r1, r2, sizeof r1) != 0);
    /* PKCS#11 v2.40 §5.15: the seed is mixed into the token's generator */
    EXPECT_RV("C_SeedRandom", p11->C_SeedRandom(s, (CK_BYTE_PTR) "12345678", 8), CKR_OK);
    EXPECT_RV("C_SeedRandom(NULL, 0)", p11->C_SeedRandom(s, NULL, 0), CKR_OK);
    EXPECT_RV("C_GenerateRandom after seeding", p11->C_GenerateRandom(s, r1, sizeof r1), CKR_OK);
    EXPECT("random differs after seeding", memcmp(r1, r2, sizeof r1) != 0);
}

static int check_basics(void)
{
    CK_SESSION_HANDLE s, s2;
    CK_SESSION_INFO info;
    CK_OBJECT_HANDLE key;

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    check_tokens();
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    EXPECT_RV("C_GenerateKey before login", aes_key(s, CK_FALSE, &key), CKR_USER_NOT_LOGGED_IN);
    EXPECT_RV("C_Login wrong PIN", p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "wrong-pin-1", 11), CKR_PIN_INCORRECT);
    EXPECT_RV("C_Login", login_co(s), CKR_OK);
    EXPECT_RV("C_Login again", login_co(s), CKR_USER_ALREADY_LOGGED_IN);
    EXPECT_RV("C_GetSessionInfo", p11->C_GetSessionInfo(s, &info), CKR_OK);
    EXPECT("session state RW user", info.state == CKS_RW_USER_FUNCTIONS && info.slotID == 0 &&
                                        (info.flags & CKF_RW_SESSION));
    /* a login applies to every session of the application on the token */
    EXPECT_RV("second session", p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s2), CKR_OK);
    EXPECT_RV("C_GetSessionInfo second", p11->C_GetSessionInfo(s2, &info), CKR_OK);
    EXPECT("second session is logged in too", info.state == CKS_RO_USER_FUNCTIONS);

    EXPECT_RV("C_GenerateKey AES-256", aes_key(s, CK_FALSE, &key), CKR_OK);
    check_attributes(s, key);
    check_aes(s, key);
    check_digest(s);
    check_ec(s);
    check_rsa(s);
    check_wrap_and_derive(s);
    check_kdfs(s);
    check_eddsa(s);
    check_objects_and_random(s);

    EXPECT_RV("C_Logout", p11->C_Logout(s), CKR_OK);
    EXPECT_RV("C_CloseSession", p11->C_CloseSession(s), CKR_OK);
    EXPECT_RV("a closed session", p11->C_GetSessionInfo(s, &info), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_CloseAllSessions", p11->C_CloseAllSessions(0), CKR_OK);
    EXPECT_RV("closed by C_CloseAllSessions", p11->C_GetSessionInfo(s2, &info), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- C_InitToken and C_InitPIN on the uninitialized partition (slot 1) ---- */

static int check_init_token(void)
{
    const char *so = getenv("HSMCLOUD_TEST_NEW_SO_PIN"), *user = "new-co-pin-1", *user2 = "new-co-pin-2";
    CK_UTF8CHAR label[32];
    CK_TOKEN_INFO info;
    CK_SESSION_HANDLE s;
    CK_BYTE r[8];

    memset(label, ' ', sizeof label);
    memcpy(label, "fresh", 5);
    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_InitToken", p11->C_InitToken(1, (CK_UTF8CHAR_PTR)so, strlen(so), label), CKR_OK);
    EXPECT_RV("C_GetTokenInfo", p11->C_GetTokenInfo(1, &info), CKR_OK);
    EXPECT("initialized with its label", (info.flags & CKF_TOKEN_INITIALIZED) && memcmp(info.label, "fresh ", 6) == 0);
    EXPECT("no user PIN yet", !(info.flags & CKF_USER_PIN_INITIALIZED));
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    EXPECT_RV("C_Login SO", p11->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)so, strlen(so)), CKR_OK);
    EXPECT_RV("C_InitPIN", p11->C_InitPIN(s, (CK_UTF8CHAR_PTR)user, strlen(user)), CKR_OK);
    EXPECT_RV("C_Logout", p11->C_Logout(s), CKR_OK);
    EXPECT_RV("C_Login CO", p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)user, strlen(user)), CKR_OK);
    /* partition policy 21 (default 1): the new PIN must be changed first */
    EXPECT_RV("C_GenerateRandom before the PIN change", p11->C_GenerateRandom(s, r, sizeof r), CKR_PIN_EXPIRED);
    EXPECT_RV("C_SetPIN", p11->C_SetPIN(s, (CK_UTF8CHAR_PTR)user, strlen(user), (CK_UTF8CHAR_PTR)user2, strlen(user2)),
              CKR_OK);
    EXPECT_RV("C_GenerateRandom after it", p11->C_GenerateRandom(s, r, sizeof r), CKR_OK);
    EXPECT_RV("C_SetPIN with a wrong old PIN",
              p11->C_SetPIN(s, (CK_UTF8CHAR_PTR) "wrong-old-pin", 13, (CK_UTF8CHAR_PTR)user, strlen(user)),
              CKR_PIN_INCORRECT);
    EXPECT_RV("C_SetPIN to an empty PIN", p11->C_SetPIN(s, (CK_UTF8CHAR_PTR)user2, strlen(user2), (CK_UTF8CHAR_PTR) "", 0),
              CKR_PIN_LEN_RANGE);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- threads: many sessions generating keys and signing at once ---- */

typedef struct {
    int index;
    int sessions;
    long signatures;
    long keys;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    for (int i = 0; i < w->sessions; i++) {
        CK_SESSION_HANDLE s;
        CK_OBJECT_HANDLE pub, priv, aes;
        CK_BYTE data[48], sig[128];
        CK_ULONG n = sizeof sig;
        snprintf((char *)data, sizeof data, "thread %d session %d", w->index, i);
        if (p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK) {
            FAILF("thread %d: C_OpenSession", w->index);
            return NULL;
        }
        CK_RV rv = ec_pair(s, &pub, &priv, CK_FALSE);
        if (rv != CKR_OK) {
            FAILF("thread %d: C_GenerateKeyPair rv 0x%lx", w->index, (unsigned long)rv);
        } else {
            w->keys++;
            for (int k = 0; k < 3; k++) {
                n = sizeof sig;
                if (p11->C_SignInit(s, &m, priv) != CKR_OK || p11->C_Sign(s, data, sizeof data, sig, &n) != CKR_OK ||
                    p11->C_VerifyInit(s, &m, pub) != CKR_OK || p11->C_Verify(s, data, sizeof data, sig, n) != CKR_OK) {
                    FAILF("thread %d: sign/verify", w->index);
                    break;
                }
                w->signatures++;
            }
        }
        if (aes_key(s, CK_FALSE, &aes) == CKR_OK)
            w->keys++;
        else
            FAILF("thread %d: AES key", w->index);
        if (p11->C_CloseSession(s) != CKR_OK)
            FAILF("thread %d: C_CloseSession", w->index);
    }
    return NULL;
}

static int check_threads(int threads, int sessions)
{
    pthread_t tid[64];
    worker_t w[64];
    CK_SESSION_HANDLE login;
    CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    long signatures = 0, keys = 0;

    if (threads > 64)
        threads = 64;
    EXPECT_RV("C_Initialize", p11->C_Initialize(&args), CKR_OK);
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &login), CKR_OK);
    EXPECT_RV("C_Login", login_co(login), CKR_OK);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){.index = i, .sessions = sessions};
        pthread_create(&tid[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        signatures += w[i].signatures;
        keys += w[i].keys;
    }
    printf("ok threads=%d sessions=%d keys=%ld signatures=%ld\n", threads, sessions, keys, signatures);
    EXPECT("every key generated", keys == 2L * threads * sessions);
    EXPECT("every signature made and verified", signatures == 3L * threads * sessions);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- fork: the child starts afresh while the parent goes on ---- */

static int sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub)
{
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    CK_BYTE sig[128], data[] = "fork";
    CK_ULONG n = sizeof sig;
    return p11->C_SignInit(s, &m, priv) == CKR_OK && p11->C_Sign(s, data, sizeof data, sig, &n) == CKR_OK &&
           p11->C_VerifyInit(s, &m, pub) == CKR_OK && p11->C_Verify(s, data, sizeof data, sig, n) == CKR_OK;
}

static int check_fork(void)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE pub, priv;
    CK_SESSION_INFO info;
    pid_t pid;
    int status;

    EXPECT_RV("parent C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("parent C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
              CKR_OK);
    EXPECT_RV("parent C_Login", login_co(s), CKR_OK);
    EXPECT_RV("parent key pair", ec_pair(s, &pub, &priv, CK_FALSE), CKR_OK);
    EXPECT("parent signs", sign_once(s, priv, pub));
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        CK_SESSION_HANDLE cs;
        CK_OBJECT_HANDLE cpub, cpriv;
        failures = 0;
        EXPECT_RV("child: the parent's session before C_Initialize", p11->C_GetSessionInfo(s, &info),
                  CKR_CRYPTOKI_NOT_INITIALIZED);
        EXPECT("child: signing before C_Initialize fails", !sign_once(s, priv, pub));
        EXPECT_RV("child C_Initialize", p11->C_Initialize(NULL), CKR_OK);
        EXPECT_RV("child: the parent's session is not its own", p11->C_GetSessionInfo(s, &info),
                  CKR_SESSION_HANDLE_INVALID);
        EXPECT_RV("child C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &cs),
                  CKR_OK);
        EXPECT_RV("child session starts logged out (a new application)", p11->C_GetSessionInfo(cs, &info), CKR_OK);
        EXPECT("child state RW public", info.state == CKS_RW_PUBLIC_SESSION);
        EXPECT_RV("child C_Login", login_co(cs), CKR_OK);
        EXPECT_RV("child key pair", ec_pair(cs, &cpub, &cpriv, CK_FALSE), CKR_OK);
        for (int i = 0; i < 5; i++)
            EXPECT("child signs", sign_once(cs, cpriv, cpub));
        EXPECT_RV("child C_Finalize", p11->C_Finalize(NULL), CKR_OK);
        fflush(stdout);
        _exit(failures ? 1 : 0);
    }
    EXPECT("fork", pid > 0);
    /* the parent keeps working while the child runs and after it finalized and exited */
    for (int i = 0; i < 5; i++)
        EXPECT("parent signs while the child runs", sign_once(s, priv, pub));
    waitpid(pid, &status, 0);
    EXPECT("child passed", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_RV("parent session after the child", p11->C_GetSessionInfo(s, &info), CKR_OK);
    EXPECT("parent still logged in", info.state == CKS_RW_USER_FUNCTIONS);
    for (int i = 0; i < 5; i++)
        EXPECT("parent signs after the child", sign_once(s, priv, pub));
    EXPECT_RV("parent C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- the appliance goes away: device error, then invalid sessions, then no token ---- */

static int check_appliance_lost(void)
{
    CK_SESSION_HANDLE s;
    CK_SESSION_INFO info;
    CK_OBJECT_HANDLE pub, priv;
    CK_SLOT_ID slots[4];
    CK_ULONG n = 4;
    char line[16];

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    EXPECT_RV("C_Login", login_co(s), CKR_OK);
    EXPECT_RV("key pair", ec_pair(s, &pub, &priv, CK_FALSE), CKR_OK);
    EXPECT("signs", sign_once(s, priv, pub));
    printf("ready\n");
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL) /* the test stops the appliance, then writes a line */
        FAILF("no go-ahead");
    EXPECT_RV("the first call after the appliance went away", p11->C_GetSessionInfo(s, &info), CKR_DEVICE_ERROR);
    EXPECT_RV("its sessions are gone with its last connection", p11->C_GetSessionInfo(s, &info),
              CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("C_GetSlotList(tokenPresent)", p11->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    EXPECT("no token without the appliance", n == 0);
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_DEVICE_ERROR);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- the partition's assignment is revoked while the library runs ---- */

static int check_revoked(void)
{
    CK_TOKEN_INFO info;
    CK_SLOT_INFO slot_info;
    CK_SLOT_ID slots[4];
    CK_ULONG n = 4;
    CK_SESSION_HANDLE s;
    char line[16];

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_GetTokenInfo before", p11->C_GetTokenInfo(0, &info), CKR_OK);
    printf("ready\n");
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        FAILF("no go-ahead");
    EXPECT_RV("C_GetTokenInfo after the revocation", p11->C_GetTokenInfo(0, &info), CKR_TOKEN_NOT_PRESENT);
    EXPECT_RV("C_OpenSession after the revocation",
              p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_TOKEN_NOT_PRESENT);
    EXPECT_RV("C_GetSlotInfo", p11->C_GetSlotInfo(0, &slot_info), CKR_OK);
    EXPECT("no token", !(slot_info.flags & CKF_TOKEN_PRESENT));
    EXPECT_RV("C_GetSlotList(tokenPresent)", p11->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    EXPECT("only the other partition", n == 1 && slots[0] == 1);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

/* ---- two appliances: slot 0 on one, slot 1 on the other (same partition serial on both) ---- */

static int check_two_appliances(void)
{
    CK_SESSION_HANDLE s0, s1;
    CK_SESSION_INFO info;
    CK_OBJECT_HANDLE k0, k1;
    CK_TOKEN_INFO t0, t1;
    CK_BYTE r[16];

    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_GetTokenInfo(0)", p11->C_GetTokenInfo(0, &t0), CKR_OK);
    EXPECT_RV("C_GetTokenInfo(1)", p11->C_GetTokenInfo(1, &t1), CKR_OK);
    EXPECT_RV("C_OpenSession(0)", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s0), CKR_OK);
    EXPECT_RV("C_OpenSession(1)", p11->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s1), CKR_OK);
    EXPECT("distinct session handles", s0 != s1);
    EXPECT_RV("C_Login on appliance A", login_co(s0), CKR_OK);
    EXPECT_RV("appliance B is not logged in by A's login", p11->C_GetSessionInfo(s1, &info), CKR_OK);
    EXPECT("B's session is public", info.state == CKS_RW_PUBLIC_SESSION && info.slotID == 1);
    EXPECT_RV("C_Login on appliance B", login_co(s1), CKR_OK);
    EXPECT_RV("key on A", aes_key(s0, CK_FALSE, &k0), CKR_OK);
    EXPECT_RV("key on B", aes_key(s1, CK_FALSE, &k1), CKR_OK);
    EXPECT_RV("C_CloseAllSessions(0)", p11->C_CloseAllSessions(0), CKR_OK);
    EXPECT_RV("A's session is closed", p11->C_GetSessionInfo(s0, &info), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV("B's session goes on", p11->C_GetSessionInfo(s1, &info), CKR_OK);
    EXPECT("still slot 1, logged in", info.slotID == 1 && info.state == CKS_RW_USER_FUNCTIONS);
    EXPECT_RV("B still generates random", p11->C_GenerateRandom(s1, r, sizeof r), CKR_OK);
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODULE CHECK [ARGS]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    co_pin = getenv("HSMCLOUD_TEST_CO_PIN");
    if (co_pin == NULL) {
        fprintf(stderr, "HSMCLOUD_TEST_CO_PIN is not set\n");
        return 2;
    }
    load(argv[1]);
    const char *check = argv[2];
    if (!strcmp(check, "basics"))
        check_basics();
    else if (!strcmp(check, "init-token"))
        check_init_token();
    else if (!strcmp(check, "threads"))
        check_threads(argc > 3 ? atoi(argv[3]) : 16, argc > 4 ? atoi(argv[4]) : 8);
    else if (!strcmp(check, "fork"))
        check_fork();
    else if (!strcmp(check, "revoked"))
        check_revoked();
    else if (!strcmp(check, "two-appliances"))
        check_two_appliances();
    else if (!strcmp(check, "appliance-lost"))
        check_appliance_lost();
    else {
        fprintf(stderr, "unknown check %s\n", check);
        return 2;
    }
    if (failures == 0)
        printf("ok %s\n", check);
    return failures ? 1 : 0;
}
