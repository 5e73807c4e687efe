/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/config.h"
#include "backends/backend.h"
#include "util/ifname.h"
#include "util/macro.h"

void config_defaults(AgentConfig *c, const char *backend_dir) {
        *c = (AgentConfig){
                .state_dir = "/var/lib/chvm",
                .runtime_dir = "/run/chvm",
                .socket = "",
                .default_backend = "local",
                .control_group = "chvm",
                .backends = { "local", "bridge", "mosnet" },
                .n_backends = 3,
                .journal_compact_size = UINT64_C(8) << 20,
                .connections_per_uid = 64,
                .idle_timeout = 60,
                .hypervisor = "cloud-hypervisor",
                .stop_timeout = 10,
                .accel = "auto",
                .local_bridge = "chvm0",
                .local_subnet = 0xc0a8c800,
                .local_prefixlen = 24,
                .local_gateway = 0,
                .local_tap_prefix = "tap-",
                .local_table = "chvm",
                .local_table_owner = TABLE_OWNER_AUTO,
                .local_dhcp = true,
                .local_lease_time = 3600,
                .local_kernel_ip_arg = true,
                .local_reserve_listening = true,
                .bridge_bridge = "br0",
                .bridge_tap_prefix = "tap-",
        };
        snprintf(c->backend_dir, sizeof(c->backend_dir), "%s", backend_dir ? backend_dir : "");
}

typedef struct Parse {
        AgentConfig c;
        char seen[48][48]; /* "section.key" given so far */
        unsigned n_seen;
        bool gateway_given;
        char why[256]; /* the first error */
} Parse;

_printf_(2, 3) static int bad(Parse *p, const char *fmt, ...) {
        if (!p->why[0]) {
                va_list ap;
                va_start(ap, fmt);
                (void) vsnprintf(p->why, sizeof(p->why), fmt, ap);
                va_end(ap);
        }
        return 0; /* inih: error on this line */
}

/* 1 if ok, else records the error: what inih wants from the handler. */
_printf_(3, 4) static int check(Parse *p, bool ok, const char *fmt, ...) {
        if (ok)
                return 1;
        if (!p->why[0]) {
                va_list ap;
                va_start(ap, fmt);
                (void) vsnprintf(p->why, sizeof(p->why), fmt, ap);
                va_end(ap);
        }
        return 0;
}

static bool put_str(char *dst, size_t size, const char *value) {
        size_t n = strlen(value);
        if (n == 0 || n >= size)
                return false;
        memcpy(dst, value, n + 1);
        return true;
}

static bool put_path(char *dst, size_t size, const char *value) {
        return value[0] == '/' && put_str(dst, size, value);
}

/* A name the kernel accepts, and in a config file also plain printable ASCII. */
static bool ifname_ok(const char *s) {
        if (!ifname_valid(s))
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < ' ' || *p >= 0x7f)
                        return false;
        return true;
}

/* [a-z][a-z0-9_-]* up to max bytes: names of backends, groups, tables. */
static bool simple_name(const char *s, size_t max, bool allow_upper) {
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                bool ok = (ch >= 'a' && ch <= 'z') || (allow_upper && ch >= 'A' && ch <= 'Z') ||
                          (i > 0 && ((ch >= '0' && ch <= '9') || ch == '-' || ch == '_'));
                if (!ok)
                        return false;
        }
        return true;
}

static int parse_ipv4(const char *s, uint32_t *ret) {
        struct in_addr a;
        if (inet_pton(AF_INET, s, &a) != 1)
                return -EINVAL;
        *ret = ntohl(a.s_addr);
        return 0;
}

