/* The client configuration file shared with the Python CLI ($HSMCLOUD_CONF,
 * $HSMCLOUD_CLIENT_HOME/client.conf or ~/.hsmcloud-client/client.conf). */
#ifndef HSMCLOUD_CONFIG_H
#define HSMCLOUD_CONFIG_H

#include <stddef.h>

#define HC_DEFAULT_PORT 1792
#define HC_DEFAULT_RECEIVE_TIMEOUT 20

typedef struct hc_server_conf {
    char *name;
    char *address; /* dotted IPv4 in 127.0.0.0/8 */
    int port;
    char *certificate; /* the pinned server.pem */
} hc_server_conf;

typedef struct hc_slot_conf {
    size_t server; /* index into servers */
    char *partition; /* serial number or name */
} hc_slot_conf;

/* An HA group ([hagroup NAME]): a virtual slot over member partitions, each one a [slot]. */
#define HC_HA_MAX_MEMBERS 32
#define HC_HA_MIN_INTERVAL 60
#define HC_HA_MAX_INTERVAL 1200
#define HC_HA_DEFAULT_INTERVAL 60

typedef struct hc_hagroup_conf {
    char *name;
    char *serial; /* the group's serial number ("1" + the founding member's serial); NULL: derived */
    size_t members[HC_HA_MAX_MEMBERS]; /* slot indices */
    int standby[HC_HA_MAX_MEMBERS];
    size_t nmembers;
    long retry_count;      /* 0: no auto-recovery (default); -1: forever; N: N attempts */
    long interval_seconds; /* between auto-recovery attempts, 60..1200 */
    long recovery_request; /* 'hagroup recover' increases it: a manual recovery for running applications */
} hc_hagroup_conf;

typedef struct hc_config {
    char path[4096];
    char *client_name;
    char *certificate;
    char *private_key;
    int receive_timeout_seconds;
    hc_server_conf *servers;
    size_t nservers;
    hc_slot_conf *slots;
    size_t nslots;
    hc_hagroup_conf *groups;
    size_t ngroups;
    int ha_only; /* [client] ha_only = yes: only the HA slots are visible */
} hc_config;

enum hc_config_result {
    HC_CONFIG_OK = 0,
    HC_CONFIG_ABSENT = 1, /* no file at the default paths: zero slots */
    HC_CONFIG_ERROR = -1, /* `error` says which file, line and problem */
};

/* Reads the configuration the environment points at. */
enum hc_config_result hc_config_load(hc_config *cfg, char *error, size_t error_len);
/* Parses a configuration text; `path` names it in errors and anchors relative paths. */
enum hc_config_result hc_config_parse(hc_config *cfg, const char *path, const char *text, char *error,
                                      size_t error_len);
void hc_config_free(hc_config *cfg);

#endif
