/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the small parsers of what the kernel and /proc hand the agent, and of agent ids.
 * The input's first byte picks the parser, the rest is its input:
 *   0  agent_id_from_string(): accepted ids print back as the same text, lowercased;
 *   1  vm_manager_vm_id_in() on a /proc command line: an id found is there, as 16 hex digits after the
 *      needle and before a '/';
 *   2  listening_ports_parse(), /proc/net/tcp form (3: udp form): a port it marks appears in the text as
 *      ":%04X " after a local address;
 *   4  taskstats_message_parse() on one generic netlink message;
 *   5  rtnl_link_parse() on one RTM_NEWLINK message: names and kinds come back NUL-terminated;
 *   6  nft_elems_message_parse() on one NFT_MSG_NEWSETELEM message, for each element kind: every element's
 *      tag and ifname are NUL-terminated, protocols and ports as we write them.
 * Netlink messages are copied into an aligned buffer with nlmsg_len set to their size. Any violation
 * aborts. */

#include <ctype.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/vm-manager.h"
#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"
#include "state/agent-id.h"
#include "util/netports.h"
#include "vmm/taskstats-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(x)                                                                              \
        do {                                                                                  \
                if (!(x)) {                                                                   \
                        fprintf(stderr, "fuzz-parsers: %s:%d: %s\n", __FILE__, __LINE__, #x); \
                        abort();                                                              \
                }                                                                             \
        } while (0)

static char *as_string(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);
        check(s);
        memcpy(s, data, size);
        s[size] = '\0';
        return s;
}

static void fuzz_agent_id(const uint8_t *data, size_t size) {
        char *s = as_string(data, size), back[AGENT_ID_STRING_SIZE];
        uint8_t id[16];
        if (agent_id_from_string(s, id) >= 0) {
                agent_id_to_string(id, back);
                check(strlen(s) == 36);
                for (size_t i = 0; i < 36; i++)
                        check(back[i] == tolower((unsigned char) s[i]));
        }
        free(s);
}

static void fuzz_cmdline(const uint8_t *data, size_t size) {
        static const char needle[] = "/run/chvm/vms/";
        char *s = as_string(data, size), hex[17];
        uint64_t id = vm_manager_vm_id_in(s, needle);
        if (id) {
                snprintf(hex, sizeof(hex), "%016llx", (unsigned long long) id);
                bool found = false;
                for (const char *p = s; !found && (p = strstr(p, needle)); p++)
                        found = strncasecmp(p + strlen(needle), hex, 16) == 0 &&
                                p[strlen(needle) + 16] == '/';
                check(found);
        }
        free(s);
}

static void fuzz_netports(const uint8_t *data, size_t size, bool tcp) {
        ListeningPorts lp = {};
        char *s = as_string(data, size);
        if (listening_ports_parse(&lp, tcp, s, strlen(s)) >= 0) /* /proc text holds no NUL */
                for (unsigned port = 1; port < 65536; port++)
                        if (listening_ports_has(&lp, tcp ? IPPROTO_TCP : IPPROTO_UDP, (uint16_t) port)) {
                                char want[8];
                                snprintf(want, sizeof(want), ":%04X ", port);
                                /* the parser accepts lowercase and fewer digits; the kernel's form is this
                                 */
                                bool seen = false;
                                for (const char *p = s; !seen && (p = strchr(p, ':')); p++) {
                                        unsigned v;
                                        int n = 0;
                                        seen = sscanf(p + 1, "%4x%n", &v, &n) == 1 && v == port &&
                                               p[1 + n] == ' ';
                                }
                                check(seen);
                        }
        free(s);
}

/* One netlink message: the input, aligned, with its length in the header (at least a header's worth). */
static struct nlmsghdr *as_message(const uint8_t *data, size_t size) {
        size_t n = size < sizeof(struct nlmsghdr) ? sizeof(struct nlmsghdr) : size;
        struct nlmsghdr *nlh = calloc(1, NLMSG_ALIGN(n));
        check(nlh);
        memcpy(nlh, data, size);
        nlh->nlmsg_len = (uint32_t) n;
        return nlh;
}

static void fuzz_taskstats(const uint8_t *data, size_t size) {
        struct nlmsghdr *nlh = as_message(data, size);
        TaskstatsRecord rec;
        (void) taskstats_message_parse(nlh, &rec);
        free(nlh);
}

static void fuzz_link(const uint8_t *data, size_t size) {
        struct nlmsghdr *nlh = as_message(data, size);
        LinkInfo l;
        if (rtnl_link_parse(nlh, &l) >= 0) {
                check(memchr(l.name, '\0', sizeof(l.name)));
                check(memchr(l.alias, '\0', sizeof(l.alias)));
                check(memchr(l.kind, '\0', sizeof(l.kind)));
        }
        free(nlh);
}

static void fuzz_elems(const uint8_t *data, size_t size) {
        struct nlmsghdr *nlh = as_message(data, size);
        for (int k = 0; k < _NFT_ELEM_KIND_MAX; k++) {
                NftElem *e = NULL;
                size_t n = 0;
                if (nft_elems_message_parse(nlh, (NftElemKind) k, &e, &n) < 0)
                        continue;
                for (size_t i = 0; i < n; i++) {
                        check(e[i].kind == (NftElemKind) k);
                        check(memchr(e[i].tag, '\0', sizeof(e[i].tag)));
                        check(memchr(e[i].ifname, '\0', sizeof(e[i].ifname)));
                }
                free(e);
        }
        free(nlh);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        switch (data[0] % 7) {
        case 0:
                fuzz_agent_id(data + 1, size - 1);
                break;
        case 1:
                fuzz_cmdline(data + 1, size - 1);
                break;
        case 2:
        case 3:
                fuzz_netports(data + 1, size - 1, data[0] % 7 == 2);
                break;
        case 4:
                fuzz_taskstats(data + 1, size - 1);
                break;
        case 5:
                fuzz_link(data + 1, size - 1);
                break;
        case 6:
                fuzz_elems(data + 1, size - 1);
                break;
        }
        return 0;
}
