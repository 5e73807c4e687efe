/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

#include "backends/backend.h"

/* Loads backend `name` from `dir`/<name>.so and initialises it. Refuses, with a message in err that names
 * the module and the cause: a name that is not a backend name (-EINVAL), no such module (-ENOENT), a
 * module file or folder that is not root's or that others can write (-EPERM), a module without the
 * chvm_backend symbol or with another ABI (-EPROTO), a vtable that says another name (-EINVAL). */
int backend_load(const char *dir, const char *name, const BackendConfig *cfg, Backend **ret, char *err,
                 size_t err_size);
Backend *backend_unload(Backend *b);

/* The module file a name would load, for messages. */
int backend_module_path(const char *dir, const char *name, char *buf, size_t size);
