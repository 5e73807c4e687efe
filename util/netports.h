/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The ports sockets of this network namespace listen on: TCP sockets in LISTEN, UDP sockets bound and not
 * connected, IPv4 and IPv6, on any address. A port forward to a guest on one of them takes the host's
 * service away (the forward matches every local address). */
typedef struct ListeningPorts {
        uint8_t tcp[65536 / 8], udp[65536 / 8];
} ListeningPorts;

/* The calling thread's namespace, through sock_diag (NETLINK_SOCK_DIAG dumps of the LISTEN and unconnected
 * states); where the kernel has no inet_diag, from the files as listening_ports_read_proc(). -errno when
 * neither can be read. */
int listening_ports_read(ListeningPorts *ret);
/* The sock_diag part alone (for tests): -errno when the kernel cannot answer. */
int listening_ports_read_diag(ListeningPorts *ret);
/* Reads /proc/self/net/{tcp,tcp6,udp,udp6}; a file that does not exist (no IPv6) counts as empty. */
int listening_ports_read_proc(ListeningPorts *ret);
/* Parses one such file's text into *lp (tcp: LISTEN sockets, else bound unconnected ones). -EINVAL on a
 * line that is not of the kernel's form. */
int listening_ports_parse(ListeningPorts *lp, bool tcp, const char *text, size_t size);
bool listening_ports_has(const ListeningPorts *lp, uint8_t proto, uint16_t port);
