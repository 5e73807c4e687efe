/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the agent's config parser (agent/config.c: config_load_string() over
 * config_defaults()) and the local backend's parser of its section (backends/local/local-config.c), the way
 * the agent uses them: the file, then [local] from the lines the agent kept.
 *
 * The input is the text of agent.conf (up to its first NUL: the parser takes a C string). Whatever it
 * holds, the parser must neither crash nor leak, and:
 *   - a refusal returns -EINVAL or -ENAMETOOLONG, leaves the config as it was, and its message names the
 *     file and the line ("fuzz.conf:N: ...") or the file ("fuzz.conf: ...") for what is checked at the
 *     end;
 *   - an accepted config holds what the daemon relies on: NUL-terminated strings, absolute paths, a
 *     socket path that fits sun_path, a subnet without host bits and a gateway that is one of its hosts,
 *     a default backend that is loaded, backends named once each, every kept line in a loaded backend's
 *     section with its line number; and of [local]: interface names and TAP prefixes the kernel takes (and
 *     the TAP names made from them), values from the allowed sets;
 *   - written back as "key=value" lines, an accepted config parses again to the same config.
 * Any violation aborts.
 *
 * `[vmm] binary` makes the parser call access(): the harness links with -Wl,--wrap=access so that only
 * FUZZ_VMM_BINARY counts as an executable, whatever the machine has; the fuzzer learns that path from the
 * dictionary and seeds. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "agent/config.h"
#include "agent/dispatcher.h"
#include "backends/local/local-config.h"
#include "util/ifname.h"
#include "util/macro.h"

#define FUZZ_VMM_BINARY "/usr/bin/cloud-hypervisor"
#define FUZZ_BACKEND_DIR "/usr/lib/chvm/backends"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int __wrap_access(const char *path, int mode);

int __wrap_access(const char *path, int mode) {
        (void) mode;
        if (path && strcmp(path, FUZZ_VMM_BINARY) == 0)
                return 0;
        errno = ENOENT;
        return -1;
}

static void check(bool ok) {
        if (!ok)
                abort();
}

static bool terminated(const char *s, size_t size) {
        return memchr(s, '\0', size) != NULL;
}

#define CHECK_TERMINATED(field) check(terminated((field), sizeof(field)))

static bool simple_name(const char *s, bool allow_upper) {
        size_t n = strlen(s);
        if (n == 0 || n > 32)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (allow_upper && ch >= 'A' && ch <= 'Z') ||
                      (i > 0 && ((ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))))
                        return false;
        }
        return true;
}

static bool printable(const char *s) {
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < ' ' || *p >= 0x7f)
                        return false;
        return true;
}

static void check_prefix(const char *prefix) {
        static const uint64_t ids[] = { 1, UINT64_C(0x0123456789abcdef), UINT64_MAX };
        check(strlen(prefix) >= 1 && strlen(prefix) <= 11 && ifname_valid(prefix) && printable(prefix));
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                char tap[16];
                dispatcher_tap_name(prefix, ids[i], tap);
                check(ifname_valid(tap) && strncmp(tap, prefix, strlen(prefix)) == 0);
        }
}

