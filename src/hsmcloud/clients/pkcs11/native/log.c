/* The diagnostics log: one line per event, appended with a single write() so that threads and
 * processes sharing the file never interleave within a line. */
#define _GNU_SOURCE
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;

void hc_log_open(void)
{
    const char *path = getenv("HSMCLOUD_PKCS11_LOG");
    if (log_fd >= 0 || path == NULL || path[0] == '\0')
        return;
    /* O_NOFOLLOW: a symbolic link planted at the path is refused, not written through */
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
}

void hc_log_close(void)
{
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
}

void hc_log_forget(void)
{
    hc_log_close();
}

void hc_log(const char *fmt, ...)
{
    char line[1024];
    struct timespec now;
    struct tm tm;
    int n;
    va_list ap;

    if (log_fd < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ pid=%ld tid=%ld ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000L,
                 (long)getpid(), (long)syscall(SYS_gettid));
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(log_fd, line, (size_t)n);
    (void)ignored;
}
