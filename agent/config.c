/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/config.h"
#include "backends/backend.h"
#include "util/confparse.h"
#include "util/macro.h"

void config_defaults(AgentConfig *c, const char *backend_dir) {
        *c = (AgentConfig){
                .state_dir = "/var/lib/chvm",
                .runtime_dir = "/run/chvm",
                .socket = "",
                .control_group = "chvm",
                .journal_compact_size = UINT64_C(8) << 20,
                .connections_per_uid = 64,
                .idle_timeout = 60,
                .hypervisor = "cloud-hypervisor",
                .stop_timeout = 10,
                .start_timeout = 30,
                .accel = "auto",
        };
        snprintf(c->backend_dir, sizeof(c->backend_dir), "%s", backend_dir ? backend_dir : "");
        /* the build's list (configure --with-default-backends), the first the default backend */
        char list[] = CHVM_DEFAULT_BACKENDS, *save = NULL;
        for (char *t = strtok_r(list, " \t,", &save); t && c->n_backends < CONFIG_MAX_BACKENDS;
             t = strtok_r(NULL, " \t,", &save))
                snprintf(c->backends[c->n_backends++], sizeof(c->backends[0]), "%.32s", t);
        snprintf(c->default_backend, sizeof(c->default_backend), "%s", c->n_backends ? c->backends[0] : "");
}

typedef struct Parse {
        AgentConfig c;
        char seen[96][72]; /* "section.key" given so far */
        unsigned n_seen;
        unsigned line; /* of the line inih hands over (counted by read_line()) */
        char why[256]; /* the first error */
} Parse;

_printf_(2, 3) static int bad(Parse *p, const char *fmt, ...) {
        if (!p->why[0]) {
                va_list ap;
                va_start(ap, fmt);
                (void) vsnprintf(p->why, sizeof(p->why), fmt, ap);
                va_end(ap);
        }
        return 0; /* inih: error on this line */
}

/* 1 if ok, else records the error: what inih wants from the handler. */
_printf_(3, 4) static int check(Parse *p, bool ok, const char *fmt, ...) {
        if (ok)
                return 1;
        if (!p->why[0]) {
                va_list ap;
                va_start(ap, fmt);
                (void) vsnprintf(p->why, sizeof(p->why), fmt, ap);
                va_end(ap);
        }
        return 0;
}

static bool put_path(char *dst, size_t size, const char *value) {
        return value[0] == '/' && conf_put_str(dst, size, value);
}

static int parse_image_dirs(Parse *p, const char *value) {
        AgentConfig *c = &p->c;
        char buf[2048], *save = NULL;
        unsigned n = 0;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "image_dirs: too long");
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
                if (n == CONFIG_MAX_IMAGE_DIRS)
                        return bad(p, "image_dirs: at most %d folders", CONFIG_MAX_IMAGE_DIRS);
                /* kept as given; the agent resolves them when it checks a path */
                if (!put_path(c->image_dirs[n], sizeof(c->image_dirs[n]), t))
                        return bad(p, "image_dirs: \"%s\" is not an absolute path of at most %zu bytes", t,
                                   sizeof(c->image_dirs[n]) - 1);
                size_t len = strlen(c->image_dirs[n]);
                while (len > 1 && c->image_dirs[n][len - 1] == '/')
                        c->image_dirs[n][--len] = '\0';
                n++;
        }
        c->n_image_dirs = n;
        return 1;
}

/* [vmm] environment (NAME=VALUE ...) and pass_environment (NAME or PREFIX* ...). */
static int parse_env_list(Parse *p, const char *key, const char *value, bool assignments) {
        AgentConfig *c = &p->c;
        char buf[4096], *save = NULL;
        unsigned n = 0;
        if (strlen(value) >= sizeof(buf))
                return bad(p, "%s: too long", key);
        memcpy(buf, value, strlen(value) + 1);
        for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
                size_t len = assignments ? strcspn(t, "=") : strlen(t);
                bool star = !assignments && len > 1 && t[len - 1] == '*';
                bool ok = len > 0 && !(t[0] >= '0' && t[0] <= '9') && (!assignments || t[len] == '=');
                for (size_t i = 0; ok && i < len - star; i++)
                        ok = (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
                             (t[i] >= '0' && t[i] <= '9') || t[i] == '_';
                if (!ok)
                        return bad(p,
                                   assignments
                                           ? "%s: \"%s\" is not NAME=VALUE (NAME of letters, digits and _)"
                                           : "%s: \"%s\" is not a variable name (or a prefix with *)",
                                   key, t);
                if (assignments && strncmp(t, "PATH=", 5) == 0)
                        return bad(p, "%s: PATH is the agent's (%s)", key, "/usr/local/sbin:...:/bin");
                if (n == CONFIG_MAX_ENV)
                        return bad(p, "%s: at most %d", key, CONFIG_MAX_ENV);
                char *dst = assignments ? c->vmm_environment[n] : c->vmm_pass_environment[n];
                size_t size =
                        assignments ? sizeof(c->vmm_environment[n]) : sizeof(c->vmm_pass_environment[n]);
                if (!conf_put_str(dst, size, t))
                        return bad(p, "%s: \"%s\" is longer than %zu bytes", key, t, size - 1);
                n++;
        }
        if (assignments)
                c->n_vmm_environment = n;
        else
                c->n_vmm_pass_environment = n;
        return 1;
}