static void check_accepted(const AgentConfig *c) {
        CHECK_TERMINATED(c->state_dir);
        CHECK_TERMINATED(c->runtime_dir);
        CHECK_TERMINATED(c->socket);
        CHECK_TERMINATED(c->backend_dir);
        CHECK_TERMINATED(c->default_backend);
        CHECK_TERMINATED(c->control_group);
        CHECK_TERMINATED(c->hypervisor);
        CHECK_TERMINATED(c->vmm_binary);
        CHECK_TERMINATED(c->accel);

        check(c->state_dir[0] == '/' && c->runtime_dir[0] == '/' && c->backend_dir[0] == '/');
        check(c->socket[0] == '/' && strlen(c->socket) < sizeof(((struct sockaddr_un *) 0)->sun_path));
        check(c->vmm_binary[0] == '\0' || strcmp(c->vmm_binary, FUZZ_VMM_BINARY) == 0);

        check(c->n_backends >= 1 && c->n_backends <= CONFIG_MAX_BACKENDS);
        bool found = false;
        for (unsigned i = 0; i < c->n_backends; i++) {
                CHECK_TERMINATED(c->backends[i]);
                check(simple_name(c->backends[i], false));
                for (unsigned k = 0; k < i; k++)
                        check(strcmp(c->backends[i], c->backends[k]) != 0);
                found = found || strcmp(c->backends[i], c->default_backend) == 0;
        }
        check(found);
        check(simple_name(c->control_group, true));

        check(strcmp(c->hypervisor, "cloud-hypervisor") == 0 || strcmp(c->hypervisor, "qemu") == 0);
        check(strcmp(c->accel, "auto") == 0 || strcmp(c->accel, "kvm") == 0 || strcmp(c->accel, "tcg") == 0);
        check(c->stop_timeout >= 1 && c->stop_timeout <= 3600);

        check(c->n_settings <= CONFIG_MAX_SETTINGS);
        for (unsigned i = 0; i < c->n_settings; i++) {
                const ConfigSetting *s = &c->settings[i];
                CHECK_TERMINATED(s->section);
                CHECK_TERMINATED(s->key);
                CHECK_TERMINATED(s->value);
                check(simple_name(s->section, false) && simple_name(s->key, false) && s->line >= 1);
                check(i == 0 || s->line > c->settings[i - 1].line); /* in file order, a line each */
                found = false;
                for (unsigned k = 0; k < c->n_backends && !found; k++)
                        found = strcmp(c->backends[k], s->section) == 0;
                check(found);
                for (unsigned k = 0; k < i; k++)
                        check(strcmp(s->section, c->settings[k].section) != 0 ||
                              strcmp(s->key, c->settings[k].key) != 0);
        }
}

static void check_local(const LocalConfig *l) {
        CHECK_TERMINATED(l->bridge);
        CHECK_TERMINATED(l->tap_prefix);
        CHECK_TERMINATED(l->table);
        CHECK_TERMINATED(l->domain);
        check(simple_name(l->table, true));
        check(l->prefixlen >= 8 && l->prefixlen <= 30);
        uint32_t mask = ~UINT32_C(0) << (32 - l->prefixlen);
        check((l->subnet & ~mask) == 0);
        check((l->gateway & mask) == l->subnet); /* inside the subnet */
        check(l->gateway != l->subnet && l->gateway != (l->subnet | ~mask));
        check(ifname_valid(l->bridge) && printable(l->bridge));
        check_prefix(l->tap_prefix);
        check(table_owner_to_string(l->table_owner) != NULL);
        check(l->n_dns <= DHCP4_DNS_MAX && l->n_reserved <= LOCAL_MAX_RESERVED);
        check(l->lease_time >= 60 && l->lease_time <= 31536000 &&
              (l->mtu == 0 || (l->mtu >= 576 && l->mtu <= 65535)));
        for (unsigned i = 0; i < l->n_reserved; i++)
                check(l->reserved[i].first >= 1 && l->reserved[i].first <= l->reserved[i].last);
}

static bool config_equal(const AgentConfig *a, const AgentConfig *b) {
        if (a->n_backends != b->n_backends || a->n_settings != b->n_settings)
                return false;
        for (unsigned i = 0; i < a->n_backends; i++)
                if (strcmp(a->backends[i], b->backends[i]) != 0)
                        return false;
        for (unsigned i = 0; i < a->n_settings; i++)
                if (strcmp(a->settings[i].section, b->settings[i].section) != 0 ||
                    strcmp(a->settings[i].key, b->settings[i].key) != 0 ||
                    strcmp(a->settings[i].value, b->settings[i].value) != 0)
                        return false;
        return strcmp(a->state_dir, b->state_dir) == 0 && strcmp(a->runtime_dir, b->runtime_dir) == 0 &&
               strcmp(a->socket, b->socket) == 0 && strcmp(a->backend_dir, b->backend_dir) == 0 &&
               strcmp(a->default_backend, b->default_backend) == 0 &&
               strcmp(a->control_group, b->control_group) == 0 &&
               strcmp(a->hypervisor, b->hypervisor) == 0 && strcmp(a->vmm_binary, b->vmm_binary) == 0 &&
               a->stop_timeout == b->stop_timeout && strcmp(a->accel, b->accel) == 0;
}

