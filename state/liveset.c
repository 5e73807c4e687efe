/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state/liveset.h"
#include "util/hashmap.h"
#include "util/macro.h"
#include "util/string-table.h"

static_assert(sizeof(void *) >= sizeof(uint64_t), "VM ids are stored as map values");

struct LiveSet {
        U64Map *objects; /* oid -> LiveObject */
        U64Map *vms; /* vm id -> LiveVm */
        U64Map *ips; /* ip4 -> vm id */
        uint64_t max_oid;
};

static const char *const object_state_table[_LIVE_OBJECT_STATE_MAX] = {
        [LIVE_OBJECT_INTENDED] = "intended",
        [LIVE_OBJECT_CREATED] = "created",
        [LIVE_OBJECT_RELEASING] = "releasing",
};

DEFINE_STRING_TABLE(live_object_state, LiveObjectState, object_state_table, _LIVE_OBJECT_STATE_MAX)

static LiveObject *live_object_free(LiveObject *o) {
        if (!o)
                return NULL;
        free(o->name);
        free(o->tag);
        free(o->key);
        free(o);
        return NULL;
}

static LiveVm *live_vm_free(LiveVm *v) {
        if (!v)
                return NULL;
        free(v->name);
        free(v->backend);
        free(v->reason);
        free(v->definition);
        free(v);
        return NULL;
}

LiveSet *live_set_new(void) {
        LiveSet *s = calloc(1, sizeof(LiveSet));
        if (!s)
                return NULL;
        s->objects = u64map_new();
        s->vms = u64map_new();
        s->ips = u64map_new();
        if (!s->objects || !s->vms || !s->ips)
                return live_set_free(s);
        return s;
}

LiveSet *live_set_free(LiveSet *s) {
        void *v;
        size_t i;

        if (!s)
                return NULL;
        if (s->objects)
                for (i = 0; u64map_iterate(s->objects, &i, NULL, &v);)
                        live_object_free(v);
        if (s->vms)
                for (i = 0; u64map_iterate(s->vms, &i, NULL, &v);)
                        live_vm_free(v);
        u64map_free(s->objects);
        u64map_free(s->vms);
        u64map_free(s->ips);
        free(s);
        return NULL;
}

static int fail(const char **ret_why, const char *why, int r) {
        if (ret_why)
                *ret_why = why;
        return r;
}

int live_set_check(const LiveSet *s, const JournalRecord *r, const char **ret_why) {
        const LiveObject *o = NULL;
        const LiveVm *vm = NULL;
        int k;

        k = journal_record_validate(r, ret_why);
        if (k < 0)
                return k;

        if (journal_record_has(r, JOURNAL_FIELD_OID))
                o = u64map_get(s->objects, r->oid);
        if (journal_record_has(r, JOURNAL_FIELD_VM_ID) && r->vm_id != 0)
                vm = u64map_get(s->vms, r->vm_id);

        switch (r->type) {
        case JOURNAL_VM_DEFINE:
                return 0;
        case JOURNAL_VM_UNDEFINE:
                if (!vm)
                        return fail(ret_why, "VM_UNDEFINE for an unknown VM", -ENOENT);
                if (vm->state == JOURNAL_VM_RUNNING)
                        return fail(ret_why, "VM_UNDEFINE for a running VM", -EBUSY);
                if (vm->n_objects > 0 || vm->n_ips > 0)
                        return fail(ret_why, "VM_UNDEFINE for a VM that still owns objects or addresses",
                                    -EBUSY);
                return 0;
        case JOURNAL_VM_STARTED:
        case JOURNAL_VM_EXITED:
                if (!vm)
                        return fail(ret_why, "VM state change for an unknown VM", -ENOENT);
                return 0;
        case JOURNAL_INTENT:
                if (o)
                        return fail(ret_why, "INTENT for an object id already in use", -EEXIST);
                if (r->vm_id != 0 && !vm)
                        return fail(ret_why, "INTENT for an unknown VM", -ENOENT);
                return 0;
        case JOURNAL_CREATED:
        case JOURNAL_ABORTED:
                if (!o)
                        return fail(ret_why, "CREATED/ABORTED for an unknown object", -ENOENT);
                if (o->state != LIVE_OBJECT_INTENDED)
                        return fail(ret_why, "CREATED/ABORTED for an object without a pending INTENT",
                                    -EINVAL);
                return 0;
        case JOURNAL_RELEASE_INTENT:
                if (!o)
                        return fail(ret_why, "RELEASE_INTENT for an unknown object", -ENOENT);
                return 0;
        case JOURNAL_RELEASED:
                if (!o)
                        return fail(ret_why, "RELEASED for an unknown object", -ENOENT);
                if (o->state != LIVE_OBJECT_RELEASING)
                        return fail(ret_why, "RELEASED without a RELEASE_INTENT", -EINVAL);
                return 0;
        case JOURNAL_IP_ALLOC:
                if (!vm)
                        return fail(ret_why, "IP_ALLOC for an unknown VM", -ENOENT);
                if (r->ip4 == 0)
                        return fail(ret_why, "IP_ALLOC of 0.0.0.0", -EINVAL);
                if (u64map_get(s->ips, r->ip4))
                        return fail(ret_why, "IP_ALLOC of an address already allocated", -EEXIST);
                return 0;
        case JOURNAL_IP_FREE:
                if (r->ip4 == 0 || !u64map_get(s->ips, r->ip4))
                        return fail(ret_why, "IP_FREE of an address not allocated", -ENOENT);
                return 0;
        case JOURNAL_CHECKPOINT:
                return 0;
        default:
                return fail(ret_why, "unknown record type", -EINVAL);
        }
}

