/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A backend module built for another ABI: the loader must refuse it. */

#include "backends/backend.h"

__attribute__((visibility("default"))) const BackendVTable chvm_backend = {
        .abi = CHVM_BACKEND_ABI + 1,
        .name = "badabi",
        .object_size = sizeof(Backend),
};
