/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A fault-injecting NlOps (backends/nl/nlops.h) for the netlink tests: counts the requests (sendmsg
 * calls) that go through it, remembers what each one was, and at request number `at` injects one fault:
 *
 *   EEXIST, EBUSY,         the kernel never sees the request; the answer to its first message is that
 *   EOPNOTSUPP             error (to the other messages of a batch: 0), as if the kernel had refused it
 *   ENOMEM                 the same for a single request; an nf_tables batch gets what the kernel sends
 *                          when it runs out of memory in one: a single ENOMEM answering BATCH_BEGIN
 *   COMMIT_ERROR           nf_tables batches: every message is accepted (0 to each) but the commit fails,
 *                          answered as the kernel does: ENOMEM to BATCH_BEGIN, then the messages' 0s
 *   EINTR                  sendmsg is interrupted before anything is sent, then the next recvmsg too
 *   ENOBUFS                the kernel carries the request out, but every reply to it is dropped and the
 *                          next recvmsg fails with ENOBUFS (a receive-queue overrun)
 *   LOST_ACK               the kernel carries the request out, and its replies vanish without a word
 *                          (poll says nothing came)
 *   POISON                 message `msg_index` of the request (BATCH_BEGIN/END not counted) carries an
 *                          attribute the kernel's policy refuses (an over-long attribute of type 1, the
 *                          table name of every nf_tables message): the kernel itself refuses that message
 *
 * nl_fault_arm() sets the first fault, nl_fault_add() more (at other requests); every other request
 * passes untouched. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/nl/nlops.h"

typedef enum NlFaultKind {
        NL_FAULT_NONE,
        NL_FAULT_EEXIST,
        NL_FAULT_EBUSY,
        NL_FAULT_ENOMEM,
        NL_FAULT_EINTR,
        NL_FAULT_ENOBUFS,
        NL_FAULT_LOST_ACK,
        NL_FAULT_POISON,
        NL_FAULT_COMMIT_ERROR,
        NL_FAULT_EOPNOTSUPP,
        _NL_FAULT_MAX,
} NlFaultKind;

const char *nl_fault_kind_to_string(NlFaultKind k);

#define NL_FAULT_LOG_MAX 512

#define NL_FAULT_MAX 4

typedef struct NlFault {
        NlFaultKind kind; /* the first fault, */
        unsigned at; /* at this 1-based request number (0: never), */
        unsigned msg_index; /* on this message of it (POISON) */
        struct {
                NlFaultKind kind;
                unsigned at;
        } more[NL_FAULT_MAX];
        size_t n_more;
        bool paused; /* requests pass untouched and uncounted (the test's own look at the kernel) */

        unsigned n_requests; /* requests seen so far */
        unsigned n_waits; /* reads that found no reply queued (a real poll, no fault injected) */
        bool fired; /* the (first) fault was injected */
        char log[NL_FAULT_LOG_MAX]
                [64]; /* what each request was ("nft batch NEWTABLE +24", "rtnl RTM_NEWLINK") */

        /* state of an injected fault */
        bool eintr_recv, enobufs_recv, lost;
        uint8_t reply[65536] __attribute__((aligned(8)));
        size_t reply_len;
        NlOps ops;
} NlFault;

/* Resets the counters and arms the fault (kind NL_FAULT_NONE: only counts). Returns &f->ops. */
const NlOps *nl_fault_arm(NlFault *f, NlFaultKind kind, unsigned at, unsigned msg_index);
/* Another fault, at another request (not POISON). */
void nl_fault_add(NlFault *f, NlFaultKind kind, unsigned at);