static int strdup_opt(const char *in, char **ret) {
        if (!in) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(in);
        return *ret ? 0 : -ENOMEM;
}

static int apply_vm_define(LiveSet *s, const JournalRecord *r) {
        _cleanup_free_ char *name = NULL, *backend = NULL, *definition = NULL;
        LiveVm *vm;
        int k;

        if (strdup_opt(r->vm_name, &name) < 0 || strdup_opt(r->backend, &backend) < 0)
                return -ENOMEM;
        /* A record without one (an older agent's) leaves none: the text it had may be stale. */
        if (journal_record_has(r, JOURNAL_FIELD_DEFINITION) && strdup_opt(r->definition, &definition) < 0)
                return -ENOMEM;

        vm = u64map_get(s->vms, r->vm_id);
        if (!vm) {
                vm = calloc(1, sizeof(LiveVm));
                if (!vm)
                        return -ENOMEM;
                vm->vm_id = r->vm_id;
                vm->state = JOURNAL_VM_DEFINED;
                k = u64map_put(s->vms, r->vm_id, vm);
                if (k < 0) {
                        free(vm);
                        return k;
                }
        }
        free(vm->name);
        free(vm->backend);
        free(vm->definition);
        vm->name = TAKE_PTR(name);
        vm->backend = TAKE_PTR(backend);
        vm->definition = TAKE_PTR(definition);
        return 0;
}

static int apply_vm_exited(LiveVm *vm, const JournalRecord *r) {
        _cleanup_free_ char *reason = NULL;

        if (strdup_opt(r->reason, &reason) < 0)
                return -ENOMEM;
        vm->state = (JournalVmState) r->vm_state;
        vm->has_exit_status = journal_record_has(r, JOURNAL_FIELD_EXIT_STATUS);
        vm->has_exit_signal = journal_record_has(r, JOURNAL_FIELD_EXIT_SIGNAL);
        vm->exit_status = vm->has_exit_status ? r->exit_status : 0;
        vm->exit_signal = vm->has_exit_signal ? r->exit_signal : 0;
        free(vm->reason);
        vm->reason = TAKE_PTR(reason);
        return 0;
}

static int apply_intent(LiveSet *s, const JournalRecord *r) {
        LiveObject *o = calloc(1, sizeof(LiveObject));
        int k;

        if (!o)
                return -ENOMEM;
        o->oid = r->oid;
        o->vm_id = r->vm_id;
        o->kind = r->obj_kind;
        o->state = LIVE_OBJECT_INTENDED;
        o->handle = journal_record_has(r, JOURNAL_FIELD_OBJ_HANDLE) ? r->obj_handle : 0;
        o->ifindex = journal_record_has(r, JOURNAL_FIELD_OBJ_IFINDEX) ? r->obj_ifindex : 0;
        o->intent_lsn = r->lsn;
        if (strdup_opt(r->obj_name, &o->name) < 0 || strdup_opt(r->obj_tag, &o->tag) < 0)
                goto oom;
        if (journal_record_has(r, JOURNAL_FIELD_OBJ_KEY) && r->obj_key_size > 0) {
                o->key = malloc(r->obj_key_size);
                if (!o->key)
                        goto oom;
                memcpy(o->key, r->obj_key, r->obj_key_size);
                o->key_size = r->obj_key_size;
        }
        k = u64map_put(s->objects, r->oid, o);
        if (k < 0) {
                live_object_free(o);
                return k;
        }
        if (r->oid > s->max_oid)
                s->max_oid = r->oid;
        if (r->vm_id != 0)
                ((LiveVm *) u64map_get(s->vms, r->vm_id))->n_objects++;
        return 0;
oom:
        live_object_free(o);
        return -ENOMEM;
}

