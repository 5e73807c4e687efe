/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backends/local/local-config.h"
#include "util/confparse.h"
#include "util/macro.h"
#include "util/string-table.h"

void local_config_defaults(LocalConfig *c) {
        *c = (LocalConfig){
                .bridge = "chvm0",
                .subnet = 0xc0a8c800,
                .prefixlen = 24,
                .tap_prefix = "tap-",
                .table = "chvm",
                .table_owner = TABLE_OWNER_AUTO,
                .dhcp = true,
                .lease_time = 3600,
                .kernel_ip_arg = true,
                .reserve_listening = true,
        };
}

static const char *const table_owner_table[_TABLE_OWNER_MAX] = {
        [TABLE_OWNER_AUTO] = "auto",
        [TABLE_OWNER_YES] = "yes",
        [TABLE_OWNER_NO] = "no",
};

DEFINE_STRING_TABLE(table_owner, TableOwner, table_owner_table, _TABLE_OWNER_MAX)

bool port_range_has(const PortRange *pr, uint8_t proto, uint16_t port) {
        return (pr->proto == 0 || pr->proto == proto) && port >= pr->first && port <= pr->last;
}

typedef struct Parse {
        LocalConfig c;
        bool gateway_given;
        bool listening, none; /* reserved_ports named them */
        Error *e;
} Parse;

