/*
 * Attribute arrays and SP 800-108 key derivation through the hsmcloud PKCS#11 library, against a
 * real appliance (tests/clients/pkcs11/test_library_arrays_kdf.py starts one). Slot 0 is a ready
 * partition; the Crypto Officer PIN is in $HSMCLOUD_TEST_CO_PIN.
 *
 *     p11_arrays_kdf MODULE
 *
 * Prints "FAIL ..." for every expectation that does not hold, "value NAME HEX" for derived keys
 * the test recomputes, and "ok" at the end; exits 0 only if every expectation held.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HC_PKCS11_NO_PROTOTYPES
#include "pkcs11.h"

#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x0000210BUL
#endif

static int failures;
static CK_FUNCTION_LIST *p11;

#define FAILF(...)                   \
    do {                             \
        printf("FAIL " __VA_ARGS__); \
        printf("\n");                \
        failures++;                  \
    } while (0)
#define EXPECT_RV(what, got, want)                                                                  \
    do {                                                                                            \
        CK_RV got_ = (got), want_ = (want);                                                         \
        if (got_ != want_)                                                                          \
            FAILF("%s: rv 0x%lx, expected 0x%lx", what, (unsigned long)got_, (unsigned long)want_); \
    } while (0)
#define EXPECT(what, cond)     \
    do {                       \
        if (!(cond))           \
            FAILF("%s", what); \
    } while (0)

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS secret_class = CKO_SECRET_KEY, data_class = CKO_DATA;
static CK_KEY_TYPE aes_type = CKK_AES, generic_type = CKK_GENERIC_SECRET;

static void load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get;
    if (h == NULL || (get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL || get(&p11) != CKR_OK) {
        printf("FAIL load %s: %s\n", path, dlerror());
        exit(2);
    }
}

static CK_OBJECT_HANDLE secret_key(CK_SESSION_HANDLE s, CK_KEY_TYPE type, const void *value, CK_ULONG len,
                                   CK_ATTRIBUTE *extra, CK_ULONG n_extra)
{
    CK_ATTRIBUTE t[16] = {
        {CKA_CLASS, &secret_class, sizeof secret_class}, {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_VALUE, (void *)value, len}, {CKA_TOKEN, &no, 1},
    };
    CK_ULONG n = 4;
    for (CK_ULONG i = 0; i < n_extra && n < 16; i++)
        t[n++] = extra[i];
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    EXPECT_RV("C_CreateObject secret key", p11->C_CreateObject(s, t, n, &h), CKR_OK);
    return h;
}

static void print_value(CK_SESSION_HANDLE s, const char *name, CK_OBJECT_HANDLE key)
{
    unsigned char v[512];
    CK_ATTRIBUTE a = {CKA_VALUE, v, sizeof v};
    CK_RV rv = p11->C_GetAttributeValue(s, key, &a, 1);
    EXPECT_RV(name, rv, CKR_OK);
    if (rv != CKR_OK)
        return;
    printf("value %s ", name);
    for (CK_ULONG i = 0; i < a.ulValueLen && i < sizeof v; i++)
        printf("%02x", v[i]);
    printf("\n");
}

/* ---- attribute arrays ---- */

