/* Mutexes: the operating system's, or the application's callbacks from C_Initialize. */
#ifndef HSMCLOUD_LOCKS_H
#define HSMCLOUD_LOCKS_H

#include "pkcs11.h"

typedef struct hc_mutex hc_mutex;

/* Chooses the locking of the next hc_mutex_new calls from C_Initialize's arguments (NULL:
 * none given). Returns CKR_OK, CKR_ARGUMENTS_BAD or CKR_CANT_LOCK. */
CK_RV hc_locks_configure(const CK_C_INITIALIZE_ARGS *args);
hc_mutex *hc_mutex_new(void);
void hc_mutex_free(hc_mutex *m);
void hc_lock(hc_mutex *m);
void hc_unlock(hc_mutex *m);
/* In a forked child: makes a mutex usable again whatever state the parent left it in. */
void hc_mutex_reset_in_child(hc_mutex *m);

#endif