/* A line of another section: the backend's of that name, parsed when it is loaded. Whether the section
 * names a loaded backend is checked at the end, once [agent] backends is known. */
static int keep(Parse *p, const char *section, const char *name, const char *value) {
        AgentConfig *c = &p->c;
        if (c->n_settings == CONFIG_MAX_SETTINGS)
                return bad(p, "at most %d lines in the backends' sections", CONFIG_MAX_SETTINGS);
        ConfigSetting *s = &c->settings[c->n_settings];
        if (!conf_simple_name(section, 32, false))
                return bad(p, "unknown section [%s]", section);
        if (!conf_simple_name(name, 32, false))
                return bad(p, "unknown key \"%s\" in [%s]", name, section);
        snprintf(s->section, sizeof(s->section), "%s", section);
        snprintf(s->key, sizeof(s->key), "%s", name);
        snprintf(s->value, sizeof(s->value), "%s", value);
        s->line = p->line;
        c->n_settings++;
        return 1;
}

/* [vmm] stop_timeout, start_timeout: whole seconds from 1 to max. */
static int parse_seconds(Parse *p, const char *name, const char *value, unsigned max, unsigned *ret) {
        unsigned long v;
        if (!conf_uint(value, 1, max, &v))
                return bad(p, "%s \"%s\": expected whole seconds from 1 to %u", name, value, max);
        *ret = (unsigned) v;
        return 1;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        Parse *p = user;
        AgentConfig *c = &p->c;
        char key[72];

        if (!name)
                return 1;
        snprintf(key, sizeof(key), "%s.%s", section, name);
        for (unsigned i = 0; i < p->n_seen; i++)
                if (strcmp(p->seen[i], key) == 0)
                        return bad(p, "[%s] %s is set twice", section, name);
        if (p->n_seen < ELEMENTSOF(p->seen))
                snprintf(p->seen[p->n_seen++], sizeof(p->seen[0]), "%s", key);

        if (strcmp(section, "agent") == 0) {
                if (strcmp(name, "state_dir") == 0)
                        return check(p, put_path(c->state_dir, sizeof(c->state_dir), value),
                                     "state_dir must be an absolute path");
                if (strcmp(name, "runtime_dir") == 0)
                        return check(p, put_path(c->runtime_dir, sizeof(c->runtime_dir), value),
                                     "runtime_dir must be an absolute path");
                if (strcmp(name, "socket") == 0)
                        return check(p, put_path(c->socket, sizeof(c->socket), value),
                                     "socket must be an absolute path of at most %zu bytes",
                                     sizeof(c->socket) - 1);
                if (strcmp(name, "backend_dir") == 0)
                        return check(p, put_path(c->backend_dir, sizeof(c->backend_dir), value),
                                     "backend_dir must be an absolute path");
                if (strcmp(name, "default_backend") == 0)
                        return check(p,
                                     (conf_simple_name(value, 32, false) &&
                                      conf_put_str(c->default_backend, sizeof(c->default_backend), value)),
                                     "default_backend \"%s\" is not a backend name", value);
                if (strcmp(name, "control_group") == 0)
                        return check(p,
                                     (conf_simple_name(value, 32, true) &&
                                      conf_put_str(c->control_group, sizeof(c->control_group), value)),
                                     "control_group \"%s\" is not a group name", value);
                if (strcmp(name, "journal_compact_size") == 0) {
                        char *end;
                        errno = 0;
                        unsigned long long v = strtoull(value, &end, 10);
                        unsigned shift = 0;
                        if (*end == 'K' || *end == 'k')
                                shift = 10, end++;
                        else if (*end == 'M')
                                shift = 20, end++;
                        else if (*end == 'G')
                                shift = 30, end++;
                        if (errno || *end || value[0] < '0' || value[0] > '9' || v == 0 ||
                            v > (UINT64_C(1) << 40) >> shift)
                                return bad(
                                        p,
                                        "journal_compact_size \"%s\": expected bytes (with K, M or G) from 1 to 1T",
                                        value);
                        c->journal_compact_size = (uint64_t) v << shift;
                        return 1;
                }
                if (strcmp(name, "connections_per_uid") == 0 || strcmp(name, "idle_timeout") == 0) {
                        bool per_uid = name[0] == 'c';
                        unsigned long v;
                        if (!conf_uint(value, per_uid ? 1 : 0, per_uid ? 512 : 86400, &v))
                                return bad(
                                        p,
                                        per_uid ? "connections_per_uid \"%s\": expected a number from 1 to 512"
                                                : "idle_timeout \"%s\": expected whole seconds from 0 (never) "
                                                  "to 86400",
                                        value);
                        if (per_uid)
                                c->connections_per_uid = (unsigned) v;
                        else
                                c->idle_timeout = (unsigned) v;
                        return 1;
                }
                if (strcmp(name, "backends") == 0) {
                        char buf[512], *save = NULL;
                        unsigned n = 0;
                        if (strlen(value) >= sizeof(buf))
                                return bad(p, "backends: too long");
                        memcpy(buf, value, strlen(value) + 1);
                        for (char *t = strtok_r(buf, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                                if (!conf_simple_name(t, 32, false))
                                        return bad(p, "backends: \"%s\" is not a backend name", t);
                                if (n == CONFIG_MAX_BACKENDS)
                                        return bad(p, "backends: at most %d", CONFIG_MAX_BACKENDS);
                                for (unsigned i = 0; i < n; i++)
                                        if (strcmp(c->backends[i], t) == 0)
                                                return bad(p, "backends: \"%s\" is listed twice", t);
                                snprintf(c->backends[n++], sizeof(c->backends[0]), "%s", t);
                        }
                        if (n == 0)
                                return bad(p, "backends: the list is empty");
                        c->n_backends = n;
                        return 1;
                }
        } else if (strcmp(section, "vmm") == 0) {
                if (strcmp(name, "hypervisor") == 0) {
                        if (strcmp(value, "cloud-hypervisor") != 0 && strcmp(value, "qemu") != 0)
                                return bad(p, "hypervisor \"%s\": expected cloud-hypervisor or qemu", value);
                        return conf_put_str(c->hypervisor, sizeof(c->hypervisor), value);
                }
                if (strcmp(name, "binary") == 0) {
                        if (value[0] != '/')
                                return bad(p, "binary must be an absolute path");
                        /* Refuse at start what could only fail at the first VM. */
                        if (access(value, X_OK) < 0)
                                return bad(p, "binary %s: %s", value, strerror(errno));
                        return check(p, put_path(c->vmm_binary, sizeof(c->vmm_binary), value),
                                     "binary: path too long");
                }
                if (strcmp(name, "stop_timeout") == 0)
                        return parse_seconds(p, name, value, 3600, &c->stop_timeout);
                /* below chvmctl's 120 s wait for an answer, so that the agent's error is seen */
                if (strcmp(name, "start_timeout") == 0)
                        return parse_seconds(p, name, value, 100, &c->start_timeout);
                if (strcmp(name, "allow_block_devices") == 0)
                        return check(p, conf_bool(value, &c->allow_block_devices) >= 0,
                                     "allow_block_devices \"%s\": expected yes or no", value);
                if (strcmp(name, "image_dirs") == 0)
                        return parse_image_dirs(p, value);
                if (strcmp(name, "environment") == 0)
                        return parse_env_list(p, name, value, true);
                if (strcmp(name, "pass_environment") == 0)
                        return parse_env_list(p, name, value, false);
                if (strcmp(name, "accel") == 0) {
                        if (strcmp(value, "auto") != 0 && strcmp(value, "kvm") != 0 &&
                            strcmp(value, "tcg") != 0)
                                return bad(p, "accel \"%s\": expected auto, kvm or tcg", value);
                        return conf_put_str(c->accel, sizeof(c->accel), value);
                }
        } else
                return keep(p, section, name, value);

        return bad(p, "unknown key \"%s\" in [%s]", name, section);
}

static int finish(Parse *p, const char *name, int line, Error *e) {
        AgentConfig *c = &p->c;

        if (line != 0) {
                return error_set(e, -EINVAL, ERROR_INVALID, "%s:%d: %s", name, line,
                                 p->why[0] ? p->why : "syntax error");
        }
        bool found = false;
        for (unsigned i = 0; i < c->n_backends; i++)
                found = found || strcmp(c->backends[i], c->default_backend) == 0;
        if (!found) {
                return error_set(e, -EINVAL, ERROR_INVALID,
                                 "%s: [agent] default_backend \"%s\" is not among the loaded backends", name,
                                 c->default_backend);
        }
        for (unsigned i = 0; i < c->n_settings; i++) {
                found = false;
                for (unsigned k = 0; k < c->n_backends && !found; k++)
                        found = strcmp(c->backends[k], c->settings[i].section) == 0;
                if (!found) {
                        return error_set(
                                e, -EINVAL, ERROR_INVALID,
                                "%s:%u: unknown section [%s]: not a backend that [agent] backends loads",
                                name, c->settings[i].line, c->settings[i].section);
                }
        }
        snprintf(c->source, sizeof(c->source), "%s", name);
        if (!c->socket[0]) {
                int n = snprintf(c->socket, sizeof(c->socket), "%s/agent.sock", c->runtime_dir);
                if (n < 0 || (size_t) n >= sizeof(c->socket)) {
                        return error_set(e, -ENAMETOOLONG, ERROR_INVALID,
                                         "%s: [agent] runtime_dir is too long for the socket path", name);
                }
        }
        return 0;
}

/* inih reads a line into a buffer of INI_MAX_LINE bytes and takes what does not fit for the next line: a
 * longer line would be misread ("syntax error" on the line after it) or cut short without a word (when
 * the rest looks like a comment). Refused here, with its line. */
static int check_lines(const char *name, const char *text, Error *e) {
        const size_t max = INI_MAX_LINE - 2; /* room for the newline and the NUL */
        int line = 1;
        for (const char *p = text;; line++) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t) (nl - p) : strlen(p);
                if (len > max) {
                        return error_set(e, -EINVAL, ERROR_INVALID, "%s:%d: line is longer than %zu bytes",
                                         name, line, max);
                }
                if (!nl)
                        return 0;
                p = nl + 1;
        }
}