int live_set_apply(LiveSet *s, const JournalRecord *r, const char **ret_why) {
        LiveObject *o;
        LiveVm *vm;
        int k;

        k = live_set_check(s, r, ret_why);
        if (k < 0)
                return k;

        switch (r->type) {
        case JOURNAL_VM_DEFINE:
                return apply_vm_define(s, r);
        case JOURNAL_VM_UNDEFINE:
                live_vm_free(u64map_remove(s->vms, r->vm_id));
                return 0;
        case JOURNAL_VM_STARTED:
                vm = u64map_get(s->vms, r->vm_id);
                vm->state = JOURNAL_VM_RUNNING;
                vm->pid = r->pid;
                vm->start_time = r->start_time;
                memcpy(vm->boot_id, r->boot_id, sizeof(vm->boot_id));
                return 0;
        case JOURNAL_VM_EXITED:
                return apply_vm_exited(u64map_get(s->vms, r->vm_id), r);
        case JOURNAL_INTENT:
                return apply_intent(s, r);
        case JOURNAL_CREATED:
                o = u64map_get(s->objects, r->oid);
                o->state = LIVE_OBJECT_CREATED;
                if (journal_record_has(r, JOURNAL_FIELD_OBJ_HANDLE))
                        o->handle = r->obj_handle;
                if (journal_record_has(r, JOURNAL_FIELD_OBJ_IFINDEX))
                        o->ifindex = r->obj_ifindex;
                return 0;
        case JOURNAL_RELEASE_INTENT:
                o = u64map_get(s->objects, r->oid);
                o->state = LIVE_OBJECT_RELEASING;
                return 0;
        case JOURNAL_ABORTED:
        case JOURNAL_RELEASED:
                o = u64map_remove(s->objects, r->oid);
                if (o->vm_id != 0)
                        ((LiveVm *) u64map_get(s->vms, o->vm_id))->n_objects--;
                live_object_free(o);
                return 0;
        case JOURNAL_IP_ALLOC:
                k = u64map_put(s->ips, r->ip4, (void *) (uintptr_t) r->vm_id);
                if (k < 0)
                        return k;
                vm = u64map_get(s->vms, r->vm_id);
                vm->n_ips++;
                vm->ip4 = r->ip4;
                return 0;
        case JOURNAL_IP_FREE:
                vm = u64map_get(s->vms, (uint64_t) (uintptr_t) u64map_remove(s->ips, r->ip4));
                if (vm) {
                        vm->n_ips--;
                        if (vm->ip4 == r->ip4)
                                vm->ip4 = 0;
                }
                return 0;
        case JOURNAL_CHECKPOINT:
                if (r->max_oid > s->max_oid)
                        s->max_oid = r->max_oid;
                return 0;
        default:
                return -EINVAL;
        }
}

const LiveObject *live_set_get_object(const LiveSet *s, uint64_t oid) {
        return oid ? u64map_get(s->objects, oid) : NULL;
}

const LiveVm *live_set_get_vm(const LiveSet *s, uint64_t vm_id) {
        return vm_id ? u64map_get(s->vms, vm_id) : NULL;
}

int live_set_get_vm_ip(const LiveSet *s, uint64_t vm_id, uint32_t *ret) {
        const LiveVm *vm = u64map_get(s->vms, vm_id);
        if (!vm || vm->n_ips == 0)
                return -ENOENT;
        if (vm->ip4) {
                *ret = vm->ip4;
                return 0;
        }
        /* it held several and gave back the last one it got: look the others up */
        uint32_t ip4;
        uint64_t owner;
        for (size_t i = 0; live_set_iterate_ips(s, &i, &ip4, &owner);)
                if (owner == vm_id) {
                        *ret = ip4;
                        return 0;
                }
        return -ENOENT;
}

