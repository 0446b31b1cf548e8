/* The optional diagnostics log ($HSMCLOUD_PKCS11_LOG): events and failures, never PINs, keys or data. */
#ifndef HSMCLOUD_LOG_H
#define HSMCLOUD_LOG_H

void hc_log_open(void);
void hc_log_close(void);
/* Drops the inherited descriptor in a forked child without writing to it. */
void hc_log_forget(void);
void hc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