static int parse_bool(const char *s, bool *ret) {
        if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
                *ret = true;
        else if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

/* A DNS domain as option 15 carries it: labels of letters, digits and '-', dot-separated. */
static bool domain_ok(const char *s) {
        size_t n = strlen(s), label = 0;
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (ch == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                          (ch == '-' && label > 0);
                if (!ok || ++label > 63)
                        return false;
        }
        return label > 0 || n > 1;
}

/* A whole decimal number from min to max. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *end || s[0] < '0' || s[0] > '9' || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

static int parse_image_dirs(Parse *p, const char *value) {
        AgentConfig *c = &p->c;
        char buf[2048], *save = NULL;
        unsigned n = 0;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "image_dirs: too long");
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
                if (n == CONFIG_MAX_IMAGE_DIRS)
                        return bad(p, "image_dirs: at most %d folders", CONFIG_MAX_IMAGE_DIRS);
                /* kept as given; the agent resolves them when it checks a path */
                if (!put_path(c->image_dirs[n], sizeof(c->image_dirs[n]), t))
                        return bad(p, "image_dirs: \"%s\" is not an absolute path of at most %zu bytes", t,
                                   sizeof(c->image_dirs[n]) - 1);
                size_t len = strlen(c->image_dirs[n]);
                while (len > 1 && c->image_dirs[n][len - 1] == '/')
                        c->image_dirs[n][--len] = '\0';
                n++;
        }
        c->n_image_dirs = n;
        return 1;
}

/* [vmm] environment (NAME=VALUE ...) and pass_environment (NAME or PREFIX* ...). */
static int parse_env_list(Parse *p, const char *key, const char *value, bool assignments) {
        AgentConfig *c = &p->c;
        char buf[4096], *save = NULL;
        unsigned n = 0;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "%s: too long", key);
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
                size_t len = assignments ? strcspn(t, "=") : strlen(t);
                bool star = !assignments && len > 1 && t[len - 1] == '*';
                bool ok = len > 0 && !(t[0] >= '0' && t[0] <= '9') && (!assignments || t[len] == '=');
                for (size_t i = 0; ok && i < len - star; i++)
                        ok = (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
                             (t[i] >= '0' && t[i] <= '9') || t[i] == '_';
                if (!ok)
                        return bad(p, assignments ? "%s: \"%s\" is not NAME=VALUE (NAME of letters, digits and _)"
                                                  : "%s: \"%s\" is not a variable name (or a prefix with *)",
                                   key, t);
                if (assignments && strncmp(t, "PATH=", 5) == 0)
                        return bad(p, "%s: PATH is the agent's (%s)", key, "/usr/local/sbin:...:/bin");
                if (n == CONFIG_MAX_ENV)
                        return bad(p, "%s: at most %d", key, CONFIG_MAX_ENV);
                char *dst = assignments ? c->vmm_environment[n] : c->vmm_pass_environment[n];
                size_t size = assignments ? sizeof(c->vmm_environment[n]) : sizeof(c->vmm_pass_environment[n]);
                if (!put_str(dst, size, t))
                        return bad(p, "%s: \"%s\" is longer than %zu bytes", key, t, size - 1);
                n++;
        }
        if (assignments)
                c->n_vmm_environment = n;
        else
                c->n_vmm_pass_environment = n;
        return 1;
}

/* "listening", "none", or ports and ranges (PORT, PORT-PORT, either with /tcp or /udp), "listening"
 * among them or not. */
static int parse_reserved_ports(Parse *p, const char *value) {
        AgentConfig *c = &p->c;
        char buf[1024], *save = NULL;
        unsigned n = 0;
        bool listening = false, none = false, any = false;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "reserved_ports: too long");
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                any = true;
                if (strcmp(t, "listening") == 0) {
                        listening = true;
                        continue;
                }
                if (strcmp(t, "none") == 0) {
                        none = true;
                        continue;
                }
                PortRange pr = {};
                char *slash = strchr(t, '/');
                if (slash) {
                        *slash = '\0';
                        if (strcmp(slash + 1, "tcp") == 0)
                                pr.proto = IPPROTO_TCP;
                        else if (strcmp(slash + 1, "udp") == 0)
                                pr.proto = IPPROTO_UDP;
                        else
                                return bad(p, "reserved_ports: \"%s\": expected tcp or udp after /", slash + 1);
                }
                char *dash = strchr(t, '-');
                unsigned long lo, hi;
                if (dash)
                        *dash = '\0';
                if (!parse_uint(t, 1, 65535, &lo) || !parse_uint(dash ? dash + 1 : t, 1, 65535, &hi) || hi < lo)
                        return bad(p, "reserved_ports: \"%s%s%s\": expected a port or a range PORT-PORT of 1 to 65535",
                                   t, dash ? "-" : "", dash ? dash + 1 : "");
                if (n == CONFIG_MAX_RESERVED)
                        return bad(p, "reserved_ports: at most %d ports or ranges", CONFIG_MAX_RESERVED);
                pr.first = (uint16_t) lo;
                pr.last = (uint16_t) hi;
                c->local_reserved[n++] = pr;
        }
        if (!any)
                return bad(p, "reserved_ports: expected listening, none or ports");
        if (none && (listening || n))
                return bad(p, "reserved_ports: none stands alone");
        c->local_reserve_listening = listening;
        c->local_n_reserved = n;
        return 1;
}