uint64_t live_set_get_ip_owner(const LiveSet *s, uint32_t ip4) {
        return ip4 ? (uint64_t) (uintptr_t) u64map_get(s->ips, ip4) : 0;
}

size_t live_set_n_objects(const LiveSet *s) {
        return u64map_size(s->objects);
}

size_t live_set_n_vms(const LiveSet *s) {
        return u64map_size(s->vms);
}

size_t live_set_n_ips(const LiveSet *s) {
        return u64map_size(s->ips);
}

uint64_t live_set_max_oid(const LiveSet *s) {
        return s->max_oid;
}

bool live_set_iterate_objects(const LiveSet *s, size_t *i, const LiveObject **ret) {
        void *v;
        if (!u64map_iterate(s->objects, i, NULL, &v))
                return false;
        *ret = v;
        return true;
}

bool live_set_iterate_vms(const LiveSet *s, size_t *i, const LiveVm **ret) {
        void *v;
        if (!u64map_iterate(s->vms, i, NULL, &v))
                return false;
        *ret = v;
        return true;
}

bool live_set_iterate_ips(const LiveSet *s, size_t *i, uint32_t *ret_ip4, uint64_t *ret_vm_id) {
        uint64_t key;
        void *v;
        if (!u64map_iterate(s->ips, i, &key, &v))
                return false;
        *ret_ip4 = (uint32_t) key;
        *ret_vm_id = (uint64_t) (uintptr_t) v;
        return true;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static int sorted_keys(const U64Map *m, uint64_t **ret, size_t *ret_n) {
        size_t n = u64map_size(m), k = 0;
        uint64_t *keys = malloc((n ? n : 1) * sizeof(uint64_t));
        uint64_t key;

        if (!keys)
                return -ENOMEM;
        for (size_t i = 0; u64map_iterate(m, &i, &key, NULL);)
                keys[k++] = key;
        qsort(keys, k, sizeof(uint64_t), cmp_u64);
        *ret = keys;
        *ret_n = k;
        return 0;
}

static int serialize_vm(const LiveVm *vm, LiveSetEmit emit, void *userdata) {
        JournalRecord r = {
                .type = JOURNAL_VM_DEFINE,
                .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) | JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_NAME) |
                          JOURNAL_FIELD_BIT(JOURNAL_FIELD_BACKEND),
                .vm_id = vm->vm_id,
                .vm_name = vm->name,
                .backend = vm->backend,
                .definition = vm->definition,
        };
        int k;

        if (vm->definition)
                r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_DEFINITION);
        k = emit(&r, userdata);
        if (k < 0)
                return k;

        if (vm->state == JOURNAL_VM_RUNNING) {
                r = (JournalRecord){
                        .type = JOURNAL_VM_STARTED,
                        .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_PID) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_START_TIME) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_BOOT_ID),
                        .vm_id = vm->vm_id,
                        .pid = vm->pid,
                        .start_time = vm->start_time,
                };
                memcpy(r.boot_id, vm->boot_id, sizeof(r.boot_id));
                return emit(&r, userdata);
        }
        if (vm->state == JOURNAL_VM_STOPPED || vm->state == JOURNAL_VM_CRASHED) {
                r = (JournalRecord){
                        .type = JOURNAL_VM_EXITED,
                        .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_STATE),
                        .vm_id = vm->vm_id,
                        .vm_state = vm->state,
                        .exit_status = vm->exit_status,
                        .exit_signal = vm->exit_signal,
                        .reason = vm->reason,
                };
                if (vm->has_exit_status)
                        r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_EXIT_STATUS);
                if (vm->has_exit_signal)
                        r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_EXIT_SIGNAL);
                if (vm->reason)
                        r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_REASON);
                return emit(&r, userdata);
        }
        return 0;
}