_printf_(2, 3) static int bad(Parse *p, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) error_setv(p->e, -EINVAL, ERROR_INVALID, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* A list of words (blanks or commas between them), each handed to word(). */
static int words(Parse *p, const char *key, const char *value, int (*word)(Parse *p, char *w, unsigned *n),
                 unsigned *n) {
        char buf[1024], *save = NULL;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "%s: too long", key);
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                int r = word(p, t, n);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int reserved_word(Parse *p, char *t, unsigned *n) {
        if (strcmp(t, "listening") == 0) {
                p->listening = true;
                return 0;
        }
        if (strcmp(t, "none") == 0) {
                p->none = true;
                return 0;
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
        if (!conf_uint(t, 1, 65535, &lo) || !conf_uint(dash ? dash + 1 : t, 1, 65535, &hi) || hi < lo)
                return bad(p,
                           "reserved_ports: \"%s%s%s\": expected a port or a range PORT-PORT of 1 to 65535",
                           t, dash ? "-" : "", dash ? dash + 1 : "");
        if (*n == LOCAL_MAX_RESERVED)
                return bad(p, "reserved_ports: at most %d ports or ranges", LOCAL_MAX_RESERVED);
        pr.first = (uint16_t) lo;
        pr.last = (uint16_t) hi;
        p->c.reserved[(*n)++] = pr;
        return 0;
}

/* "listening", "none", or ports and ranges (PORT, PORT-PORT, either with /tcp or /udp), "listening"
 * among them or not. */
static int parse_reserved_ports(Parse *p, const char *value) {
        unsigned n = 0;
        p->listening = p->none = false;
        int r = words(p, "reserved_ports", value, reserved_word, &n);
        if (r < 0)
                return r;
        if (!p->listening && !p->none && n == 0)
                return bad(p, "reserved_ports: expected listening, none or ports");
        if (p->none && (p->listening || n))
                return bad(p, "reserved_ports: none stands alone");
        p->c.reserve_listening = p->listening;
        p->c.n_reserved = n;
        return 0;
}

static int dns_word(Parse *p, char *t, unsigned *n) {
        uint32_t a;
        if (conf_ipv4(t, &a) < 0 || a == 0 || a == 0xffffffffU)
                return bad(p, "dns: \"%s\" is not a unicast IPv4 address (DHCP option 6 carries IPv4)", t);
        if (*n == DHCP4_DNS_MAX)
                return bad(p, "dns: at most %d servers", DHCP4_DNS_MAX);
        p->c.dns[(*n)++] = a;
        return 0;
}

static int parse_dns(Parse *p, const char *value) {
        unsigned n = 0;
        p->c.dns_given = true;
        p->c.n_dns = 0;
        if (strcmp(value, "none") == 0)
                return 0;
        int r = words(p, "dns", value, dns_word, &n);
        if (r < 0)
                return r;
        if (n == 0)
                return bad(p, "dns: expected addresses, or none");
        p->c.n_dns = n;
        return 0;
}

static int parse_one(Parse *p, const char *key, const char *value) {
        LocalConfig *c = &p->c;
        char why[160];

        if (strcmp(key, "bridge") == 0)
                return conf_ifname(value) && conf_put_str(c->bridge, sizeof(c->bridge), value)
                               ? 0
                               : bad(p, "bridge \"%s\" is not a valid interface name", value);
        if (strcmp(key, "subnet") == 0)
                return conf_subnet(value, 8, 30, &c->subnet, &c->prefixlen, why, sizeof(why)) < 0
                               ? bad(p, "subnet %s", why)
                               : 0;
        if (strcmp(key, "gateway") == 0) {
                if (conf_ipv4(value, &c->gateway) < 0)
                        return bad(p, "gateway \"%s\" is not an IPv4 address", value);
                p->gateway_given = true; /* checked against the subnet at the end */
                return 0;
        }
        if (strcmp(key, "tap_prefix") == 0)
                return conf_tap_prefix(value) && conf_put_str(c->tap_prefix, sizeof(c->tap_prefix), value)
                               ? 0
                               : bad(p, "tap_prefix \"%s\": 1 to 11 characters valid in an interface name",
                                     value);
        if (strcmp(key, "table") == 0)
                return conf_simple_name(value, 32, true) && conf_put_str(c->table, sizeof(c->table), value)
                               ? 0
                               : bad(p, "table \"%s\" is not a valid table name", value);
        if (strcmp(key, "table_owner") == 0) {
                TableOwner t = table_owner_from_string(value);
                if (t < 0)
                        return bad(p, "table_owner \"%s\": expected auto, yes or no", value);
                c->table_owner = t;
                return 0;
        }
        if (strcmp(key, "dhcp") == 0)
                return conf_bool(value, &c->dhcp) < 0 ? bad(p, "dhcp \"%s\": expected yes or no", value) : 0;
        if (strcmp(key, "kernel_ip_arg") == 0)
                return conf_bool(value, &c->kernel_ip_arg) < 0
                               ? bad(p, "kernel_ip_arg \"%s\": expected yes or no", value)
                               : 0;
        if (strcmp(key, "dns") == 0)
                return parse_dns(p, value);
        if (strcmp(key, "reserved_ports") == 0)
                return parse_reserved_ports(p, value);
        if (strcmp(key, "domain") == 0)
                return conf_domain(value) && conf_put_str(c->domain, sizeof(c->domain), value)
                               ? 0
                               : bad(p, "domain \"%s\" is not a DNS domain name", value);
        if (strcmp(key, "lease_time") == 0 || strcmp(key, "mtu") == 0) {
                bool lease = key[0] == 'l';
                unsigned long min = lease ? 60 : 576, max = lease ? 31536000 : 65535, v;
                if (!conf_uint(value, min, max, &v))
                        return bad(p, "%s \"%s\": expected %s from %lu to %lu", key, value,
                                   lease ? "whole seconds" : "bytes", min, max);
                *(lease ? &c->lease_time : &c->mtu) = (uint32_t) v;
                return 0;
        }
        return bad(p, "unknown key \"%s\"", key);
}

int local_config_parse(LocalConfig *c, const BackendSetting *s, size_t n, size_t *ret_bad, Error *e) {
        Parse p = { .c = *c, .e = e };
        for (size_t i = 0; i < n; i++) {
                int r = parse_one(&p, s[i].key, s[i].value);
                if (r < 0) {
                        *ret_bad = i;
                        return r;
                }
        }
        uint32_t size = UINT32_C(1) << (32 - p.c.prefixlen);
        uint32_t net = p.c.subnet, bcast = net + size - 1;
        /* 0 is "not set" (the default), unless the file says 0.0.0.0: then it is a bad gateway. */
        if (!p.gateway_given)
                p.c.gateway = net + 1;
        else if (p.c.gateway <= net || p.c.gateway >= bcast) {
                *ret_bad = n;
                return bad(&p, "gateway is not a host address of subnet %u.%u.%u.%u/%u", net >> 24,
                           (net >> 16) & 0xff, (net >> 8) & 0xff, net & 0xff, p.c.prefixlen);
        }
        *c = p.c;
        return 0;
}