static int parse_local_dns(Parse *p, const char *value) {
        AgentConfig *c = &p->c;
        char buf[256], *save = NULL;
        unsigned n = 0;

        c->local_dns_given = true;
        c->local_n_dns = 0;
        if (strcmp(value, "none") == 0)
                return 1;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "dns: too long");
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                uint32_t a;
                if (parse_ipv4(t, &a) < 0 || a == 0 || a == 0xffffffffU)
                        return bad(p, "dns: \"%s\" is not a unicast IPv4 address (DHCP option 6 carries IPv4)", t);
                if (n == CONFIG_DNS_MAX)
                        return bad(p, "dns: at most %d servers", CONFIG_DNS_MAX);
                c->local_dns[n++] = a;
        }
        if (n == 0)
                return bad(p, "dns: expected addresses, or none");
        c->local_n_dns = n;
        return 1;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        Parse *p = user;
        AgentConfig *c = &p->c;
        char key[48];

        if (!name)
                return 1;
        snprintf(key, sizeof(key), "%s.%s", section, name);
        for (unsigned i = 0; i < p->n_seen; i++)
                if (strcmp(p->seen[i], key) == 0)
                        return bad(p, "[%s] %s is set twice", section, name);
        if (p->n_seen < ELEMENTSOF(p->seen))
                snprintf(p->seen[p->n_seen++], sizeof(p->seen[0]), "%s", key);

        if (strcmp(section, "agent") == 0) {
                if (strcmp(name, "state_dir") == 0)
                        return check(p, put_path(c->state_dir, sizeof(c->state_dir), value),
                                     "state_dir must be an absolute path");
                if (strcmp(name, "runtime_dir") == 0)
                        return check(p, put_path(c->runtime_dir, sizeof(c->runtime_dir), value),
                                     "runtime_dir must be an absolute path");
                if (strcmp(name, "socket") == 0)
                        return check(p, put_path(c->socket, sizeof(c->socket), value),
                                     "socket must be an absolute path of at most %zu bytes",
                                     sizeof(c->socket) - 1);
                if (strcmp(name, "backend_dir") == 0)
                        return check(p, put_path(c->backend_dir, sizeof(c->backend_dir), value),
                                     "backend_dir must be an absolute path");
                if (strcmp(name, "default_backend") == 0)
                        return check(p,
                                     (simple_name(value, 32, false) &&
                                      put_str(c->default_backend, sizeof(c->default_backend), value)),
                                     "default_backend \"%s\" is not a backend name", value);
                if (strcmp(name, "control_group") == 0)
                        return check(p,
                                     (simple_name(value, 32, true) &&
                                      put_str(c->control_group, sizeof(c->control_group), value)),
                                     "control_group \"%s\" is not a group name", value);
                if (strcmp(name, "journal_compact_size") == 0) {
                        char *end;
                        errno = 0;
                        unsigned long long v = strtoull(value, &end, 10);
                        unsigned shift = 0;
                        if (*end == 'K' || *end == 'k')
                                shift = 10, end++;
                        else if (*end == 'M')
                                shift = 20, end++;
                        else if (*end == 'G')
                                shift = 30, end++;
                        if (errno || *end || value[0] < '0' || value[0] > '9' || v == 0 || v > (UINT64_C(1) << 40) >> shift)
                                return bad(p, "journal_compact_size \"%s\": expected bytes (with K, M or G) from 1 to 1T",
                                           value);
                        c->journal_compact_size = (uint64_t) v << shift;
                        return 1;
                }
                if (strcmp(name, "connections_per_uid") == 0 || strcmp(name, "idle_timeout") == 0) {
                        bool per_uid = name[0] == 'c';
                        unsigned long v;
                        if (!parse_uint(value, per_uid ? 1 : 0, per_uid ? 512 : 86400, &v))
                                return bad(p, per_uid ? "connections_per_uid \"%s\": expected a number from 1 to 512"
                                                      : "idle_timeout \"%s\": expected whole seconds from 0 (never) "
                                                        "to 86400",
                                           value);
                        if (per_uid)
                                c->connections_per_uid = (unsigned) v;
                        else
                                c->idle_timeout = (unsigned) v;
                        return 1;
                }
                if (strcmp(name, "backends") == 0) {
                        char buf[512], *save = NULL;
                        unsigned n = 0;
                        if (strlen(value) >= sizeof(buf))
                                return bad(p, "backends: too long");
                        memcpy(buf, value, strlen(value) + 1);
                        for (char *t = strtok_r(buf, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                                if (!simple_name(t, 32, false))
                                        return bad(p, "backends: \"%s\" is not a backend name", t);
                                if (n == CONFIG_MAX_BACKENDS)
                                        return bad(p, "backends: at most %d", CONFIG_MAX_BACKENDS);
                                for (unsigned i = 0; i < n; i++)
                                        if (strcmp(c->backends[i], t) == 0)
                                                return bad(p, "backends: \"%s\" is listed twice", t);
                                snprintf(c->backends[n++], sizeof(c->backends[0]), "%s", t);
                        }
                        if (n == 0)
                                return bad(p, "backends: the list is empty");
                        c->n_backends = n;
                        return 1;
                }
        } else if (strcmp(section, "vmm") == 0) {
                if (strcmp(name, "hypervisor") == 0) {
                        if (strcmp(value, "cloud-hypervisor") != 0 && strcmp(value, "qemu") != 0)
                                return bad(p, "hypervisor \"%s\": expected cloud-hypervisor or qemu", value);
                        return put_str(c->hypervisor, sizeof(c->hypervisor), value);
                }
                if (strcmp(name, "binary") == 0) {
                        if (value[0] != '/')
                                return bad(p, "binary must be an absolute path");
                        /* Refuse at start what could only fail at the first VM. */
                        if (access(value, X_OK) < 0)
                                return bad(p, "binary %s: %s", value, strerror(errno));
                        return check(p, put_path(c->vmm_binary, sizeof(c->vmm_binary), value),
                                     "binary: path too long");
                }
                if (strcmp(name, "stop_timeout") == 0) {
                        char *end;
                        errno = 0;
                        unsigned long v = strtoul(value, &end, 10);
                        if (errno || *end || value[0] == '-' || value[0] == '\0' || v < 1 || v > 3600)
                                return bad(p, "stop_timeout \"%s\": expected whole seconds from 1 to 3600",
                                           value);
                        c->stop_timeout = (unsigned) v;
                        return 1;
                }
                if (strcmp(name, "allow_block_devices") == 0)
                        return check(p, parse_bool(value, &c->allow_block_devices) >= 0,
                                     "allow_block_devices \"%s\": expected yes or no", value);
                if (strcmp(name, "image_dirs") == 0)
                        return parse_image_dirs(p, value);
                if (strcmp(name, "environment") == 0)
                        return parse_env_list(p, name, value, true);
                if (strcmp(name, "pass_environment") == 0)
                        return parse_env_list(p, name, value, false);
                if (strcmp(name, "accel") == 0) {
                        if (strcmp(value, "auto") != 0 && strcmp(value, "kvm") != 0 &&
                            strcmp(value, "tcg") != 0)
                                return bad(p, "accel \"%s\": expected auto, kvm or tcg", value);
                        return put_str(c->accel, sizeof(c->accel), value);
                }
        } else if (strcmp(section, "local") == 0) {
                if (strcmp(name, "bridge") == 0)
                        return check(p,
                                     (ifname_ok(value) &&
                                      put_str(c->local_bridge, sizeof(c->local_bridge), value)),
                                     "bridge \"%s\" is not a valid interface name", value);
                if (strcmp(name, "subnet") == 0) {
                        char buf[64], *slash;
                        uint32_t a;
                        if (strlen(value) >= sizeof(buf))
                                return bad(p, "subnet \"%s\": expected A.B.C.D/N", value);
                        memcpy(buf, value, strlen(value) + 1);
                        slash = strchr(buf, '/');
                        if (!slash)
                                return bad(p, "subnet \"%s\": expected A.B.C.D/N", value);
                        *slash = '\0';
                        char *end;
                        unsigned long n = strtoul(slash + 1, &end, 10);
                        if (parse_ipv4(buf, &a) < 0 || *end || slash[1] == '\0' || n < 8 || n > 30)
                                return bad(p, "subnet \"%s\": expected A.B.C.D/N with N from 8 to 30",
                                           value);
                        uint32_t mask = ~UINT32_C(0) << (32 - n);
                        if (a & ~mask)
                                return bad(p,
                                           "subnet \"%s\" has host bits set (did you mean %u.%u.%u.%u/%lu?)",
                                           value, (a & mask) >> 24, ((a & mask) >> 16) & 0xff,
                                           ((a & mask) >> 8) & 0xff, (a & mask) & 0xff, n);
                        c->local_subnet = a;
                        c->local_prefixlen = (uint8_t) n;
                        return 1;
                }
                if (strcmp(name, "gateway") == 0) {
                        uint32_t a;
                        if (parse_ipv4(value, &a) < 0)
                                return bad(p, "gateway \"%s\" is not an IPv4 address", value);
                        c->local_gateway = a; /* checked against the subnet at the end */
                        p->gateway_given = true;
                        return 1;
                }
                if (strcmp(name, "tap_prefix") == 0)
                        return check(p,
                                     (strlen(value) <= 11 && ifname_ok(value) &&
                                      put_str(c->local_tap_prefix, sizeof(c->local_tap_prefix), value)),
                                     "tap_prefix \"%s\": 1 to 11 characters valid in an interface name",
                                     value);
                if (strcmp(name, "table") == 0)
                        return check(p,
                                     (simple_name(value, 32, true) &&
                                      put_str(c->local_table, sizeof(c->local_table), value)),
                                     "table \"%s\" is not a valid table name", value);
                if (strcmp(name, "table_owner") == 0) {
                        TableOwner t = table_owner_from_string(value);
                        if (t < 0)
                                return bad(p, "table_owner \"%s\": expected auto, yes or no", value);
                        c->local_table_owner = t;
                        return 1;
                }
                if (strcmp(name, "dhcp") == 0)
                        return check(p, parse_bool(value, &c->local_dhcp) >= 0, "dhcp \"%s\": expected yes or no",
                                     value);
                if (strcmp(name, "kernel_ip_arg") == 0)
                        return check(p, parse_bool(value, &c->local_kernel_ip_arg) >= 0,
                                     "kernel_ip_arg \"%s\": expected yes or no", value);
                if (strcmp(name, "dns") == 0)
                        return parse_local_dns(p, value);
                if (strcmp(name, "reserved_ports") == 0)
                        return parse_reserved_ports(p, value);
                if (strcmp(name, "domain") == 0)
                        return check(p, domain_ok(value) && put_str(c->local_domain, sizeof(c->local_domain), value),
                                     "domain \"%s\" is not a DNS domain name", value);
                if (strcmp(name, "lease_time") == 0 || strcmp(name, "mtu") == 0) {
                        bool lease = name[0] == 'l';
                        unsigned long min = lease ? 60 : 576, max = lease ? 31536000 : 65535;
                        char *end;
                        errno = 0;
                        unsigned long v = strtoul(value, &end, 10);
                        if (errno || *end || value[0] < '0' || value[0] > '9' || v < min || v > max)
                                return bad(p, "%s \"%s\": expected %s from %lu to %lu", name, value,
                                           lease ? "whole seconds" : "bytes", min, max);
                        if (lease)
                                c->local_lease_time = (uint32_t) v;
                        else
                                c->local_mtu = (uint32_t) v;
                        return 1;
                }
        } else if (strcmp(section, "bridge") == 0) {
                if (strcmp(name, "bridge") == 0)
                        return check(p,
                                     (ifname_ok(value) &&
                                      put_str(c->bridge_bridge, sizeof(c->bridge_bridge), value)),
                                     "bridge \"%s\" is not a valid interface name", value);
                if (strcmp(name, "tap_prefix") == 0)
                        return check(p,
                                     (strlen(value) <= 11 && ifname_ok(value) &&
                                      put_str(c->bridge_tap_prefix, sizeof(c->bridge_tap_prefix), value)),
                                     "tap_prefix \"%s\": 1 to 11 characters valid in an interface name",
                                     value);
        } else
                return bad(p, "unknown section [%s]", section);

        return bad(p, "unknown key \"%s\" in [%s]", name, section);
}