#define CONFIG_FILE_MAX (1024 * 1024)

int config_load(AgentConfig *c, const char *path, Error *e) {
        _cleanup_free_ char *text = NULL;
        size_t n = 0;
        FILE *f;
        int r;

        f = fopen(path, "re");
        if (!f) {
                r = negative_errno();
                return error_errno(e, r, "%s: %s", path, strerror(-r));
        }
        text = malloc(CONFIG_FILE_MAX + 1);
        if (!text) {
                fclose(f);
                return error_errno(e, -ENOMEM, "%s: cannot read it: %s", path, strerror(ENOMEM));
        }
        n = fread(text, 1, CONFIG_FILE_MAX + 1, f);
        r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0) {
                return error_errno(e, r, "%s: cannot read it", path);
        }
        if (n > CONFIG_FILE_MAX) {
                return error_set(e, -EFBIG, ERROR_INVALID, "%s: larger than %d bytes", path,
                                 CONFIG_FILE_MAX);
        }
        text[n] = '\0';
        /* the parser stops at a NUL: what follows would be ignored without a word */
        const char *nul = memchr(text, '\0', n);
        if (nul) {
                return error_set(e, -EINVAL, ERROR_INVALID, "%s: not a text file (a NUL byte at offset %zu)",
                                 path, (size_t) (nul - text));
        }
        return config_load_string(c, path, text, e);
}

