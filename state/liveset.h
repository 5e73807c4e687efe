/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The live set: what the ownership journal says exists right now. Kernel objects that have an INTENT and
 * no ABORTED/RELEASED, VMs with their last journaled state, and guest IP allocations. Rebuilt by replaying
 * the snapshot and the journal; kept current by every append; written out whole by compaction. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/journal-format.h"

typedef enum LiveObjectState {
        LIVE_OBJECT_INTENDED = 1, /* INTENT written; may or may not exist in the kernel */
        LIVE_OBJECT_CREATED, /* CREATED written: it existed */
        LIVE_OBJECT_RELEASING, /* RELEASE_INTENT written; may or may not still exist */
        _LIVE_OBJECT_STATE_MAX,
        _LIVE_OBJECT_STATE_INVALID = -EINVAL,
} LiveObjectState;

const char *live_object_state_to_string(LiveObjectState s);
LiveObjectState live_object_state_from_string(const char *s);

typedef struct LiveObject {
        uint64_t oid;
        uint64_t vm_id; /* 0: shared ("core") object */
        uint32_t kind;
        LiveObjectState state;
        char *name;
        char *tag;
        void *key;
        size_t key_size;
        uint64_t handle;
        uint32_t ifindex;
        uint64_t intent_lsn;
} LiveObject;

typedef struct LiveVm {
        uint64_t vm_id;
        char *name;
        char *backend;
        char *definition; /* the last VM_DEFINE's text of vms/NAME.vm, NULL if it had none */
        JournalVmState state;
        uint32_t pid;
        uint64_t start_time;
        uint8_t boot_id[16];
        bool has_exit_status;
        bool has_exit_signal;
        int32_t exit_status;
        int32_t exit_signal;
        char *reason;
        size_t n_objects; /* live objects and IP allocations that name this VM */
        size_t n_ips;
        uint32_t ip4; /* the address it got last and still holds, 0 if none (see live_set_get_vm_ip()) */
} LiveVm;

typedef struct LiveSet LiveSet;

LiveSet *live_set_new(void);
LiveSet *live_set_free(LiveSet *s);

/* Whether r can be applied: -EEXIST / -ENOENT / -EBUSY / -EINVAL if it contradicts the set (an INTENT
 * for an object id in use, a CREATED for an unknown object, an IP handed out twice, ...). ret_why gets a
 * static description. */
int live_set_check(const LiveSet *s, const JournalRecord *r, const char **ret_why);
/* Checks, then applies. The set is unchanged on failure. */
int live_set_apply(LiveSet *s, const JournalRecord *r, const char **ret_why);

const LiveObject *live_set_get_object(const LiveSet *s, uint64_t oid);
const LiveVm *live_set_get_vm(const LiveSet *s, uint64_t vm_id);
/* The VM an IPv4 address (host byte order) is allocated to, or 0. */
uint64_t live_set_get_ip_owner(const LiveSet *s, uint32_t ip4);
/* An address VM vm_id holds (the one it got last), in O(1); -ENOENT when it holds none. */
int live_set_get_vm_ip(const LiveSet *s, uint64_t vm_id, uint32_t *ret);

size_t live_set_n_objects(const LiveSet *s);
size_t live_set_n_vms(const LiveSet *s);
size_t live_set_n_ips(const LiveSet *s);
uint64_t live_set_max_oid(const LiveSet *s);

/* Iteration in unspecified order; start with *i = 0. */
bool live_set_iterate_objects(const LiveSet *s, size_t *i, const LiveObject **ret);
bool live_set_iterate_vms(const LiveSet *s, size_t *i, const LiveVm **ret);
bool live_set_iterate_ips(const LiveSet *s, size_t *i, uint32_t *ret_ip4, uint64_t *ret_vm_id);

/* Emits records (without LSNs) that rebuild exactly this set when applied to an empty one, in a stable
 * order: VMs, IP allocations, objects, by id. Does not emit the CHECKPOINT. */
typedef int (*LiveSetEmit)(const JournalRecord *r, void *userdata);
int live_set_serialize(const LiveSet *s, LiveSetEmit emit, void *userdata);

bool live_set_equal(const LiveSet *a, const LiveSet *b);
