/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A host port forwarded to a guest port: part of a VM's definition (state/vmdef.h), of what a backend is
 * asked to set up (backends/backend.h), and of the API. */

#include <stdint.h>

typedef struct PortForward {
        uint8_t proto; /* IPPROTO_TCP / IPPROTO_UDP */
        uint16_t host_port;
        uint16_t guest_port;
} PortForward;