static void check_arrays(CK_SESSION_HANDLE s)
{
    CK_ATTRIBUTE wrap_template[] = {{CKA_CLASS, &secret_class, sizeof secret_class},
                                    {CKA_KEY_TYPE, &aes_type, sizeof aes_type},
                                    {CKA_EXTRACTABLE, &yes, 1}};
    CK_ATTRIBUTE unwrap_template[] = {{CKA_SENSITIVE, &yes, 1}, {CKA_LABEL, "unwrapped", 9}};
    CK_MECHANISM_TYPE allowed[] = {CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD};
    unsigned char kek_value[32], plain_value[16], other_value[24];
    memset(kek_value, 0x4b, sizeof kek_value);
    memset(plain_value, 0x21, sizeof plain_value);
    memset(other_value, 0x37, sizeof other_value);
    CK_ATTRIBUTE kek_extra[] = {{CKA_WRAP, &yes, 1}, {CKA_UNWRAP, &yes, 1},
                                {CKA_WRAP_TEMPLATE, wrap_template, sizeof wrap_template},
                                {CKA_UNWRAP_TEMPLATE, unwrap_template, sizeof unwrap_template},
                                {CKA_ALLOWED_MECHANISMS, allowed, sizeof allowed}};
    CK_OBJECT_HANDLE kek = secret_key(s, CKK_AES, kek_value, sizeof kek_value, kek_extra, 5);

    /* the two-call protocol, and a third call for the values */
    CK_ATTRIBUTE q = {CKA_WRAP_TEMPLATE, NULL, 0};
    EXPECT_RV("C_GetAttributeValue(CKA_WRAP_TEMPLATE) size", p11->C_GetAttributeValue(s, kek, &q, 1), CKR_OK);
    EXPECT("CKA_WRAP_TEMPLATE is 3 CK_ATTRIBUTEs", q.ulValueLen == 3 * sizeof(CK_ATTRIBUTE));
    CK_ATTRIBUTE entries[4];
    memset(entries, 0, sizeof entries);
    q.pValue = entries;
    q.ulValueLen = 3 * sizeof(CK_ATTRIBUTE) - 1;
    EXPECT_RV("CKA_WRAP_TEMPLATE into a short array", p11->C_GetAttributeValue(s, kek, &q, 1), CKR_BUFFER_TOO_SMALL);
    EXPECT("a short array gets CK_UNAVAILABLE_INFORMATION", q.ulValueLen == CK_UNAVAILABLE_INFORMATION);
    q.ulValueLen = sizeof entries; /* more room than needed: the exact length comes back */
    EXPECT_RV("CKA_WRAP_TEMPLATE types and lengths", p11->C_GetAttributeValue(s, kek, &q, 1), CKR_OK);
    EXPECT("the exact length", q.ulValueLen == 3 * sizeof(CK_ATTRIBUTE));
    EXPECT("types in order", entries[0].type == CKA_CLASS && entries[1].type == CKA_KEY_TYPE &&
                                 entries[2].type == CKA_EXTRACTABLE);
    EXPECT("lengths", entries[0].ulValueLen == sizeof(CK_ULONG) && entries[1].ulValueLen == sizeof(CK_ULONG) &&
                          entries[2].ulValueLen == 1);
    CK_OBJECT_CLASS got_class = 0;
    CK_KEY_TYPE got_type = 0;
    CK_BBOOL got_extractable = CK_FALSE;
    entries[0].pValue = &got_class;
    entries[1].pValue = &got_type;
    entries[2].pValue = &got_extractable;
    EXPECT_RV("CKA_WRAP_TEMPLATE values", p11->C_GetAttributeValue(s, kek, &q, 1), CKR_OK);
    EXPECT("values", got_class == CKO_SECRET_KEY && got_type == CKK_AES && got_extractable == CK_TRUE);

    /* by position: input types are ignored and set; a short entry is unavailable, the others filled */
    CK_BYTE one_byte = 0x55;
    CK_BBOOL flag = CK_FALSE;
    CK_ATTRIBUTE ask[3] = {{CKA_LABEL, &one_byte, 1}, {CKA_LABEL, NULL, 0}, {CKA_LABEL, &flag, 1}};
    CK_ATTRIBUTE positional = {CKA_WRAP_TEMPLATE, ask, sizeof ask};
    EXPECT_RV("an entry with a short buffer", p11->C_GetAttributeValue(s, kek, &positional, 1), CKR_BUFFER_TOO_SMALL);
    EXPECT("types set on output", ask[0].type == CKA_CLASS && ask[1].type == CKA_KEY_TYPE &&
                                      ask[2].type == CKA_EXTRACTABLE);
    EXPECT("the short entry is unavailable and untouched",
           ask[0].ulValueLen == CK_UNAVAILABLE_INFORMATION && one_byte == 0x55);
    EXPECT("a NULL entry gets its length, a large enough one its value",
           ask[1].ulValueLen == sizeof(CK_ULONG) && ask[2].ulValueLen == 1 && flag == CK_TRUE);
    EXPECT("the outer length is exact", positional.ulValueLen == 3 * sizeof(CK_ATTRIBUTE));

    /* the unwrap template, an empty derive template, the allowed mechanisms, all in one call,
     * beside a sensitive attribute (its code wins; the others are still filled) */
    CK_ATTRIBUTE unwrap_entries[2] = {{0, NULL, 0}, {0, NULL, 0}};
    CK_MECHANISM_TYPE got_allowed[4];
    CK_BYTE secret[64];
    CK_ATTRIBUTE several[] = {
        {CKA_UNWRAP_TEMPLATE, unwrap_entries, sizeof unwrap_entries}, {CKA_DERIVE_TEMPLATE, NULL, 0},
        {CKA_ALLOWED_MECHANISMS, got_allowed, sizeof got_allowed}, {CKA_VALUE, secret, sizeof secret}};
    EXPECT_RV("several attributes with a sensitive one", p11->C_GetAttributeValue(s, kek, several, 4),
              CKR_ATTRIBUTE_SENSITIVE);
    EXPECT("unwrap template", several[0].ulValueLen == 2 * sizeof(CK_ATTRIBUTE) &&
                                  unwrap_entries[0].type == CKA_SENSITIVE && unwrap_entries[1].type == CKA_LABEL &&
                                  unwrap_entries[1].ulValueLen == 9);
    EXPECT("empty derive template", several[1].ulValueLen == 0);
    EXPECT("allowed mechanisms", several[2].ulValueLen == 2 * sizeof(CK_MECHANISM_TYPE) &&
                                     got_allowed[0] == CKM_AES_KEY_WRAP && got_allowed[1] == CKM_AES_KEY_WRAP_PAD);
    EXPECT("the sensitive value is unavailable", several[3].ulValueLen == CK_UNAVAILABLE_INFORMATION);

    /* a data object has no CKA_WRAP_TEMPLATE */
    CK_ATTRIBUTE data_t[] = {{CKA_CLASS, &data_class, sizeof data_class}, {CKA_TOKEN, &no, 1},
                             {CKA_VALUE, "data", 4}};
    CK_OBJECT_HANDLE data = CK_INVALID_HANDLE;
    EXPECT_RV("C_CreateObject data", p11->C_CreateObject(s, data_t, 3, &data), CKR_OK);
    CK_ATTRIBUTE none = {CKA_WRAP_TEMPLATE, NULL, 0};
    EXPECT_RV("CKA_WRAP_TEMPLATE of a data object", p11->C_GetAttributeValue(s, data, &none, 1),
              CKR_ATTRIBUTE_TYPE_INVALID);
    EXPECT("unavailable", none.ulValueLen == CK_UNAVAILABLE_INFORMATION);

    /* the templates are enforced: C_WrapKey only of keys matching CKA_WRAP_TEMPLATE, only with an
     * allowed mechanism; C_UnwrapKey applies CKA_UNWRAP_TEMPLATE and refuses a contradiction */
    CK_ATTRIBUTE plain_extra[] = {{CKA_EXTRACTABLE, &yes, 1}, {CKA_SENSITIVE, &yes, 1}};
    CK_OBJECT_HANDLE matching = secret_key(s, CKK_AES, plain_value, sizeof plain_value, plain_extra, 2);
    CK_OBJECT_HANDLE other = secret_key(s, CKK_GENERIC_SECRET, other_value, sizeof other_value, plain_extra, 2);
    CK_MECHANISM kw = {CKM_AES_KEY_WRAP, NULL, 0}, kwp = {CKM_AES_KEY_WRAP_KWP, NULL, 0};
    CK_BYTE wrapped[64];
    CK_ULONG wrapped_len = sizeof wrapped;
    EXPECT_RV("C_WrapKey of a key matching the template", p11->C_WrapKey(s, &kw, kek, matching, wrapped, &wrapped_len),
              CKR_OK);
    EXPECT("wrapped length", wrapped_len == 24);
    CK_ULONG other_len = sizeof wrapped;
    CK_BYTE other_wrapped[64];
    EXPECT_RV("C_WrapKey of a key the template excludes",
              p11->C_WrapKey(s, &kw, kek, other, other_wrapped, &other_len), CKR_KEY_NOT_WRAPPABLE);
    other_len = sizeof wrapped;
    EXPECT_RV("C_WrapKey with a mechanism CKA_ALLOWED_MECHANISMS lacks",
              p11->C_WrapKey(s, &kwp, kek, matching, other_wrapped, &other_len), CKR_MECHANISM_INVALID);

    CK_ULONG len16 = 16;
    CK_ATTRIBUTE contradicting[] = {{CKA_CLASS, &secret_class, sizeof secret_class},
                                    {CKA_KEY_TYPE, &aes_type, sizeof aes_type},
                                    {CKA_TOKEN, &no, 1}, {CKA_SENSITIVE, &no, 1}};
    CK_OBJECT_HANDLE unwrapped = CK_INVALID_HANDLE;
    EXPECT_RV("C_UnwrapKey contradicting CKA_UNWRAP_TEMPLATE",
              p11->C_UnwrapKey(s, &kw, kek, wrapped, wrapped_len, contradicting, 4, &unwrapped),
              CKR_TEMPLATE_INCONSISTENT);
    CK_ATTRIBUTE plain_t[] = {{CKA_CLASS, &secret_class, sizeof secret_class},
                              {CKA_KEY_TYPE, &aes_type, sizeof aes_type}, {CKA_TOKEN, &no, 1},
                              {CKA_VALUE_LEN, &len16, sizeof len16}};
    EXPECT_RV("C_UnwrapKey", p11->C_UnwrapKey(s, &kw, kek, wrapped, wrapped_len, plain_t, 4, &unwrapped), CKR_OK);
    char label[16] = {0};
    CK_BBOOL sensitive = CK_FALSE;
    CK_ATTRIBUTE back[] = {{CKA_LABEL, label, sizeof label}, {CKA_SENSITIVE, &sensitive, 1}};
    EXPECT_RV("the unwrapped key's attributes", p11->C_GetAttributeValue(s, unwrapped, back, 2), CKR_OK);
    EXPECT("CKA_UNWRAP_TEMPLATE applied", back[0].ulValueLen == 9 && !memcmp(label, "unwrapped", 9) &&
                                              sensitive == CK_TRUE);
}

