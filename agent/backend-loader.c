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
static int check_owner_mode(const struct stat *st, const char *what, const char *path, char *err,
                            size_t err_size) {
        if (st->st_uid != 0) {
                snprintf(err, err_size, "refusing %s %s: owned by uid %u, not root", what, path,
                         (unsigned) st->st_uid);
                return -EPERM;
        }
        if (st->st_mode & (S_IWGRP | S_IWOTH)) {
                snprintf(err, err_size, "refusing %s %s: writable by %s (mode %04o)", what, path,
                         st->st_mode & S_IWOTH ? "everyone" : "its group", (unsigned) (st->st_mode & 07777));
                return -EPERM;
        }
        return 0;
}

void backend_setting_error(const BackendConfig *cfg, const char *name, size_t bad, const char *why,
                           char *err, size_t err_size) {
        const char *source = cfg->settings_source ? cfg->settings_source : "agent.conf";
        if (bad < cfg->n_settings && cfg->settings[bad].line > 0)
                snprintf(err, err_size, "%s:%u: [%s] %s", source, cfg->settings[bad].line, name, why);
        else
                snprintf(err, err_size, "%s: [%s] %s", source, name, why);
}

/* The backend's section, through its configure hook. */
static int configure(Backend *b, const BackendConfig *cfg, char *err, size_t err_size) {
        const BackendVTable *vt = b->vtable;
        size_t bad = cfg->n_settings;
        char why[256];

        if (!vt->configure) {
                if (cfg->n_settings == 0)
                        return 0;
                snprintf(why, sizeof(why), "unknown key \"%s\" (the %s backend has no settings)",
                         cfg->settings[0].key, vt->name);
                backend_setting_error(cfg, vt->name, 0, why, err, err_size);
                return -EINVAL;
        }
        int r = vt->configure(b, cfg->settings, cfg->n_settings, &bad);
        if (r < 0)
                backend_setting_error(cfg, vt->name, bad, vt->error_message(b), err, err_size);
        return r;
}

static int load(const char *dir, const char *name, const BackendConfig *cfg, bool init, Backend **ret,
                char *err, size_t err_size) {
        _cleanup_close_ int fd = -EBADF;
        char path[4096];
        struct stat st;
        int r;

        if (!backend_name_valid(name)) {
                snprintf(err, err_size, "unknown backend \"%s\": not a backend name", name ? name : "");
                return -EINVAL;
        }
        r = backend_module_path(dir, name, path, sizeof(path));
        if (r < 0) {
                snprintf(err, err_size, "backend directory %s: path too long", dir);
                return r;
        }

        if (stat(dir, &st) < 0) {
                r = negative_errno();
                snprintf(err, err_size, "backend directory %s: %s", dir, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                snprintf(err, err_size, "backend directory %s is not a directory", dir);
                return -ENOTDIR;
        }
        r = check_owner_mode(&st, "backend directory", dir, err, err_size);
        if (r < 0)
                return r;

        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ENOENT)
                        snprintf(err, err_size, "unknown backend \"%s\": no module %s", name, path);
                else
                        snprintf(err, err_size, "cannot open backend module %s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                snprintf(err, err_size, "cannot stat backend module %s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(err, err_size, "backend module %s is not a regular file", path);
                return -EPERM;
        }
        r = check_owner_mode(&st, "backend module", path, err, err_size);
        if (r < 0)
                return r;

        /* The checks above make the file and its folder changeable by root only, so the path cannot be
         * swapped by anyone else between the check and the load. (Loading through /proc/self/fd/N would
         * be tighter, but glibc then takes a later module at a reused fd number for the earlier one.) */
        _cleanup_(dlclosep) void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
                snprintf(err, err_size, "cannot load backend module %s: %s", path, dlerror());
                return -ENOEXEC;
        }
        const BackendVTable *vt = dlsym(dl, CHVM_BACKEND_SYMBOL);
        if (!vt) {
                snprintf(err, err_size, "backend module %s does not export %s", path, CHVM_BACKEND_SYMBOL);
                return -EPROTO;
        }
        if (vt->abi != CHVM_BACKEND_ABI) {
                snprintf(err, err_size, "backend module %s has ABI %u, this agent needs ABI %u", path,
                         vt->abi, CHVM_BACKEND_ABI);
                return -EPROTO;
        }
        if (!vt->name || strcmp(vt->name, name) != 0 || vt->object_size < sizeof(Backend) || !vt->init ||
            !vt->done || !vt->plan_core || !vt->plan || !vt->apply || !vt->remove || !vt->scan ||
            !vt->error_message) {
                snprintf(err, err_size, "backend module %s is not the \"%s\" backend or is incomplete", path,
                         name);
                return -EINVAL;
        }

        _cleanup_(backend_unloadp) Backend *b = calloc(1, vt->object_size);
        if (!b)
                return -ENOMEM;
        b->vtable = vt;
        b->module = TAKE_PTR(dl); /* from here the backend's: backend_unload() closes it */
        snprintf(b->agent_id, sizeof(b->agent_id), "%s", cfg->agent_id ? cfg->agent_id : "");
        r = configure(b, cfg, err, err_size);
        if (r >= 0 && init) {
                r = vt->init(b, cfg);
                if (r < 0)
                        snprintf(err, err_size, "backend %s: %s", name, vt->error_message(b));
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(b);
        return 0;
}

int backend_load(const char *dir, const char *name, const BackendConfig *cfg, Backend **ret, char *err,
                 size_t err_size) {
        return load(dir, name, cfg, true, ret, err, err_size);
}

int backend_check(const char *dir, const char *name, const BackendConfig *cfg, char *err, size_t err_size) {
        _cleanup_(backend_unloadp) Backend *b = NULL;
        return load(dir, name, cfg, false, &b, err, err_size);
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
