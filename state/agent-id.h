/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The agent id: a random UUID made on the first start and kept in state_dir/agent-id, so that two agents
 * on one host (or one agent before and after its journal was lost) never take each other's objects. Every
 * ownership tag and the journal header carry it. */

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/fsops.h"

#define AGENT_ID_FILE "agent-id"
#define AGENT_ID_STRING_SIZE 37 /* 36 characters and the NUL */

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", lowercase hex. */
void agent_id_to_string(const uint8_t id[16], char ret[AGENT_ID_STRING_SIZE]);
int agent_id_from_string(const char *s, uint8_t ret[16]);

/* Reads state_dir's agent-id; when there is none, makes a random version-4 UUID and writes it (tmp,
 * fdatasync, rename, directory fsync). A file that is there but does not hold exactly one UUID line is
 * refused (-EBADMSG): a new id would disown everything the agent made, so the admin decides. *e names the
 * file and the cause. */
int agent_id_load_or_create(int dir_fd, const char *dir_name, const FsOps *ops, uint8_t ret[16], Error *e);