/* ---- SP 800-108 ---- */

static CK_ULONG len32 = 32;
static CK_ATTRIBUTE readable(CK_ULONG *len, int i)
{
    static CK_ATTRIBUTE t[] = {{CKA_CLASS, &secret_class, sizeof secret_class},
                               {CKA_KEY_TYPE, &generic_type, sizeof generic_type},
                               {CKA_SENSITIVE, &no, 1}, {CKA_EXTRACTABLE, &yes, 1}, {CKA_TOKEN, &no, 1}};
    if (i < 5)
        return t[i];
    CK_ATTRIBUTE l = {CKA_VALUE_LEN, len, sizeof *len};
    return l;
}
/* a template for a derived generic secret the test can read back, CKA_VALUE_LEN last */
#define READABLE(len) \
    {readable(len, 0), readable(len, 1), readable(len, 2), readable(len, 3), readable(len, 4), readable(len, 5)}

static void check_kdf(CK_SESSION_HANDLE s)
{
    /* NIST CAVP (CAVS 14.4) KBKDF counter mode, PRF HMAC-SHA256, counter before the fixed data,
     * 8-bit counter, COUNT=0 */
    static const unsigned char ki[] = {
        0x3e, 0xdc, 0x6b, 0x5b, 0x8f, 0x7a, 0xad, 0xbd, 0x71, 0x37, 0x32, 0xb4,
        0x82, 0xb8, 0xf9, 0x79, 0x28, 0x6e, 0x1e, 0xa3, 0xb8, 0xf8, 0xf9, 0x9c,
        0x30, 0xc8, 0x84, 0xcf, 0xe3, 0x34, 0x9b, 0x83};
    static const unsigned char fixed[] = {
        0x98, 0xe9, 0x98, 0x8b, 0xb4, 0xcc, 0x8b, 0x34, 0xd7, 0x92, 0x2e, 0x1c,
        0x68, 0xad, 0x69, 0x2b, 0xa2, 0xa1, 0xd9, 0xae, 0x15, 0x14, 0x95, 0x71,
        0x67, 0x5f, 0x17, 0xa7, 0x7a, 0xd4, 0x9e, 0x80, 0xc8, 0xd2, 0xa8, 0x5e,
        0x83, 0x1a, 0x26, 0x44, 0x5b, 0x1f, 0x0f, 0xf4, 0x4d, 0x70, 0x84, 0xa1,
        0x72, 0x06, 0xb4, 0x89, 0x6c, 0x81, 0x12, 0xda, 0xad, 0x18, 0x60, 0x5a};
    static const unsigned char ko[] = {
        0x6c, 0x03, 0x76, 0x52, 0x99, 0x06, 0x74, 0xa0, 0x78, 0x44, 0x73, 0x2d,
        0x0a, 0xd9, 0x85, 0xf9};
    CK_ATTRIBUTE base_extra[] = {{CKA_DERIVE, &yes, 1}};
    CK_OBJECT_HANDLE base = secret_key(s, CKK_GENERIC_SECRET, ki, sizeof ki, base_extra, 1);
    CK_SP800_108_COUNTER_FORMAT c8 = {CK_FALSE, 8}, c32 = {CK_FALSE, 32};
    CK_SP800_108_DKM_LENGTH_FORMAT l32 = {CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, CK_FALSE, 32};
    CK_PRF_DATA_PARAM nist[] = {{CK_SP800_108_ITERATION_VARIABLE, &c8, sizeof c8},
                                {CK_SP800_108_BYTE_ARRAY, (void *)fixed, sizeof fixed}};
    CK_SP800_108_KDF_PARAMS nist_params = {CKM_SHA256_HMAC, 2, nist, 0, NULL};
    CK_MECHANISM counter = {CKM_SP800_108_COUNTER_KDF, &nist_params, sizeof nist_params};
    CK_ULONG len16 = 16;
    CK_ATTRIBUTE t16[] = READABLE(&len16);
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    EXPECT_RV("C_DeriveKey SP 800-108 counter (NIST vector)", p11->C_DeriveKey(s, &counter, base, t16, 6, &key),
              CKR_OK);
    unsigned char v[64];
    CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof v};
    EXPECT_RV("derived value", p11->C_GetAttributeValue(s, key, &va, 1), CKR_OK);
    EXPECT("the NIST vector's KO", va.ulValueLen == sizeof ko && !memcmp(v, ko, sizeof ko));

    /* counter mode with a label, [L] and two additional derived keys */
    CK_PRF_DATA_PARAM with_l[] = {{CK_SP800_108_ITERATION_VARIABLE, &c32, sizeof c32},
                                  {CK_SP800_108_BYTE_ARRAY, "label\0context", 13},
                                  {CK_SP800_108_DKM_LENGTH, &l32, sizeof l32}};
    CK_ULONG len24 = 24, len40 = 40;
    CK_ATTRIBUTE t24[] = READABLE(&len24), t40[] = READABLE(&len40), t32[] = READABLE(&len32);
    CK_OBJECT_HANDLE more1 = CK_INVALID_HANDLE, more2 = CK_INVALID_HANDLE;
    CK_DERIVED_KEY more[] = {{t24, 6, &more1}, {t40, 6, &more2}};
    CK_SP800_108_KDF_PARAMS l_params = {CKM_SHA256_HMAC, 3, with_l, 2, more};
    CK_MECHANISM counter_l = {CKM_SP800_108_COUNTER_KDF, &l_params, sizeof l_params};
    EXPECT_RV("C_DeriveKey with additional keys", p11->C_DeriveKey(s, &counter_l, base, t32, 6, &key), CKR_OK);
    EXPECT("three distinct handles", more1 != CK_INVALID_HANDLE && more2 != CK_INVALID_HANDLE && more1 != more2 &&
                                         key != more1 && key != more2);
    print_value(s, "counter-primary", key);
    print_value(s, "counter-more1", more1);
    print_value(s, "counter-more2", more2);

    /* feedback mode with an IV and an optional counter */
    static const unsigned char iv[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    CK_PRF_DATA_PARAM fb[] = {{CK_SP800_108_ITERATION_VARIABLE, NULL, 0},
                              {CK_SP800_108_OPTIONAL_COUNTER, &c8, sizeof c8},
                              {CK_SP800_108_BYTE_ARRAY, "feedback", 8},
                              {CK_SP800_108_DKM_LENGTH, &l32, sizeof l32}};
    CK_SP800_108_FEEDBACK_KDF_PARAMS fb_params = {CKM_SHA512_HMAC, 4, fb, sizeof iv, (CK_BYTE_PTR)iv, 0, NULL};
    CK_MECHANISM feedback = {CKM_SP800_108_FEEDBACK_KDF, &fb_params, sizeof fb_params};
    CK_ULONG len100 = 100;
    CK_ATTRIBUTE t100[] = READABLE(&len100);
    EXPECT_RV("C_DeriveKey SP 800-108 feedback", p11->C_DeriveKey(s, &feedback, base, t100, 6, &key), CKR_OK);
    print_value(s, "feedback", key);

    /* parameters the library refuses before sending anything */
    CK_OBJECT_HANDLE none = CK_INVALID_HANDLE;
    CK_MECHANISM short_param = {CKM_SP800_108_COUNTER_KDF, &nist_params, sizeof nist_params - 1};
    EXPECT_RV("a parameter of the wrong size", p11->C_DeriveKey(s, &short_param, base, t16, 6, &none),
              CKR_MECHANISM_PARAM_INVALID);
    CK_PRF_DATA_PARAM unknown[] = {{CK_SP800_108_ITERATION_VARIABLE, &c8, sizeof c8}, {9, "x", 1}};
    CK_SP800_108_KDF_PARAMS unknown_params = {CKM_SHA256_HMAC, 2, unknown, 0, NULL};
    CK_MECHANISM unknown_m = {CKM_SP800_108_COUNTER_KDF, &unknown_params, sizeof unknown_params};
    EXPECT_RV("an unknown data parameter type", p11->C_DeriveKey(s, &unknown_m, base, t16, 6, &none),
              CKR_MECHANISM_PARAM_INVALID);
    CK_PRF_DATA_PARAM bad_format[] = {{CK_SP800_108_ITERATION_VARIABLE, &c8, sizeof c8 - 1}};
    CK_SP800_108_KDF_PARAMS bad_format_params = {CKM_SHA256_HMAC, 1, bad_format, 0, NULL};
    CK_MECHANISM bad_format_m = {CKM_SP800_108_COUNTER_KDF, &bad_format_params, sizeof bad_format_params};
    EXPECT_RV("a counter format of the wrong size", p11->C_DeriveKey(s, &bad_format_m, base, t16, 6, &none),
              CKR_MECHANISM_PARAM_INVALID);
    CK_DERIVED_KEY no_handle[] = {{t24, 6, NULL}};
    CK_SP800_108_KDF_PARAMS no_handle_params = {CKM_SHA256_HMAC, 2, nist, 1, no_handle};
    CK_MECHANISM no_handle_m = {CKM_SP800_108_COUNTER_KDF, &no_handle_params, sizeof no_handle_params};
    EXPECT_RV("an additional key without phKey", p11->C_DeriveKey(s, &no_handle_m, base, t16, 6, &none),
              CKR_MECHANISM_PARAM_INVALID);
    /* and ones the appliance refuses */
    CK_PRF_DATA_PARAM no_iteration[] = {{CK_SP800_108_BYTE_ARRAY, "x", 1}};
    CK_SP800_108_KDF_PARAMS no_iteration_params = {CKM_SHA256_HMAC, 1, no_iteration, 0, NULL};
    CK_MECHANISM no_iteration_m = {CKM_SP800_108_COUNTER_KDF, &no_iteration_params, sizeof no_iteration_params};
    EXPECT_RV("no iteration variable", p11->C_DeriveKey(s, &no_iteration_m, base, t16, 6, &none),
              CKR_MECHANISM_PARAM_INVALID);
    CK_ATTRIBUTE no_len[] = READABLE(&len16);
    EXPECT_RV("no CKA_VALUE_LEN", p11->C_DeriveKey(s, &counter, base, no_len, 5, &none), CKR_TEMPLATE_INCOMPLETE);
    EXPECT("no handle on failure", none == CK_INVALID_HANDLE);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODULE\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *pin = getenv("HSMCLOUD_TEST_CO_PIN");
    if (pin == NULL) {
        fprintf(stderr, "HSMCLOUD_TEST_CO_PIN is not set\n");
        return 2;
    }
    load(argv[1]);
    CK_SESSION_HANDLE s;
    EXPECT_RV("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    EXPECT_RV("C_OpenSession", p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    EXPECT_RV("C_Login", p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), CKR_OK);
    if (failures == 0) {
        check_arrays(s);
        check_kdf(s);
    }
    EXPECT_RV("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    if (failures == 0)
        printf("ok\n");
    return failures ? 1 : 0;
}
