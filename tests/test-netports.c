/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* util/netports.c: the ports the host listens on ([local] reserved_ports), read through sock_diag, against
 * what the kernel's /proc files say and against sockets the test opens itself in a namespace of its own:
 * TCP listeners (IPv4, IPv6) and bound UDP sockets count; a connected UDP socket, an established TCP
 * connection's ports and a TCP socket bound without listen() do not. */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/netports.h"

static void setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root for a network namespace of its own");
        cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
        /* lo up, for the connections */
        cr_assert_eq(system("ip link set lo up"), 0);
}

TestSuite(netports, .init = setup);

static int sock_on(int family, int type, uint16_t port, bool do_listen) {
        int s = socket(family, type | SOCK_CLOEXEC, 0);
        cr_assert_geq(s, 0);
        int one = 1;
        (void) setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (family == AF_INET6)
                (void) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        struct sockaddr_storage ss = {};
        socklen_t len;
        if (family == AF_INET) {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                a->sin_port = htons(port);
                a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                len = sizeof(*a);
        } else {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(port);
                a->sin6_addr = in6addr_loopback;
                len = sizeof(*a);
        }
        cr_assert_eq(bind(s, (struct sockaddr *) &ss, len), 0, "bind %u: %s", port, strerror(errno));
        if (do_listen)
                cr_assert_eq(listen(s, 4), 0);
        return s;
}

static void connect_to(int s, uint16_t port) {
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        cr_assert_eq(connect(s, (struct sockaddr *) &a, sizeof(a)), 0, "connect %u: %s", port,
                     strerror(errno));
}

Test(netports, sock_diag_sees_what_the_kernel_files_say) {
        int tl4 = sock_on(AF_INET, SOCK_STREAM, 2201, true),
            tl6 = sock_on(AF_INET6, SOCK_STREAM, 2202, true);
        int tb = sock_on(AF_INET, SOCK_STREAM, 2203, false); /* bound, never listening */
        int ub4 = sock_on(AF_INET, SOCK_DGRAM, 5301, false),
            ub6 = sock_on(AF_INET6, SOCK_DGRAM, 5302, false);
        int uc = sock_on(AF_INET, SOCK_DGRAM, 5303, false);
        connect_to(uc, 5301); /* connected: it takes no datagrams from others */
        int client = sock_on(AF_INET, SOCK_STREAM, 2204, false);
        connect_to(client, 2201); /* an established connection: its ports are no service */
        int server = accept(tl4, NULL, NULL);
        cr_assert_geq(server, 0);

        ListeningPorts diag, proc;
        cr_assert_eq(listening_ports_read_diag(&diag), 0,
                     "sock_diag: this kernel has inet_diag and udp_diag");
        cr_assert_eq(listening_ports_read_proc(&proc), 0);
        cr_assert_eq(memcmp(&diag, &proc, sizeof(diag)), 0, "sock_diag and /proc/net differ");

        static const struct {
                uint8_t proto;
                uint16_t port;
                bool listening;
        } want[] = {
                { IPPROTO_TCP, 2201, true },  { IPPROTO_TCP, 2202, true },  { IPPROTO_TCP, 2203, false },
                { IPPROTO_TCP, 2204, false }, { IPPROTO_UDP, 5301, true },  { IPPROTO_UDP, 5302, true },
                { IPPROTO_UDP, 5303, false }, { IPPROTO_UDP, 2201, false }, { IPPROTO_TCP, 5301, false },
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                cr_assert_eq(listening_ports_has(&diag, want[i].proto, want[i].port), want[i].listening,
                             "%s port %u", want[i].proto == IPPROTO_TCP ? "tcp" : "udp", want[i].port);
        size_t n = 0;
        for (unsigned p = 1; p < 65536; p++)
                n += listening_ports_has(&diag, IPPROTO_TCP, (uint16_t) p) +
                     listening_ports_has(&diag, IPPROTO_UDP, (uint16_t) p);
        cr_assert_eq(n, 4, "%zu ports marked in a namespace with 4 services", n);

        close(tl4), close(tl6), close(tb), close(ub4), close(ub6), close(uc), close(client), close(server);
        cr_assert_eq(listening_ports_read(&diag), 0);
        cr_assert(!listening_ports_has(&diag, IPPROTO_TCP, 2201) &&
                          !listening_ports_has(&diag, IPPROTO_UDP, 5301),
                  "closed sockets still listed");
}