static int finish(Parse *p, const char *name, int line, char *err, size_t err_size) {
        AgentConfig *c = &p->c;

        if (line != 0) {
                snprintf(err, err_size, "%s:%d: %s", name, line, p->why[0] ? p->why : "syntax error");
                return -EINVAL;
        }
        uint32_t size = UINT32_C(1) << (32 - c->local_prefixlen);
        uint32_t bcast = c->local_subnet + size - 1;
        /* 0 is "not set" (the default), unless the file says 0.0.0.0: then it is a bad gateway. */
        if (c->local_gateway == 0 && !p->gateway_given)
                c->local_gateway = c->local_subnet + 1;
        else if (c->local_gateway <= c->local_subnet || c->local_gateway >= bcast) {
                snprintf(err, err_size, "%s: [local] gateway is not a host address of subnet %u.%u.%u.%u/%u",
                         name, c->local_subnet >> 24, (c->local_subnet >> 16) & 0xff,
                         (c->local_subnet >> 8) & 0xff, c->local_subnet & 0xff, c->local_prefixlen);
                return -EINVAL;
        }
        bool found = false;
        for (unsigned i = 0; i < c->n_backends; i++)
                found = found || strcmp(c->backends[i], c->default_backend) == 0;
        if (!found) {
                snprintf(err, err_size,
                         "%s: [agent] default_backend \"%s\" is not among the loaded backends", name,
                         c->default_backend);
                return -EINVAL;
        }
        if (!c->socket[0]) {
                int n = snprintf(c->socket, sizeof(c->socket), "%s/agent.sock", c->runtime_dir);
                if (n < 0 || (size_t) n >= sizeof(c->socket)) {
                        snprintf(err, err_size, "%s: [agent] runtime_dir is too long for the socket path",
                                 name);
                        return -ENAMETOOLONG;
                }
        }
        return 0;
}

