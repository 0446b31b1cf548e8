/* The client configuration: an INI-like file, parsed here without a library.
 *
 *   # comments start with '#' or ';' (at the start of a line, or after whitespace)
 *   [client]      name, certificate, private_key, receive_timeout_seconds
 *   [server NAME] address, port, certificate
 *   [slot]        server, partition   (repeated; slot IDs 0, 1, 2... in file order)
 *   [hagroup NAME] serial, members, standby, retry_count, interval_seconds, recovery_request
 *   [client] ha_only = yes|no: only the HA slots are visible
 *
 * Sections and keys this version does not know (e.g. a later [hagroup NAME]) are ignored, so an
 * older library reads a newer file. */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_SIZE_MAX (1024 * 1024)

enum section { SEC_NONE, SEC_CLIENT, SEC_SERVER, SEC_SLOT, SEC_HAGROUP, SEC_OTHER };

typedef struct {
    char *members; /* "server/partition, ..." resolved once every [slot] is read */
    char *standby;
    int line;
} pending_group;

typedef struct {
    char *server_name; /* resolved to an index once every [server] is read */
    int line;
} pending_slot;

static void fail(char *error, size_t len, const char *path, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void fail(char *error, size_t len, const char *path, int line, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(error, len, "%s:%d: %s", path, line, what);
    else
        snprintf(error, len, "%s: %s", path, what);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Cuts an inline comment: '#' or ';' at the start or after whitespace. */
static void cut_comment(char *s)
{
    for (char *p = s; *p; p++) {
        if ((*p == '#' || *p == ';') && (p == s || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            return;
        }
    }
}

/* A path relative to the configuration file's folder becomes absolute. */
static char *resolve_path(const char *config_path, const char *value)
{
    if (value[0] == '/')
        return strdup(value);
    const char *slash = strrchr(config_path, '/');
    size_t dir = slash ? (size_t)(slash - config_path) : 1;
    const char *base = slash ? config_path : ".";
    char *out = malloc(dir + 1 + strlen(value) + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, base, dir);
    out[dir] = '/';
    strcpy(out + dir + 1, value);
    return out;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* Loopback only: the library never connects anywhere else. */
static int loopback_address(const char *s, char *out, size_t out_len)
{
    struct in_addr a;
    if (strcmp(s, "localhost") == 0)
        s = "127.0.0.1";
    if (inet_pton(AF_INET, s, &a) != 1)
        return 0;
    if ((ntohl(a.s_addr) >> 24) != 127)
        return 0;
    snprintf(out, out_len, "%s", s);
    return 1;
}

void hc_config_free(hc_config *cfg)
{
    free(cfg->client_name);
    free(cfg->certificate);
    free(cfg->private_key);
    for (size_t i = 0; i < cfg->nservers; i++) {
        free(cfg->servers[i].name);
        free(cfg->servers[i].address);
        free(cfg->servers[i].certificate);
    }
    free(cfg->servers);
    for (size_t i = 0; i < cfg->nslots; i++)
        free(cfg->slots[i].partition);
    free(cfg->slots);
    for (size_t i = 0; i < cfg->ngroups; i++) {
        free(cfg->groups[i].name);
        free(cfg->groups[i].serial);
    }
    free(cfg->groups);
    memset(cfg, 0, sizeof *cfg);
}

static int set_once(char **field, const char *value, const char *key, const char *path, int line, char *error,
                    size_t error_len)
{
    if (*field != NULL) {
        fail(error, error_len, path, line, "'%s' given twice in this section", key);
        return 0;
    }
    *field = strdup(value);
    if (*field == NULL) {
        fail(error, error_len, path, line, "out of memory");
        return 0;
    }
    return 1;
}

/* "server/partition, server/partition": each must be a [slot]; fills slot indices. */
static int resolve_members(hc_config *cfg, const char *list, size_t *out, size_t *n, size_t max, const char *path,
                           int line, const char *group, char *error, size_t error_len)
{
    char *copy = strdup(list), *rest = copy, *item;
    int ok = 1;
    *n = 0;
    if (copy == NULL) {
        fail(error, error_len, path, line, "out of memory");
        return 0;
    }
    while (ok && (item = strsep(&rest, ",")) != NULL) {
        item = trim(item);
        if (*item == '\0')
            continue;
        char *slash = strchr(item, '/');
        size_t j;
        if (slash == NULL) {
            fail(error, error_len, path, line, "[hagroup %s]: member '%s' must be SERVER/PARTITION", group, item);
            ok = 0;
            break;
        }
        *slash = '\0';
        for (j = 0; j < cfg->nslots; j++)
            if (strcmp(cfg->servers[cfg->slots[j].server].name, item) == 0 &&
                strcasecmp(cfg->slots[j].partition, slash + 1) == 0)
                break;
        if (j == cfg->nslots) {
            fail(error, error_len, path, line, "[hagroup %s]: member '%s/%s' is not a [slot] of this file", group,
                 item, slash + 1);
            ok = 0;
        } else if (*n >= max) {
            fail(error, error_len, path, line, "[hagroup %s]: more than %d members", group, HC_HA_MAX_MEMBERS);
            ok = 0;
        } else {
            for (size_t k = 0; k < *n; k++)
                if (out[k] == j) {
                    fail(error, error_len, path, line, "[hagroup %s]: member '%s/%s' is given twice", group, item,
                         slash + 1);
                    ok = 0;
                }
            out[(*n)++] = j;
        }
    }
    free(copy);
    return ok;
}

enum hc_config_result hc_config_parse(hc_config *cfg, const char *path, const char *text, char *error,
                                      size_t error_len)
{
    enum section sec = SEC_NONE;
    int line_no = 0, timeout_line = 0;
    char *timeout_value = NULL;
    pending_slot *pending = NULL;
    pending_group *pgroups = NULL;
    int *server_lines = NULL;
    char *copy = strdup(text);
    enum hc_config_result result = HC_CONFIG_ERROR;

    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    cfg->receive_timeout_seconds = HC_DEFAULT_RECEIVE_TIMEOUT;
    if (copy == NULL) {
        fail(error, error_len, path, 0, "out of memory");
        return HC_CONFIG_ERROR;
    }

    /* strsep keeps empty lines, so line numbers stay right */
    for (char *rest = copy, *raw; (raw = strsep(&rest, "\n")) != NULL;) {
        line_no++;
        cut_comment(raw);
        char *line = trim(raw);
        if (*line == '\0')
            continue;
        if (*line == '[') {
            char *close = strchr(line, ']');
            if (close == NULL || trim(close + 1)[0] != '\0') {
                fail(error, error_len, path, line_no, "a section header must look like [name] or [server NAME]");
                goto out;
            }
            *close = '\0';
            char *head = trim(line + 1);
            char *arg = head + strcspn(head, " \t");
            if (*arg)
                *arg++ = '\0';
            arg = trim(arg);
            if (strcmp(head, "client") == 0 && *arg == '\0') {
                sec = SEC_CLIENT;
            } else if (strcmp(head, "server") == 0) {
                if (*arg == '\0') {
                    fail(error, error_len, path, line_no, "[server] needs a name: [server NAME]");
                    goto out;
                }
                for (size_t i = 0; i < cfg->nservers; i++) {
                    if (strcmp(cfg->servers[i].name, arg) == 0) {
                        fail(error, error_len, path, line_no, "server '%s' is defined twice", arg);
                        goto out;
                    }
                }
                hc_server_conf *s = realloc(cfg->servers, (cfg->nservers + 1) * sizeof *s);
                int *l = realloc(server_lines, (cfg->nservers + 1) * sizeof *l);
                if (s) cfg->servers = s;
                if (l) server_lines = l;
                if (s == NULL || l == NULL) {
                    fail(error, error_len, path, line_no, "out of memory");
                    goto out;
                }
                memset(&s[cfg->nservers], 0, sizeof *s);
                s[cfg->nservers].port = HC_DEFAULT_PORT;
                s[cfg->nservers].name = strdup(arg);
                server_lines[cfg->nservers] = line_no;
                cfg->nservers++;
                if (s[cfg->nservers - 1].name == NULL) {
                    fail(error, error_len, path, line_no, "out of memory");
                    goto out;
                }
                sec = SEC_SERVER;
            } else if (strcmp(head, "slot") == 0 && *arg == '\0') {
                hc_slot_conf *s = realloc(cfg->slots, (cfg->nslots + 1) * sizeof *s);
                pending_slot *p = realloc(pending, (cfg->nslots + 1) * sizeof *p);
                if (s) cfg->slots = s;
                if (p) pending = p;
                if (s == NULL || p == NULL) {
                    fail(error, error_len, path, line_no, "out of memory");
                    goto out;
                }
                memset(&s[cfg->nslots], 0, sizeof *s);
                memset(&p[cfg->nslots], 0, sizeof *p);
                p[cfg->nslots].line = line_no;
                cfg->nslots++;
                sec = SEC_SLOT;
            } else if (strcmp(head, "hagroup") == 0) {
                if (*arg == '\0') {
                    fail(error, error_len, path, line_no, "[hagroup] needs a name: [hagroup NAME]");
                    goto out;
                }
                for (size_t i = 0; i < cfg->ngroups; i++) {
                    if (strcmp(cfg->groups[i].name, arg) == 0) {
                        fail(error, error_len, path, line_no, "HA group '%s' is defined twice", arg);
                        goto out;
                    }
                }
                hc_hagroup_conf *g = realloc(cfg->groups, (cfg->ngroups + 1) * sizeof *g);
                pending_group *pg = realloc(pgroups, (cfg->ngroups + 1) * sizeof *pg);
                if (g) cfg->groups = g;
                if (pg) pgroups = pg;
                if (g == NULL || pg == NULL) {
                    fail(error, error_len, path, line_no, "out of memory");
                    goto out;
                }
                memset(&g[cfg->ngroups], 0, sizeof *g);
                memset(&pg[cfg->ngroups], 0, sizeof *pg);
                g[cfg->ngroups].interval_seconds = HC_HA_DEFAULT_INTERVAL;
                g[cfg->ngroups].name = strdup(arg);
                pg[cfg->ngroups].line = line_no;
                cfg->ngroups++;
                if (g[cfg->ngroups - 1].name == NULL) {
                    fail(error, error_len, path, line_no, "out of memory");
                    goto out;
                }
                sec = SEC_HAGROUP;
            } else {
                sec = SEC_OTHER; /* a section of a later version */
            }
            continue;
        }
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            fail(error, error_len, path, line_no, "expected 'key = value' or a [section]");
            goto out;
        }
        *eq = '\0';
        char *key = trim(line);
        char *value = trim(eq + 1);
        if (*key == '\0') {
            fail(error, error_len, path, line_no, "a key is missing before '='");
            goto out;
        }
        switch (sec) {
        case SEC_NONE:
            fail(error, error_len, path, line_no, "'%s' appears before any [section]", key);
            goto out;
        case SEC_CLIENT:
            if (strcmp(key, "name") == 0) {
                if (!set_once(&cfg->client_name, value, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "certificate") == 0 || strcmp(key, "private_key") == 0) {
                char **field = key[0] == 'c' ? &cfg->certificate : &cfg->private_key;
                if (*value == '\0') {
                    fail(error, error_len, path, line_no, "'%s' is empty", key);
                    goto out;
                }
                if (*field != NULL) {
                    fail(error, error_len, path, line_no, "'%s' given twice in this section", key);
                    goto out;
                }
                *field = resolve_path(path, value);
            } else if (strcmp(key, "receive_timeout_seconds") == 0) {
                if (timeout_value != NULL) {
                    fail(error, error_len, path, line_no, "'%s' given twice in this section", key);
                    goto out;
                }
                timeout_value = value;
                timeout_line = line_no;
            } else if (strcmp(key, "ha_only") == 0) {
                if (strcasecmp(value, "yes") == 0 || strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0) {
                    cfg->ha_only = 1;
                } else if (strcasecmp(value, "no") == 0 || strcmp(value, "0") == 0 || strcasecmp(value, "false") == 0) {
                    cfg->ha_only = 0;
                } else {
                    fail(error, error_len, path, line_no, "ha_only '%s' must be yes or no", value);
                    goto out;
                }
            }
            break;
        case SEC_SERVER: {
            hc_server_conf *s = &cfg->servers[cfg->nservers - 1];
            if (strcmp(key, "address") == 0) {
                char addr[64];
                if (!loopback_address(value, addr, sizeof addr)) {
                    fail(error, error_len, path, line_no,
                         "address '%s' is not a loopback IPv4 address (127.0.0.0/8); hsmcloud appliances "
                         "listen on loopback addresses only", value);
                    goto out;
                }
                if (!set_once(&s->address, addr, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "port") == 0) {
                long port;
                if (!parse_int(value, 1, 65535, &port)) {
                    fail(error, error_len, path, line_no, "port '%s' is not a number from 1 to 65535", value);
                    goto out;
                }
                s->port = (int)port;
            } else if (strcmp(key, "certificate") == 0) {
                if (*value == '\0') {
                    fail(error, error_len, path, line_no, "'certificate' is empty");
                    goto out;
                }
                if (s->certificate != NULL) {
                    fail(error, error_len, path, line_no, "'certificate' given twice in this section");
                    goto out;
                }
                s->certificate = resolve_path(path, value);
            }
            break;
        }
        case SEC_SLOT: {
            hc_slot_conf *s = &cfg->slots[cfg->nslots - 1];
            if (strcmp(key, "server") == 0) {
                if (!set_once(&pending[cfg->nslots - 1].server_name, value, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "partition") == 0) {
                if (*value == '\0') {
                    fail(error, error_len, path, line_no, "'partition' is empty");
                    goto out;
                }
                if (!set_once(&s->partition, value, key, path, line_no, error, error_len))
                    goto out;
            }
            break;
        }
        case SEC_HAGROUP: {
            hc_hagroup_conf *g = &cfg->groups[cfg->ngroups - 1];
            pending_group *pg = &pgroups[cfg->ngroups - 1];
            long v;
            if (strcmp(key, "members") == 0) {
                if (!set_once(&pg->members, value, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "standby") == 0) {
                if (!set_once(&pg->standby, value, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "serial") == 0) {
                if (!set_once(&g->serial, value, key, path, line_no, error, error_len))
                    goto out;
            } else if (strcmp(key, "retry_count") == 0) {
                if (!parse_int(value, -1, 1000000, &v)) {
                    fail(error, error_len, path, line_no,
                         "retry_count '%s' must be -1 (forever), 0 (no auto-recovery) or a count up to 1000000", value);
                    goto out;
                }
                g->retry_count = v;
            } else if (strcmp(key, "interval_seconds") == 0) {
                if (!parse_int(value, HC_HA_MIN_INTERVAL, HC_HA_MAX_INTERVAL, &v)) {
                    fail(error, error_len, path, line_no, "interval_seconds '%s' must be %d to %d", value,
                         HC_HA_MIN_INTERVAL, HC_HA_MAX_INTERVAL);
                    goto out;
                }
                g->interval_seconds = v;
            } else if (strcmp(key, "recovery_request") == 0) {
                if (!parse_int(value, 0, 2147483647L, &v)) {
                    fail(error, error_len, path, line_no, "recovery_request '%s' must be a whole number", value);
                    goto out;
                }
                g->recovery_request = v;
            }
            break;
        }
        case SEC_OTHER:
            break;
        }
    }

    if (timeout_value != NULL) {
        long t;
        if (!parse_int(timeout_value, 1, 300, &t)) {
            fail(error, error_len, path, timeout_line,
                 "receive_timeout_seconds '%s' is not a whole number of seconds from 1 to 300", timeout_value);
            goto out;
        }
        cfg->receive_timeout_seconds = (int)t;
    }
    for (size_t i = 0; i < cfg->nservers; i++) {
        if (cfg->servers[i].address == NULL) {
            fail(error, error_len, path, server_lines[i], "[server %s] has no 'address'", cfg->servers[i].name);
            goto out;
        }
        if (cfg->servers[i].certificate == NULL) {
            fail(error, error_len, path, server_lines[i],
                 "[server %s] has no 'certificate' (the appliance's server.pem)", cfg->servers[i].name);
            goto out;
        }
    }
    for (size_t i = 0; i < cfg->nslots; i++) {
        size_t j;
        if (pending[i].server_name == NULL) {
            fail(error, error_len, path, pending[i].line, "[slot] has no 'server'");
            goto out;
        }
        if (cfg->slots[i].partition == NULL) {
            fail(error, error_len, path, pending[i].line, "[slot] has no 'partition' (serial number or name)");
            goto out;
        }
        for (j = 0; j < cfg->nservers; j++)
            if (strcmp(cfg->servers[j].name, pending[i].server_name) == 0)
                break;
        if (j == cfg->nservers) {
            fail(error, error_len, path, pending[i].line, "[slot] names server '%s', which no [server %s] defines",
                 pending[i].server_name, pending[i].server_name);
            goto out;
        }
        cfg->slots[i].server = j;
    }
    for (size_t i = 0; i < cfg->ngroups; i++) {
        hc_hagroup_conf *g = &cfg->groups[i];
        size_t standby[HC_HA_MAX_MEMBERS], nstandby = 0;
        if (pgroups[i].members == NULL) {
            fail(error, error_len, path, pgroups[i].line, "[hagroup %s] has no 'members'", g->name);
            goto out;
        }
        if (!resolve_members(cfg, pgroups[i].members, g->members, &g->nmembers, HC_HA_MAX_MEMBERS, path,
                             pgroups[i].line, g->name, error, error_len))
            goto out;
        if (pgroups[i].standby != NULL &&
            !resolve_members(cfg, pgroups[i].standby, standby, &nstandby, HC_HA_MAX_MEMBERS, path, pgroups[i].line,
                             g->name, error, error_len))
            goto out;
        for (size_t k = 0; k < nstandby; k++) {
            size_t m;
            for (m = 0; m < g->nmembers; m++)
                if (g->members[m] == standby[k])
                    break;
            if (m == g->nmembers) {
                fail(error, error_len, path, pgroups[i].line, "[hagroup %s]: a standby member is not in 'members'",
                     g->name);
                goto out;
            }
            g->standby[m] = 1;
        }
        if (g->nmembers == 0) {
            fail(error, error_len, path, pgroups[i].line, "[hagroup %s] has no members", g->name);
            goto out;
        }
    }
    if (cfg->nslots > 0 && (cfg->certificate == NULL || cfg->private_key == NULL)) {
        fail(error, error_len, path, 0, "[client] needs 'certificate' and 'private_key' (hsmcloud client cert new)");
        goto out;
    }
    result = HC_CONFIG_OK;

out:
    if (pending != NULL) {
        for (size_t i = 0; i < cfg->nslots; i++)
            free(pending[i].server_name);
        free(pending);
    }
    if (pgroups != NULL) {
        for (size_t i = 0; i < cfg->ngroups; i++) {
            free(pgroups[i].members);
            free(pgroups[i].standby);
        }
        free(pgroups);
    }
    free(server_lines);
    free(copy);
    if (result != HC_CONFIG_OK)
        hc_config_free(cfg);
    return result;
}

static int config_path(char *out, size_t len, int *explicit_path)
{
    const char *conf = getenv("HSMCLOUD_CONF");
    const char *home;
    *explicit_path = 0;
    if (conf != NULL && conf[0] != '\0') {
        *explicit_path = 1;
        return snprintf(out, len, "%s", conf) < (int)len;
    }
    home = getenv("HSMCLOUD_CLIENT_HOME");
    if (home != NULL && home[0] != '\0')
        return snprintf(out, len, "%s/client.conf", home) < (int)len;
    home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
        return 0;
    return snprintf(out, len, "%s/.hsmcloud-client/client.conf", home) < (int)len;
}

enum hc_config_result hc_config_load(hc_config *cfg, char *error, size_t error_len)
{
    char path[4096];
    int explicit_path;
    struct stat st;
    FILE *f;
    char *text;
    size_t n;
    enum hc_config_result r;

    memset(cfg, 0, sizeof *cfg);
    if (!config_path(path, sizeof path, &explicit_path)) {
        snprintf(error, error_len, "no configuration file: neither HSMCLOUD_CONF, HSMCLOUD_CLIENT_HOME nor HOME is set");
        return HC_CONFIG_ABSENT;
    }
    f = fopen(path, "re");
    if (f == NULL) {
        int err = errno;
        if (err == ENOENT && !explicit_path) {
            snprintf(error, error_len, "%s: no such file (no slots until 'hsmcloud client' writes it)", path);
            return HC_CONFIG_ABSENT;
        }
        snprintf(error, error_len, "%s: cannot open: %s", path, strerror(err));
        return HC_CONFIG_ERROR;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_SIZE_MAX) {
        fclose(f);
        snprintf(error, error_len, "%s: not a regular file of at most %d bytes", path, CONFIG_SIZE_MAX);
        return HC_CONFIG_ERROR;
    }
    text = malloc((size_t)st.st_size + 1);
    if (text == NULL) {
        fclose(f);
        snprintf(error, error_len, "%s: out of memory", path);
        return HC_CONFIG_ERROR;
    }
    n = fread(text, 1, (size_t)st.st_size, f);
    fclose(f);
    text[n] = '\0';
    if (memchr(text, '\0', n) != NULL) {
        free(text);
        snprintf(error, error_len, "%s: not a text file", path);
        return HC_CONFIG_ERROR;
    }
    r = hc_config_parse(cfg, path, text, error, error_len);
    free(text);
    return r;
}
