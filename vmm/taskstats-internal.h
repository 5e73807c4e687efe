/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The decoder behind taskstats_listener_process(), for tests that feed it messages of other kernels. */

#include <linux/netlink.h>
#include <stdint.h>

/* One exit notification: the TASKSTATS_TYPE_AGGR_PID record of the task that exited. */
typedef struct TaskstatsRecord {
        uint32_t pid; /* the task (thread) id, in the initial PID namespace */
        uint32_t tgid; /* its thread group; 0 when the kernel does not say (taskstats version < 12) */
        uint32_t exit_code; /* a wait status */
        uint8_t flag; /* ac_flag; AGROUP cleared below version 12, where the bit meant nothing */
} TaskstatsRecord;

/* Decodes one TASKSTATS_CMD_NEW message (nlh->nlmsg_len bytes, already checked to fit). -ENOMSG for
 * another command, -EBADMSG for a message this code does not understand (then it is not used). */
int taskstats_message_parse(struct nlmsghdr *nlh, TaskstatsRecord *ret);