/* inih reads a line into a buffer of INI_MAX_LINE bytes and takes what does not fit for the next line: a
 * longer line would be misread ("syntax error" on the line after it) or cut short without a word (when
 * the rest looks like a comment). Refused here, with its line. */
static int check_lines(const char *name, const char *text, char *err, size_t err_size) {
        const size_t max = INI_MAX_LINE - 2; /* room for the newline and the NUL */
        int line = 1;
        for (const char *p = text;; line++) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t) (nl - p) : strlen(p);
                if (len > max) {
                        snprintf(err, err_size, "%s:%d: line is longer than %zu bytes", name, line, max);
                        return -EINVAL;
                }
                if (!nl)
                        return 0;
                p = nl + 1;
        }
}

#define CONFIG_FILE_MAX (1024 * 1024)

int config_load(AgentConfig *c, const char *path, char *err, size_t err_size) {
        _cleanup_free_ char *text = NULL;
        size_t n = 0;
        FILE *f;
        int r;

        f = fopen(path, "re");
        if (!f) {
                r = negative_errno();
                snprintf(err, err_size, "%s: %s", path, strerror(-r));
                return r;
        }
        text = malloc(CONFIG_FILE_MAX + 1);
        if (!text) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(text, 1, CONFIG_FILE_MAX + 1, f);
        r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0) {
                snprintf(err, err_size, "%s: cannot read it", path);
                return r;
        }
        if (n > CONFIG_FILE_MAX) {
                snprintf(err, err_size, "%s: larger than %d bytes", path, CONFIG_FILE_MAX);
                return -EFBIG;
        }
        text[n] = '\0';
        /* the parser stops at a NUL: what follows would be ignored without a word */
        const char *nul = memchr(text, '\0', n);
        if (nul) {
                snprintf(err, err_size, "%s: not a text file (a NUL byte at offset %zu)", path,
                         (size_t) (nul - text));
                return -EINVAL;
        }
        return config_load_string(c, path, text, err, err_size);
}

int config_load_string(AgentConfig *c, const char *name, const char *text, char *err, size_t err_size) {
        Parse *p;
        int r;

        r = check_lines(name, text, err, err_size);
        if (r < 0)
                return r;
        p = calloc(1, sizeof(Parse));
        if (!p)
                return -ENOMEM;
        p->c = *c;
        r = finish(p, name, ini_parse_string(text, handler, p), err, err_size);
        if (r >= 0)
                *c = p->c;
        free(p);
        return r;
}