static int serialize_object(const LiveObject *o, LiveSetEmit emit, void *userdata) {
        JournalRecord r = {
                .type = JOURNAL_INTENT,
                .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_OID) | JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                          JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_KIND) |
                          JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_NAME) |
                          JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_TAG),
                .oid = o->oid,
                .vm_id = o->vm_id,
                .obj_kind = o->kind,
                .obj_name = o->name,
                .obj_tag = o->tag,
                .obj_key = o->key,
                .obj_key_size = o->key_size,
                .obj_handle = o->handle,
                .obj_ifindex = o->ifindex,
        };
        int k;

        if (o->key_size > 0)
                r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_KEY);
        if (o->handle != 0)
                r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_HANDLE);
        if (o->ifindex != 0)
                r.fields |= JOURNAL_FIELD_BIT(JOURNAL_FIELD_OBJ_IFINDEX);
        k = emit(&r, userdata);
        if (k < 0)
                return k;

        if (o->state == LIVE_OBJECT_INTENDED)
                return 0;
        r = (JournalRecord){
                .type = o->state == LIVE_OBJECT_CREATED ? JOURNAL_CREATED : JOURNAL_RELEASE_INTENT,
                .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_OID),
                .oid = o->oid,
        };
        return emit(&r, userdata);
}

int live_set_serialize(const LiveSet *s, LiveSetEmit emit, void *userdata) {
        _cleanup_free_ uint64_t *vms = NULL, *ips = NULL, *objects = NULL;
        size_t n_vms, n_ips, n_objects;
        int k;

        if (sorted_keys(s->vms, &vms, &n_vms) < 0 || sorted_keys(s->ips, &ips, &n_ips) < 0 ||
            sorted_keys(s->objects, &objects, &n_objects) < 0)
                return -ENOMEM;

        for (size_t i = 0; i < n_vms; i++) {
                k = serialize_vm(u64map_get(s->vms, vms[i]), emit, userdata);
                if (k < 0)
                        return k;
        }
        for (size_t i = 0; i < n_ips; i++) {
                JournalRecord r = {
                        .type = JOURNAL_IP_ALLOC,
                        .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_IP4),
                        .vm_id = (uint64_t) (uintptr_t) u64map_get(s->ips, ips[i]),
                        .ip4 = (uint32_t) ips[i],
                };
                k = emit(&r, userdata);
                if (k < 0)
                        return k;
        }
        for (size_t i = 0; i < n_objects; i++) {
                k = serialize_object(u64map_get(s->objects, objects[i]), emit, userdata);
                if (k < 0)
                        return k;
        }
        return 0;
}

static bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static bool object_equal(const LiveObject *a, const LiveObject *b) {
        /* intent_lsn is where the record happens to sit, not what the set says. */
        return a->oid == b->oid && a->vm_id == b->vm_id && a->kind == b->kind && a->state == b->state &&
               streq_ptr(a->name, b->name) && streq_ptr(a->tag, b->tag) && a->key_size == b->key_size &&
               (a->key_size == 0 || memcmp(a->key, b->key, a->key_size) == 0) && a->handle == b->handle &&
               a->ifindex == b->ifindex;
}

static bool vm_equal(const LiveVm *a, const LiveVm *b) {
        if (a->vm_id != b->vm_id || a->state != b->state || !streq_ptr(a->name, b->name) ||
            !streq_ptr(a->backend, b->backend) || !streq_ptr(a->definition, b->definition))
                return false;
        if (a->state == JOURNAL_VM_RUNNING)
                return a->pid == b->pid && a->start_time == b->start_time &&
                       memcmp(a->boot_id, b->boot_id, sizeof(a->boot_id)) == 0;
        if (a->state == JOURNAL_VM_STOPPED || a->state == JOURNAL_VM_CRASHED)
                return a->has_exit_status == b->has_exit_status &&
                       a->has_exit_signal == b->has_exit_signal && a->exit_status == b->exit_status &&
                       a->exit_signal == b->exit_signal && streq_ptr(a->reason, b->reason);
        return true;
}

bool live_set_equal(const LiveSet *a, const LiveSet *b) {
        uint64_t key;
        void *v;

        if (a->max_oid != b->max_oid || u64map_size(a->objects) != u64map_size(b->objects) ||
            u64map_size(a->vms) != u64map_size(b->vms) || u64map_size(a->ips) != u64map_size(b->ips))
                return false;

        for (size_t i = 0; u64map_iterate(a->objects, &i, &key, &v);) {
                const LiveObject *o = u64map_get(b->objects, key);
                if (!o || !object_equal(v, o))
                        return false;
        }
        for (size_t i = 0; u64map_iterate(a->vms, &i, &key, &v);) {
                const LiveVm *vm = u64map_get(b->vms, key);
                if (!vm || !vm_equal(v, vm))
                        return false;
        }
        for (size_t i = 0; u64map_iterate(a->ips, &i, &key, &v);)
                if (u64map_get(b->ips, key) != v)
                        return false;
        return true;
}
