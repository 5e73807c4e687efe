/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>

#include "util/ifname.h"

#define IFNAME_MAX 15 /* IFNAMSIZ - 1 */

bool ifname_valid(const char *name) {
        size_t len;

        if (!name)
                return false;
        len = strnlen(name, IFNAME_MAX + 1);
        if (len == 0 || len > IFNAME_MAX)
                return false;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return false;
        /* The sysctl folders net/ipv4/conf/all and .../default are not links: registering a link of that
         * name fails (the kernel's sysctl_dev_name_is_allowed()). */
        if (strcmp(name, "all") == 0 || strcmp(name, "default") == 0)
                return false;
        for (const unsigned char *p = (const unsigned char *) name; *p; p++)
                /* '%' makes the name a template ("tap%d" becomes tap0) or is refused: never the name
                 * asked for. */
                if (*p == '/' || *p == ':' || *p == ' ' || *p == '%' || (*p >= '\t' && *p <= '\r') ||
                    *p == 0xa0)
                        return false;
        return true;
}
