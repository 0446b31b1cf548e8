/* Mutexes. PKCS#11 lets the application choose: no locking arguments or CKF_OS_LOCKING_OK means
 * the library may use the operating system's primitives (pthreads here); mutex callbacks without
 * CKF_OS_LOCKING_OK mean the library must use the application's callbacks. Every lock the
 * library takes goes through this file, so both work. (OpenSSL's internal locks stay pthreads.) */
#include "locks.h"

#include <pthread.h>
#include <stdlib.h>

struct hc_mutex {
    int app; /* 1: the application's callbacks */
    pthread_mutex_t os;
    void *app_mutex;
    CK_DESTROYMUTEX destroy;
    CK_LOCKMUTEX lock;
    CK_UNLOCKMUTEX unlock;
};

static CK_C_INITIALIZE_ARGS app_locking; /* CreateMutex == NULL: OS locking */

CK_RV hc_locks_configure(const CK_C_INITIALIZE_ARGS *args)
{
    int given;
    app_locking.CreateMutex = NULL;
    if (args == NULL)
        return CKR_OK;
    if (args->pReserved != NULL)
        return CKR_ARGUMENTS_BAD;
    given = (args->CreateMutex != NULL) + (args->DestroyMutex != NULL) + (args->LockMutex != NULL) +
            (args->UnlockMutex != NULL);
    if (given != 0 && given != 4)
        return CKR_ARGUMENTS_BAD; /* all four callbacks or none, says the standard */
    if (given == 4 && !(args->flags & CKF_OS_LOCKING_OK))
        app_locking = *args;
    /* given == 4 with CKF_OS_LOCKING_OK: either is allowed; the OS's are cheaper. */
    return CKR_OK;
}

hc_mutex *hc_mutex_new(void)
{
    hc_mutex *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    if (app_locking.CreateMutex != NULL) {
        m->app = 1;
        m->destroy = app_locking.DestroyMutex;
        m->lock = app_locking.LockMutex;
        m->unlock = app_locking.UnlockMutex;
        if (app_locking.CreateMutex(&m->app_mutex) != CKR_OK) {
            free(m);
            return NULL;
        }
        return m;
    }
    if (pthread_mutex_init(&m->os, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void hc_mutex_free(hc_mutex *m)
{
    if (m == NULL)
        return;
    if (m->app)
        m->destroy(m->app_mutex);
    else
        pthread_mutex_destroy(&m->os);
    free(m);
}

void hc_lock(hc_mutex *m)
{
    if (m->app)
        m->lock(m->app_mutex);
    else
        pthread_mutex_lock(&m->os);
}

void hc_unlock(hc_mutex *m)
{
    if (m->app)
        m->unlock(m->app_mutex);
    else
        pthread_mutex_unlock(&m->os);
}

void hc_mutex_reset_in_child(hc_mutex *m)
{
    if (m != NULL && !m->app)
        pthread_mutex_init(&m->os, NULL);
}