typedef struct Reader {
        const char *next; /* NULL at the end */
        Parse *p;
} Reader;

/* inih's line source (as fgets): counts the lines, so that a kept setting knows its own. */
static char *read_line(char *buf, int size, void *stream) {
        Reader *rd = stream;
        if (!rd->next || !*rd->next || size < 2)
                return NULL;
        const char *nl = strchr(rd->next, '\n');
        size_t len = nl ? (size_t) (nl - rd->next) + 1 : strlen(rd->next);
        if (len > (size_t) size - 1)
                len = (size_t) size - 1; /* cannot happen: check_lines() refused longer lines */
        memcpy(buf, rd->next, len);
        buf[len] = '\0';
        rd->next += len;
        rd->p->line++;
        return buf;
}

int config_load_string(AgentConfig *c, const char *name, const char *text, Error *e) {
        Parse *p;
        int r;

        r = check_lines(name, text, e);
        if (r < 0)
                return r;
        p = calloc(1, sizeof(Parse));
        if (!p)
                return error_errno(e, -ENOMEM, "%s: %s", name, strerror(ENOMEM));
        p->c = *c;
        p->c.n_settings = 0; /* the file's sections replace the sections of whatever came before */
        Reader rd = { .next = text, .p = p };
        r = finish(p, name, ini_parse_stream(read_line, &rd, handler, p), e);
        if (r >= 0)
                *c = p->c;
        free(p);
        return r;
}

size_t config_backend_settings(const AgentConfig *c, const char *name, BackendSetting *ret, size_t max) {
        size_t n = 0;
        for (unsigned i = 0; i < c->n_settings && n < max; i++)
                if (strcmp(c->settings[i].section, name) == 0)
                        ret[n++] = (BackendSetting){ .key = c->settings[i].key,
                                                     .value = c->settings[i].value,
                                                     .line = c->settings[i].line };
        return n;
}

void config_backend_config(const AgentConfig *c, const char *name, BackendSetting *settings, size_t max,
                           BackendConfig *ret) {
        *ret = (BackendConfig){ .settings = settings,
                                .n_settings = config_backend_settings(c, name, settings, max),
                                .settings_source = c->source };
}
