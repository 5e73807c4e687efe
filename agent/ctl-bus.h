/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* chvmctl's D-Bus client: just what one method call on the agent's private socket needs (EXTERNAL
 * authentication, a call with basic types, structs and arrays, its reply or error), so that the command
 * does not load libsystemd and the six libraries it pulls in: 2.0 ms of the 4.3 ms that starting
 * chvmctl took (bench/vmm, `chvmctl --version`), for each of an admin script's calls.
 *
 * The calls mirror sd-bus's: a message is read in the order of its signature, each read checks that the
 * asked types are the next ones, and strings point into the message (valid until it is freed).
 * Everything the agent sends is checked: lengths, alignment padding, NUL-terminated UTF-8 strings,
 * booleans 0 or 1, nesting; a malformed message is -EBADMSG, never a read outside it. */

#include <stddef.h>
#include <stdint.h>

#include "util/macro.h"

typedef struct CtlBus CtlBus;
typedef struct CtlMsg CtlMsg;

#define CTL_BUS_ERROR_ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define CTL_BUS_MAX_MESSAGE (64u << 20) /* what a ListVMs of 20,000 VMs needs, and more */

typedef struct CtlBusError {
        char *name; /* NULL: no error reply (then the call's return value says what went wrong) */
        char *message;
} CtlBusError;

void ctl_bus_error_free(CtlBusError *e);

/* Connects to the unix socket and sends the authentication; its answer is read with the first reply.
 * -errno of socket()/connect(). */
int ctl_bus_connect(const char *path, CtlBus **ret);
CtlBus *ctl_bus_close(CtlBus *b);

int ctl_msg_new_call(const char *path, const char *interface, const char *member, CtlMsg **ret);
CtlMsg *ctl_msg_free(CtlMsg *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(CtlMsg *, ctl_msg_free);

/* types: a signature of basic types (s o t u q b y i) and structs of them; -EINVAL for others. Inside an
 * open array the appended types must be its element type. */
int ctl_msg_append(CtlMsg *m, const char *types, ...);
/* type 'a' only: contents is the element type ("s", "(sqq)"). */
int ctl_msg_open_container(CtlMsg *m, char type, const char *contents);
int ctl_msg_close_container(CtlMsg *m);

/* Sends the call and waits for its reply, skipping signals. 0 and *ret_reply; an error reply: -EREMOTEIO
 * (-EACCES for AccessDenied) with *e set; -ETIMEDOUT, -ECONNRESET, -EACCES (authentication rejected),
 * -EBADMSG, -errno otherwise. */
int ctl_bus_call(CtlBus *b, CtlMsg *m, uint64_t timeout_usec, CtlBusError *e, CtlMsg **ret_reply);

/* 1 read, 0 at the end of the array (or of the message) being read, -ENXIO the next value has another
 * type, -EBADMSG malformed. types as for append; 's', 'o' and 'g' give a const char *. */
int ctl_msg_read(CtlMsg *m, const char *types, ...);
/* 'a' (contents: the element type) or 'r' (contents: the struct's member types). 1, or 0 at the end of
 * the enclosing array. */
int ctl_msg_enter_container(CtlMsg *m, char type, const char *contents);
/* Skips what was not read of the container. */
int ctl_msg_exit_container(CtlMsg *m);
/* An "as" into a NULL-terminated array of copies (free each and the array). */
int ctl_msg_read_strv(CtlMsg *m, char ***ret);

/* A whole message as received (header and body): for the fuzzer and the tests. */
int ctl_msg_parse(const void *data, size_t size, CtlMsg **ret);
/* The wire form of a message built with ctl_msg_new_call() (serial 1), for the tests. */
int ctl_msg_serialize(CtlMsg *m, uint32_t serial, void **ret, size_t *ret_size);
/* The type (1 call, 2 reply, 3 error, 4 signal), its signature, and an error reply's name. */
int ctl_msg_type(const CtlMsg *m);
const char *ctl_msg_signature(const CtlMsg *m);
const char *ctl_msg_error_name(const CtlMsg *m);
