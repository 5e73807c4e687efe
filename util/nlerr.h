/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Reading a netlink NLMSG_ERROR reply, shared by the rtnetlink and nf_tables code. */

#include <linux/netlink.h>
#include <stddef.h>

#define NL_EXTACK_MAX 256

/* The error an NLMSG_ERROR message carries (0 for an ACK, -EBADMSG if it is truncated) and, when the
 * socket has NETLINK_EXT_ACK on, the kernel's explanation into extack ("" if it gave none). Works with
 * and without NETLINK_CAP_ACK. */
int nl_error_parse(const struct nlmsghdr *nlh, char extack[NL_EXTACK_MAX]);
