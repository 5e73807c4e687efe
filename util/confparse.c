/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/confparse.h"
#include "util/ifname.h"

int conf_bool(const char *s, bool *ret) {
        if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
                *ret = true;
        else if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

bool conf_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *end || s[0] < '0' || s[0] > '9' || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

int conf_ipv4(const char *s, uint32_t *ret) {
        struct in_addr a;
        if (inet_pton(AF_INET, s, &a) != 1)
                return -EINVAL;
        *ret = ntohl(a.s_addr);
        return 0;
}

int conf_subnet(const char *s, unsigned min_len, unsigned max_len, uint32_t *ret_net, uint8_t *ret_len,
                char *why, size_t why_size) {
        char buf[64];
        const char *slash = strchr(s, '/');
        unsigned long n;
        uint32_t a;

        if (!slash || (size_t) (slash - s) >= sizeof(buf)) {
                snprintf(why, why_size, "\"%s\": expected A.B.C.D/N", s);
                return -EINVAL;
        }
        memcpy(buf, s, (size_t) (slash - s));
        buf[slash - s] = '\0';
        if (conf_ipv4(buf, &a) < 0 || !conf_uint(slash + 1, min_len, max_len, &n)) {
                snprintf(why, why_size, "\"%s\": expected A.B.C.D/N with N from %u to %u", s, min_len,
                         max_len);
                return -EINVAL;
        }
        uint32_t mask = n == 0 ? 0 : ~UINT32_C(0) << (32 - n);
        if (a & ~mask) {
                a &= mask;
                snprintf(why, why_size, "\"%s\" has host bits set (did you mean %u.%u.%u.%u/%lu?)", s,
                         a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff, n);
                return -EINVAL;
        }
        *ret_net = a;
        *ret_len = (uint8_t) n;
        return 0;
}

bool conf_ifname(const char *s) {
        if (!ifname_valid(s))
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < ' ' || *p >= 0x7f)
                        return false;
        return true;
}

bool conf_tap_prefix(const char *s) {
        return strlen(s) <= 11 && conf_ifname(s);
}

bool conf_simple_name(const char *s, size_t max, bool allow_upper) {
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

bool conf_domain(const char *s) {
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

bool conf_put_str(char *dst, size_t size, const char *value) {
        size_t n = strlen(value);
        if (n == 0 || n >= size)
                return false;
        memcpy(dst, value, n + 1);
        return true;
}
