/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Values of agent.conf, parsed the same way wherever a section is read: by the agent ([agent], [vmm]) and
 * by each backend (its own section). Each returns true (or 0) when the whole value is of the form; none
 * writes anything on failure. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* yes/true/1 or no/false/0: 0, else -EINVAL. */
int conf_bool(const char *s, bool *ret);
/* A whole decimal number from min to max (no sign, no blanks). */
bool conf_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret);
/* Dotted IPv4, host byte order: 0, else -EINVAL. */
int conf_ipv4(const char *s, uint32_t *ret);
/* "A.B.C.D/N" with N from min_len to max_len and no host bits: 0, else -EINVAL with a sentence (naming the
 * value, and the network meant when host bits are set) in why. */
int conf_subnet(const char *s, unsigned min_len, unsigned max_len, uint32_t *ret_net, uint8_t *ret_len,
                char *why, size_t why_size);
/* A name the kernel takes for a link, and plain printable ASCII. */
bool conf_ifname(const char *s);
/* A TAP name prefix: 1 to 11 bytes (room for 4 hex digits of a VM id) that conf_ifname() takes. */
bool conf_tap_prefix(const char *s);
/* [a-z][a-z0-9_-]* (or also A-Z) of 1 to max bytes: backends, groups, tables. */
bool conf_simple_name(const char *s, size_t max, bool allow_upper);
/* A DNS domain name: labels of letters, digits and '-', dot-separated, at most 253 bytes. */
bool conf_domain(const char *s);
/* Copies a value of 1 to size - 1 bytes. */
bool conf_put_str(char *dst, size_t size, const char *value);