static bool local_equal(const LocalConfig *a, const LocalConfig *b) {
        return strcmp(a->bridge, b->bridge) == 0 && a->subnet == b->subnet && a->prefixlen == b->prefixlen &&
               a->gateway == b->gateway && strcmp(a->tap_prefix, b->tap_prefix) == 0 &&
               strcmp(a->table, b->table) == 0 && a->table_owner == b->table_owner && a->dhcp == b->dhcp &&
               a->mtu == b->mtu && a->lease_time == b->lease_time;
}

/* The whole config as a file: every key of [agent] and [vmm], the backends' lines as they were kept (the
 * parser took blanks around them off), "key=value" (no blanks, so that no value starts a comment). */
static char *format(const AgentConfig *c) {
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        check(f);
        fprintf(f, "[agent]\nstate_dir=%s\nruntime_dir=%s\nsocket=%s\nbackend_dir=%s\ndefault_backend=%s\n",
                c->state_dir, c->runtime_dir, c->socket, c->backend_dir, c->default_backend);
        fprintf(f, "control_group=%s\nbackends=", c->control_group);
        for (unsigned i = 0; i < c->n_backends; i++)
                fprintf(f, "%s%s", i ? "," : "", c->backends[i]);
        fprintf(f, "\n[vmm]\nhypervisor=%s\n", c->hypervisor);
        if (c->vmm_binary[0])
                fprintf(f, "binary=%s\n", c->vmm_binary);
        fprintf(f, "stop_timeout=%u\naccel=%s\n", c->stop_timeout, c->accel);
        for (unsigned i = 0; i < c->n_settings; i++)
                fprintf(f, "[%s]\n%s=%s\n", c->settings[i].section, c->settings[i].key,
                        c->settings[i].value);
        check(fclose(f) == 0);
        return text;
}

/* [local] through the local backend's parser, as the agent hands it over; 0 or its refusal. */
static int parse_local(const AgentConfig *c, LocalConfig *ret) {
        BackendSetting s[CONFIG_MAX_SETTINGS];
        size_t n = config_backend_settings(c, "local", s, ELEMENTSOF(s)), bad = SIZE_MAX;
        Error why = {};
        LocalConfig before;
        local_config_defaults(ret);
        before = *ret;
        int r = local_config_parse(ret, s, n, &bad, &why);
        if (r < 0) {
                check(r == -EINVAL && bad <= n && why.code == -EINVAL && why.message[0] &&
                      memcmp(&before, ret, sizeof(before)) == 0);
                return r;
        }
        check_local(ret);
        return 0;
}

static bool names_file(const char *err) {
        size_t n = strlen("fuzz.conf:");
        if (strncmp(err, "fuzz.conf:", n) != 0)
                return false;
        if (err[n] == ' ')
                return err[n + 1] != '\0'; /* "fuzz.conf: cause" */
        size_t digits = strspn(err + n, "0123456789");
        return digits > 0 && err[n] != '0' && strncmp(err + n + digits, ": ", 2) == 0 && err[n + digits + 2];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        AgentConfig c, before, again;
        Error err;
        char *text = malloc(size + 1);
        int r;

        check(text);
        memcpy(text, data, size);
        text[size] = '\0';

        config_defaults(&c, FUZZ_BACKEND_DIR);
        before = c;
        error_clear(&err);
        r = config_load_string(&c, "fuzz.conf", text, &err);
        free(text);
        if (r < 0) {
                check(r == -EINVAL || r == -ENAMETOOLONG);
                check(config_equal(&c, &before));
                check(names_file(error_message(&err)));
                return 0;
        }
        check_accepted(&c);
        LocalConfig l, l_again;
        int rl = parse_local(&c, &l);

        char *back = format(&c);
        config_defaults(&again, FUZZ_BACKEND_DIR);
        r = config_load_string(&again, "fuzz.conf", back, &err);
        if (r >= 0 && (parse_local(&again, &l_again) != rl || (rl >= 0 && !local_equal(&l, &l_again))))
                r = -EBADMSG;
        if (r < 0 || !config_equal(&c, &again)) {
                fprintf(stderr, "accepted config does not parse back (%s):\n%s",
                        r < 0 ? error_message(&err) : "differs", back);
                abort();
        }
        free(back);
        return 0;
}
