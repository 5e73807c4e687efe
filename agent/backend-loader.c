/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/backend-loader.h"
#include "util/macro.h"

static void dlclosep(void **dl) {
        if (*dl)
                (void) dlclose(*dl);
}

static bool backend_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > 32 || name[0] < 'a' || name[0] > 'z')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
                      name[i] == '-' || name[i] == '_'))
                        return false;
        return true;
}

int backend_module_path(const char *dir, const char *name, char *buf, size_t size) {
        int n = snprintf(buf, size, "%s/%s.so", dir, name);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

/* Only root may be able to change what the agent executes as root. */
static int check_owner_mode(const struct stat *st, const char *what, const char *path, Error *e) {
        if (st->st_uid != 0) {
                return error_set(e, -EPERM, ERROR_INVALID, "refusing %s %s: owned by uid %u, not root", what,
                                 path, (unsigned) st->st_uid);
        }
        if (st->st_mode & (S_IWGRP | S_IWOTH)) {
                return error_set(e, -EPERM, ERROR_INVALID, "refusing %s %s: writable by %s (mode %04o)",
                                 what, path, st->st_mode & S_IWOTH ? "everyone" : "its group",
                                 (unsigned) (st->st_mode & 07777));
        }
        return 0;
}

int backend_setting_error(const BackendConfig *cfg, const char *name, size_t bad, int code, const char *why,
                          Error *e) {
        const char *source = cfg->settings_source ? cfg->settings_source : "agent.conf";
        if (bad < cfg->n_settings && cfg->settings[bad].line > 0)
                return error_set(e, code, ERROR_INVALID, "%s:%u: [%s] %s", source, cfg->settings[bad].line,
                                 name, why);
        return error_set(e, code, ERROR_INVALID, "%s: [%s] %s", source, name, why);
}

/* The backend's section, through its configure hook. */
static int configure(Backend *b, const BackendConfig *cfg, Error *e) {
        const BackendVTable *vt = b->vtable;
        size_t bad = cfg->n_settings;
        char why[256];

        if (!vt->configure) {
                if (cfg->n_settings == 0)
                        return 0;
                snprintf(why, sizeof(why), "unknown key \"%s\" (the %s backend has no settings)",
                         cfg->settings[0].key, vt->name);
                return backend_setting_error(cfg, vt->name, 0, -EINVAL, why, e);
        }
        int r = vt->configure(b, cfg->settings, cfg->n_settings, &bad);
        return r < 0 ? backend_setting_error(cfg, vt->name, bad, r, error_message(&b->error), e) : r;
}

int backend_failed(const Backend *b, int r, Error *e) {
        if (b->error.code == r && b->error.message[0]) {
                if (e)
                        *e = b->error;
                return r;
        }
        return error_errno(e, r, "%s", strerror(-r));
}

static int load(const char *dir, const char *name, const BackendConfig *cfg, bool init, Backend **ret,
                Error *e) {
        _cleanup_close_ int fd = -EBADF;
        char path[4096];
        struct stat st;
        int r;

        if (!backend_name_valid(name)) {
                return error_set(e, -EINVAL, ERROR_INVALID, "unknown backend \"%s\": not a backend name",
                                 name ? name : "");
        }
        r = backend_module_path(dir, name, path, sizeof(path));
        if (r < 0) {
                return error_errno(e, r, "backend directory %s: path too long", dir);
        }

        if (stat(dir, &st) < 0) {
                r = negative_errno();
                return error_errno(e, r, "backend directory %s: %s", dir, strerror(-r));
        }
        if (!S_ISDIR(st.st_mode)) {
                return error_set(e, -ENOTDIR, ERROR_INVALID, "backend directory %s is not a directory", dir);
        }
        r = check_owner_mode(&st, "backend directory", dir, e);
        if (r < 0)
                return r;

        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ENOENT)
                        return error_errno(e, r, "unknown backend \"%s\": no module %s", name, path);
                return error_errno(e, r, "cannot open backend module %s: %s", path, strerror(-r));
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return error_errno(e, r, "cannot stat backend module %s: %s", path, strerror(-r));
        }
        if (!S_ISREG(st.st_mode)) {
                return error_set(e, -EPERM, ERROR_INVALID, "backend module %s is not a regular file", path);
        }
        r = check_owner_mode(&st, "backend module", path, e);
        if (r < 0)
                return r;

        /* The checks above make the file and its folder changeable by root only, so the path cannot be
         * swapped by anyone else between the check and the load. (Loading through /proc/self/fd/N would
         * be tighter, but glibc then takes a later module at a reused fd number for the earlier one.) */
        _cleanup_(dlclosep) void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
                return error_set(e, -ENOEXEC, ERROR_INVALID, "cannot load backend module %s: %s", path,
                                 dlerror());
        }
        const BackendVTable *vt = dlsym(dl, CHVM_BACKEND_SYMBOL);
        if (!vt) {
                return error_set(e, -EPROTO, ERROR_INVALID, "backend module %s does not export %s", path,
                                 CHVM_BACKEND_SYMBOL);
        }
        if (vt->abi != CHVM_BACKEND_ABI) {
                return error_set(e, -EPROTO, ERROR_INVALID,
                                 "backend module %s has ABI %u, this agent needs ABI %u", path, vt->abi,
                                 CHVM_BACKEND_ABI);
        }
        if (!vt->name || strcmp(vt->name, name) != 0 || vt->object_size < sizeof(Backend) || !vt->init ||
            !vt->done || !vt->plan_core || !vt->plan || !vt->apply || !vt->remove || !vt->scan) {
                return error_set(e, -EINVAL, ERROR_INVALID,
                                 "backend module %s is not the \"%s\" backend or is incomplete", path, name);
        }

        _cleanup_(backend_unloadp) Backend *b = calloc(1, vt->object_size);
        if (!b)
                return error_errno(e, -ENOMEM, "backend %s: %s", name, strerror(ENOMEM));
        b->vtable = vt;
        b->module = TAKE_PTR(dl); /* from here the backend's: backend_unload() closes it */
        snprintf(b->agent_id, sizeof(b->agent_id), "%s", cfg->agent_id ? cfg->agent_id : "");
        r = configure(b, cfg, e);
        if (r >= 0 && init) {
                r = vt->init(b, cfg);
                if (r < 0 && backend_failed(b, r, e) < 0)
                        (void) error_prefix(e, "backend %s", name);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(b);
        return 0;
}

int backend_load(const char *dir, const char *name, const BackendConfig *cfg, Backend **ret, Error *e) {
        return load(dir, name, cfg, true, ret, e);
}

int backend_check(const char *dir, const char *name, const BackendConfig *cfg, Error *e) {
        _cleanup_(backend_unloadp) Backend *b = NULL;
        return load(dir, name, cfg, false, &b, e);
}

Backend *backend_unload(Backend *b) {
        if (!b)
                return NULL;
        void *dl = b->module;
        b->vtable->done(b);
        free(b);
        if (dl)
                dlclose(dl);
        return NULL;
}
