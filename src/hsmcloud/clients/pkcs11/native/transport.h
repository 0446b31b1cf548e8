/* NTLS transport: per-appliance pools of TLS connections, one request in flight per connection. */
#ifndef HSMCLOUD_TRANSPORT_H
#define HSMCLOUD_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "config.h"
#include "pkcs11.h"
#include "wire.h"

typedef struct hc_server hc_server;

/* A response: the payload (owned), a reader positioned after `rv`, and `rv` itself. */
typedef struct hc_response {
    unsigned char *data;
    size_t len;
    hc_reader r;
    CK_RV rv;
} hc_response;

void hc_response_free(hc_response *resp);

/* Retry once on a new connection when a reused one fails: only for requests that change nothing. */
#define HC_CALL_IDEMPOTENT 1u

/* A server from its configuration. TLS setup problems (unreadable certificate or key) do not
 * fail here: the server is then unreachable, and the log says why. NULL only without memory. */
hc_server *hc_server_new(const hc_config *cfg, size_t index, OSSL_LIB_CTX *libctx, uint64_t application_id);
/* Closes every connection (TLS close_notify first) and frees the server. Only the process that
 * made the connections may call it. */
void hc_server_free(hc_server *s);
const char *hc_server_name(const hc_server *s);
/* Increases whenever the last connection to the appliance is lost: the appliance then ended this
 * application's sessions, so sessions opened in an earlier epoch are invalid. */
unsigned long hc_server_epoch(hc_server *s);
/* Whether at least one connection is open (FINALIZE is sent only then). */
int hc_server_connected(hc_server *s);

/* Sends one request and reads its response. `require_epoch` (0: any) refuses to send when the
 * connections of that epoch are gone (CKR_SESSION_HANDLE_INVALID); `used_epoch` (may be NULL)
 * receives the epoch of the connection that carried the call. Returns CKR_OK with `resp`
 * filled, CKR_DEVICE_ERROR (no connection, or it failed: it is dropped), CKR_DATA_LEN_RANGE
 * (request longer than a frame), CKR_HOST_MEMORY. */
CK_RV hc_call(hc_server *s, hc_buf *req, hc_response *resp, unsigned flags, unsigned long require_epoch,
              unsigned long *used_epoch);

/* fork(): the prepare handler holds every pool lock so that the child sees consistent lists; the
 * child closes its copies of the sockets without a TLS word (the parent's sessions go on) and
 * never touches the server again. */
void hc_server_fork_prepare(hc_server *s);
void hc_server_fork_parent(hc_server *s);
void hc_server_fork_child(hc_server *s);

#endif
