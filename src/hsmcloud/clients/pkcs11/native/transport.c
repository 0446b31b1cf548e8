/* NTLS transport. Each appliance (a [server] of the configuration) has a pool of TLS connections:
 * a call takes an idle connection or opens a new one, sends one frame, reads one frame and puts
 * the connection back. The pool's lock is held only to take or return a connection, never during
 * network I/O, so threads run their calls in parallel on separate connections.
 *
 * Trust: the pinned server.pem is the only trust anchor, and the certificate the appliance
 * presents must be byte-identical to it. Host names are not checked (the pin is stronger). */
#define _GNU_SOURCE
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "locks.h"
#include "log.h"

#define CLIENT_SOFTWARE "hsmcloud-pkcs11/0.1.0"

typedef struct hc_conn {
    SSL *ssl;
    int fd;
    unsigned long epoch;
    struct hc_conn *next_idle;
    struct hc_conn *prev_all, *next_all;
} hc_conn;

struct hc_server {
    char *name;
    char address[64];
    int port;
    int timeout_seconds;
    uint64_t application_id;
    SSL_CTX *ctx; /* NULL: TLS could not be set up (logged) */
    unsigned char *pinned_der;
    int pinned_len;

    hc_mutex *lock; /* guards everything below */
    hc_conn *idle;
    hc_conn *all;
    size_t count;
    unsigned long epoch;
    int announced; /* the appliance's HELLO was logged */
};

/* ---- a socket BIO that never raises SIGPIPE ----
 * OpenSSL's socket BIO writes with write(2): a peer that closed the connection would kill the
 * host process with SIGPIPE. send(MSG_NOSIGNAL) reports EPIPE instead. */

static BIO_METHOD *nosigpipe_method;
static pthread_once_t nosigpipe_once = PTHREAD_ONCE_INIT;

static int bio_fd(BIO *b)
{
    return (int)(intptr_t)BIO_get_data(b);
}

static int nosigpipe_write(BIO *b, const char *buf, int len)
{
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = send(bio_fd(b), buf, (size_t)len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        if (errno != EINTR)
            return -1;
    }
}

static int nosigpipe_read(BIO *b, char *buf, int len)
{
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(bio_fd(b), buf, (size_t)len, 0);
        if (n >= 0)
            return (int)n;
        /* EAGAIN: the receive timeout on a blocking socket (the caller treats it as a failure),
         * or nothing to read yet during the non-blocking liveness probe */
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        if (errno != EINTR)
            return -1;
    }
}

static long nosigpipe_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int nosigpipe_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_nosigpipe_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hsmcloud socket");
    if (m == NULL)
        return;
    BIO_meth_set_write(m, nosigpipe_write);
    BIO_meth_set_read(m, nosigpipe_read);
    BIO_meth_set_ctrl(m, nosigpipe_ctrl);
    BIO_meth_set_create(m, nosigpipe_create);
    nosigpipe_method = m; /* one per process, kept for its lifetime */
}

/* ---- errors ---- */

static void openssl_reason(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(out, len, "%s", errno ? strerror(errno) : "connection closed");
    else
        ERR_error_string_n(e, out, len);
}

/* ---- server set-up ---- */

static int load_pinned(hc_server *s, const char *path)
{
    FILE *f = fopen(path, "re");
    X509 *cert;
    if (f == NULL) {
        hc_log("server %s: cannot read its certificate %s: %s", s->name, path, strerror(errno));
        return 0;
    }
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert == NULL) {
        hc_log("server %s: %s holds no PEM certificate", s->name, path);
        return 0;
    }
    s->pinned_len = i2d_X509(cert, &s->pinned_der);
    if (s->pinned_len <= 0 || X509_STORE_add_cert(SSL_CTX_get_cert_store(s->ctx), cert) != 1) {
        X509_free(cert);
        hc_log("server %s: cannot use the certificate in %s", s->name, path);
        return 0;
    }
    X509_free(cert);
    return 1;
}

static int readable(const char *path, const char *what)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        hc_log("%s %s cannot be read: %s", what, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static SSL_CTX *make_context(hc_server *s, const hc_config *cfg, const hc_server_conf *sc, OSSL_LIB_CTX *libctx)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
    if (ctx == NULL)
        return NULL;
    s->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_read_ahead(ctx, 1); /* one recv() per response instead of one per record part */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* The pinned certificate is a trust anchor even though no CA issued it. */
    X509_STORE_set_flags(SSL_CTX_get_cert_store(ctx), X509_V_FLAG_PARTIAL_CHAIN);
    if (cfg->certificate == NULL || cfg->private_key == NULL) {
        hc_log("server %s: the [client] section names no certificate and private key", s->name);
        goto fail;
    }
    if (!readable(cfg->certificate, "client certificate") || !readable(cfg->private_key, "client private key"))
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->certificate) != 1) {
        openssl_reason(why, sizeof why);
        hc_log("client certificate %s cannot be used: %s", cfg->certificate, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->private_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(why, sizeof why);
        hc_log("client private key %s cannot be used with %s: %s", cfg->private_key, cfg->certificate, why);
        goto fail;
    }
    if (!load_pinned(s, sc->certificate))
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    s->ctx = NULL;
    return NULL;
}

