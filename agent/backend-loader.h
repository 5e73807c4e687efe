/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

#include "backends/backend.h"
#include "util/error.h"

/* Loads backend `name` from `dir`/<name>.so, gives it its section (cfg->settings) and initialises it.
 * Refuses, with *e naming the module and the cause: a name that is not a backend name
 * (-EINVAL), no such module (-ENOENT), a module file or folder that is not root's or that others can write
 * (-EPERM), a module without the chvm_backend symbol or with another ABI (-EPROTO), a vtable that says
 * another name (-EINVAL), a section it refuses (-EINVAL, with "FILE:LINE: [name] cause"). */
int backend_load(const char *dir, const char *name, const BackendConfig *cfg, Backend **ret, Error *e);
/* The same checks and the section, without init() (nothing of the host is touched): --check-config. */
int backend_check(const char *dir, const char *name, const BackendConfig *cfg, Error *e);
Backend *backend_unload(Backend *b);
/* A hook of b failed with r: *e becomes the backend's own Backend.error (code, kind, message) when it set
 * it for this failure, else strerror(r) with the errno's kind. Returns r. */
int backend_failed(const Backend *b, int r, Error *e);
static inline void backend_unloadp(Backend **b) {
        if (*b)
                *b = backend_unload(*b);
}

/* How a refused setting is reported: "FILE:LINE: [name] why", or "FILE: [name] why" when bad is not the
 * index of a setting from a file; kind ERROR_INVALID, returns code. */
int backend_setting_error(const BackendConfig *cfg, const char *name, size_t bad, int code, const char *why,
                          Error *e);

/* The module file a name would load, for messages. */
int backend_module_path(const char *dir, const char *name, char *buf, size_t size);
