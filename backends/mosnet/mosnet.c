/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The `mosnet` backend: networking is arranged outside the agent, so there is nothing to create, remove
 * or collect. The dispatcher handles its VMs like any other. */

#include <errno.h>

#include "backends/backend.h"
#include "util/macro.h"

static int mosnet_init(Backend *b, const BackendConfig *cfg) {
        (void) b;
        (void) cfg;
        return 0;
}

static void mosnet_done(Backend *b) {
        (void) b;
}

static int mosnet_plan_core(Backend *b, ResourceSet *ret) {
        (void) b;
        (void) ret;
        return 0;
}

static int mosnet_plan(Backend *b, const VmNetSpec *spec, ResourceSet *ret) {
        (void) b;
        (void) spec;
        (void) ret;
        return 0;
}

static int mosnet_apply(Backend *b, ResourceSet *plan) {
        return plan->n == 0
                       ? 0
                       : error_set(&b->error, -EINVAL, ERROR_INVALID,
                                   "the mosnet backend makes no kernel objects (asked for %zu)", plan->n);
}

static int mosnet_remove(Backend *b, const Resource *r) {
        /* it never owns anything */
        return error_set(&b->error, -EINVAL, ERROR_INVALID, "%s: the mosnet backend owns no kernel objects",
                         r->name);
}

static int mosnet_scan(Backend *b, ResourceSet *ret) {
        (void) b;
        (void) ret;
        return 0;
}

__attribute__((visibility("default"))) const BackendVTable chvm_backend = {
        .abi = CHVM_BACKEND_ABI,
        .name = "mosnet",
        .object_size = sizeof(Backend),
        .init = mosnet_init,
        .done = mosnet_done,
        .plan_core = mosnet_plan_core,
        .plan = mosnet_plan,
        .apply = mosnet_apply,
        .remove = mosnet_remove,
        .scan = mosnet_scan,
};