hc_server *hc_server_new(const hc_config *cfg, size_t index, OSSL_LIB_CTX *libctx, uint64_t application_id)
{
    const hc_server_conf *sc = &cfg->servers[index];
    hc_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->name = strdup(sc->name);
    s->lock = hc_mutex_new();
    if (s->name == NULL || s->lock == NULL) {
        free(s->name);
        hc_mutex_free(s->lock);
        free(s);
        return NULL;
    }
    snprintf(s->address, sizeof s->address, "%s", sc->address);
    s->port = sc->port;
    s->timeout_seconds = cfg->receive_timeout_seconds;
    s->application_id = application_id;
    s->epoch = 1;
    pthread_once(&nosigpipe_once, make_nosigpipe_method);
    ERR_set_mark();
    make_context(s, cfg, sc, libctx);
    ERR_pop_to_mark();
    return s;
}

const char *hc_server_name(const hc_server *s)
{
    return s->name;
}

/* ---- connections ---- */

static void close_conn(hc_conn *c, int graceful)
{
    if (c->ssl != NULL) {
        if (graceful)
            SSL_shutdown(c->ssl); /* our own connection: tell the appliance we are done */
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static int connect_socket(hc_server *s)
{
    struct sockaddr_in addr;
    struct timeval tv = {.tv_sec = s->timeout_seconds, .tv_usec = 0};
    int fd, one = 1, err = 0;
    socklen_t errlen = sizeof err;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)s->port);
    if (inet_pton(AF_INET, s->address, &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        hc_log("server %s: %s is not a loopback address; not connecting", s->name, s->address);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r;
        do
            r = poll(&p, 1, s->timeout_seconds * 1000);
        while (r < 0 && errno == EINTR);
        if (r == 0)
            errno = ETIMEDOUT;
        if (r <= 0)
            goto fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0 || err != 0) {
            errno = err ? err : errno;
            goto fail;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
fail:
    err = errno;
    hc_log("server %s: cannot connect to %s:%d: %s", s->name, s->address, s->port, strerror(err));
    close(fd);
    return -1;
}

static int write_frame(hc_conn *c, hc_buf *req)
{
    size_t n = req->len - HC_FRAME_HEADER, written = 0;
    req->data[0] = (unsigned char)(n >> 24);
    req->data[1] = (unsigned char)(n >> 16);
    req->data[2] = (unsigned char)(n >> 8);
    req->data[3] = (unsigned char)n;
    return SSL_write_ex(c->ssl, req->data, req->len, &written) == 1 && written == req->len;
}

static int read_full(hc_conn *c, unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t got = 0;
        if (SSL_read_ex(c->ssl, p, n, &got) != 1)
            return 0;
        p += got;
        n -= got;
    }
    return 1;
}

/* 1: a response frame, parsed up to rv; 0: the connection failed; -1: a frame out of limits. */
static int read_frame(hc_conn *c, hc_response *resp)
{
    unsigned char head[HC_FRAME_HEADER];
    uint32_t n;
    memset(resp, 0, sizeof *resp);
    if (!read_full(c, head, sizeof head))
        return 0;
    n = ((uint32_t)head[0] << 24) | ((uint32_t)head[1] << 16) | ((uint32_t)head[2] << 8) | head[3];
    if (n < 4 || n > HC_FRAME_MAX)
        return -1;
    resp->data = malloc(n);
    if (resp->data == NULL)
        return 0;
    if (!read_full(c, resp->data, n)) {
        free(resp->data);
        resp->data = NULL;
        return 0;
    }
    resp->len = n;
    resp->r.p = resp->data;
    resp->r.left = n;
    resp->rv = hc_get_u32(&resp->r);
    return 1;
}

void hc_response_free(hc_response *resp)
{
    if (resp->data != NULL)
        explicit_bzero(resp->data, resp->len); /* decrypted data, random, wrapped keys */
    free(resp->data);
    memset(resp, 0, sizeof *resp);
}

static int little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static int hello(hc_server *s, hc_conn *c)
{
    hc_buf req;
    hc_response resp;
    char why[256];
    int ok = 0;

    hc_buf_init(&req);
    hc_put_u16(&req, OP_HELLO);
    hc_put_u16(&req, HC_PROTOCOL_VERSION);
    hc_put_u8(&req, (uint8_t)sizeof(CK_ULONG));
    hc_put_u8(&req, little_endian() ? 0 : 1);
    hc_put_u64(&req, s->application_id);
    hc_put_u32(&req, (uint32_t)getpid());
    hc_put_string(&req, CLIENT_SOFTWARE);
    if (req.failed) {
        hc_buf_free(&req);
        return 0;
    }
    if (!write_frame(c, &req)) {
        openssl_reason(why, sizeof why);
        hc_log("server %s: HELLO not sent: %s", s->name, why);
    } else {
        int r = read_frame(c, &resp);
        if (r <= 0) {
            openssl_reason(why, sizeof why);
            hc_log("server %s: no HELLO answer (the appliance may refuse this client's certificate): %s", s->name,
                   why);
        } else {
            if (resp.rv != CKR_OK) {
                hc_log("server %s: HELLO refused with rv 0x%lx", s->name, (unsigned long)resp.rv);
            } else {
                char serial[64], model[64], firmware[64], software[64];
                uint16_t version = hc_get_u16(&resp.r);
                hc_get_string(&resp.r, serial, sizeof serial);
                hc_get_string(&resp.r, model, sizeof model);
                hc_get_string(&resp.r, firmware, sizeof firmware);
                hc_get_string(&resp.r, software, sizeof software);
                if (resp.r.failed || version != HC_PROTOCOL_VERSION) {
                    hc_log("server %s: unusable HELLO answer (protocol version %u)", s->name, version);
                } else {
                    ok = 1;
                    hc_lock(s->lock);
                    int first = !s->announced;
                    s->announced = 1;
                    hc_unlock(s->lock);
                    if (first)
                        hc_log("server %s: connected to appliance %s (%s, firmware %s, software %s), NTLS v%u",
                               s->name, serial, model, firmware, software, version);
                }
            }
            hc_response_free(&resp);
        }
    }
    hc_buf_free(&req);
    return ok;
}

static int peer_matches_pin(hc_server *s, SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    unsigned char *der = NULL;
    int len, same;
    if (peer == NULL)
        return 0;
    len = i2d_X509(peer, &der);
    same = len == s->pinned_len && memcmp(der, s->pinned_der, (size_t)len) == 0;
    OPENSSL_free(der);
    return same;
}

static hc_conn *open_conn(hc_server *s)
{
    char why[256];
    hc_conn *c;
    BIO *bio;
    long verify;

    if (s->ctx == NULL || nosigpipe_method == NULL)
        return NULL; /* set-up failed; the log says why */
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = connect_socket(s);
    if (c->fd < 0)
        goto fail;
    c->ssl = SSL_new(s->ctx);
    bio = c->ssl ? BIO_new(nosigpipe_method) : NULL;
    if (bio == NULL)
        goto fail;
    BIO_set_data(bio, (void *)(intptr_t)c->fd);
    SSL_set_bio(c->ssl, bio, bio);
    errno = 0;
    if (SSL_connect(c->ssl) != 1) {
        verify = SSL_get_verify_result(c->ssl);
        if (verify != X509_V_OK) {
            hc_log("server %s: the appliance's certificate is not the pinned one (%s); fetch server.pem again "
                   "and register it with 'hsmcloud client server add'", s->name,
                   X509_verify_cert_error_string(verify));
        } else {
            openssl_reason(why, sizeof why);
            hc_log("server %s: TLS handshake failed: %s", s->name, why);
        }
        goto fail;
    }
    if (!peer_matches_pin(s, c->ssl)) {
        hc_log("server %s: the appliance presented a certificate that differs from the pinned server.pem",
               s->name);
        goto fail;
    }
    if (!hello(s, c))
        goto fail;
    return c;
fail:
    close_conn(c, 0);
    return NULL;
}

/* An idle connection the appliance closed (it restarted, or ended this application) reads as
 * ready: EOF or data nobody asked for. */
static int idle_conn_alive(hc_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int flags, r, err;
    size_t got = 0;
    char byte;

    if (SSL_has_pending(c->ssl))
        return 0;
    if (poll(&p, 1, 0) == 0)
        return 1;
    /* Readable: TLS 1.3 post-handshake messages (tickets, key updates) are fine; EOF, an alert or
     * application data nobody asked for are not. Peek without blocking to tell them apart. */
    flags = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
    r = SSL_peek_ex(c->ssl, &byte, 1, &got);
    err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    fcntl(c->fd, F_SETFL, flags);
    return r != 1 && err == SSL_ERROR_WANT_READ;
}

/* Removes a connection from the pool's books; the caller closes it. */
static void forget_conn_locked(hc_server *s, hc_conn *c)
{
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        s->all = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    s->count--;
    if (s->count == 0)
        s->epoch++; /* the appliance ends an application's sessions with its last connection */
}

static void drop_conn(hc_server *s, hc_conn *c)
{
    hc_lock(s->lock);
    forget_conn_locked(s, c);
    hc_unlock(s->lock);
    close_conn(c, 0);
}

static hc_conn *acquire(hc_server *s, int *fresh)
{
    hc_conn *c;
    for (;;) {
        hc_lock(s->lock);
        c = s->idle;
        if (c != NULL)
            s->idle = c->next_idle;
        hc_unlock(s->lock);
        if (c == NULL)
            break;
        if (idle_conn_alive(c)) {
            *fresh = 0;
            return c;
        }
        hc_log("server %s: the appliance closed an idle connection", s->name);
        drop_conn(s, c);
    }
    c = open_conn(s);
    if (c == NULL)
        return NULL;
    hc_lock(s->lock);
    c->next_all = s->all;
    c->prev_all = NULL;
    if (s->all)
        s->all->prev_all = c;
    s->all = c;
    s->count++;
    c->epoch = s->epoch;
    hc_unlock(s->lock);
    *fresh = 1;
    return c;
}

static void release(hc_server *s, hc_conn *c)
{
    hc_lock(s->lock);
    c->next_idle = s->idle;
    s->idle = c;
    hc_unlock(s->lock);
}

unsigned long hc_server_epoch(hc_server *s)
{
    unsigned long e;
    hc_lock(s->lock);
    e = s->epoch;
    hc_unlock(s->lock);
    return e;
}

int hc_server_connected(hc_server *s)
{
    int c;
    hc_lock(s->lock);
    c = s->count > 0;
    hc_unlock(s->lock);
    return c;
}

CK_RV hc_call(hc_server *s, hc_buf *req, hc_response *resp, unsigned flags, unsigned long require_epoch,
              unsigned long *used_epoch)
{
    CK_RV rv = CKR_DEVICE_ERROR;
    char why[256];

    memset(resp, 0, sizeof *resp);
    if (req->failed)
        return req->data == NULL ? CKR_HOST_MEMORY : CKR_DATA_LEN_RANGE;
    ERR_set_mark(); /* leave the application's OpenSSL error queue as it was */
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0, r;
        hc_conn *c = acquire(s, &fresh);
        if (c == NULL)
            break;
        if (require_epoch != 0 && c->epoch != require_epoch) {
            release(s, c);
            rv = CKR_SESSION_HANDLE_INVALID;
            break;
        }
        errno = 0;
        if (write_frame(c, req)) {
            r = read_frame(c, resp);
            if (r > 0) {
                if (used_epoch != NULL)
                    *used_epoch = c->epoch;
                release(s, c);
                rv = CKR_OK;
                break;
            }
            if (r < 0)
                hc_log("server %s: a response frame out of limits; connection dropped", s->name);
        }
        openssl_reason(why, sizeof why);
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            snprintf(why, sizeof why, "no answer within receive_timeout_seconds=%d", s->timeout_seconds);
        hc_log("server %s: connection failed during a call: %s; dropped", s->name, why);
        drop_conn(s, c);
        if (!(flags & HC_CALL_IDEMPOTENT) || fresh)
            break;
    }
    ERR_pop_to_mark();
    return rv;
}

void hc_server_free(hc_server *s)
{
    hc_conn *c, *next;
    if (s == NULL)
        return;
    ERR_set_mark();
    for (c = s->all; c != NULL; c = next) {
        next = c->next_all;
        close_conn(c, 1);
    }
    SSL_CTX_free(s->ctx);
    ERR_pop_to_mark();
    OPENSSL_free(s->pinned_der);
    hc_mutex_free(s->lock);
    free(s->name);
    free(s);
}

void hc_server_fork_prepare(hc_server *s)
{
    hc_lock(s->lock);
}

void hc_server_fork_parent(hc_server *s)
{
    hc_unlock(s->lock);
}

void hc_server_fork_child(hc_server *s)
{
    /* Closing our copy of a descriptor sends nothing: the parent's TLS sessions go on. The SSL
     * objects are left alone (freeing them could need locks another thread held at fork). */
    for (hc_conn *c = s->all; c != NULL; c = c->next_all) {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
    }
}
