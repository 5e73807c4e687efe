/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/vmdef.h"
#include "util/vmkind.h"
#include "util/vmname.h"

#define VM_DEF_TMP_SUFFIX VM_DEF_SUFFIX ".tmp"
#define VM_DEF_FILE_NAME_MAX (VM_NAME_MAX + sizeof(VM_DEF_TMP_SUFFIX))

/* At most this many bytes of a value are shown in a message, cut at a character boundary. */
#define QUOTE_MAX 64
#define QUOTE_BUF (QUOTE_MAX + 6) /* the quotes, "..." and the NUL */
#define WHY_MAX 256 /* one cause, without FILE:LINE */

#define VM_NAME_RULE "a lowercase letter, then up to 31 lowercase letters, digits or '-'"
#define PORT_SYNTAX "HOSTPORT:GUESTPORT[/tcp|/udp]"

static const char header_comment[] = "# VM definition, written by chvm-agentd.\n";

/* Every refusal here is of a definition or a file that cannot be taken as it is. e may be NULL. */
_printf_(3, 4) static int fail(Error *e, int r, const char *fmt, ...) {
        va_list ap;

        if (!e)
                return r;
        va_start(ap, fmt);
        (void) error_setv(e, r, r == -EINVAL || r == -EFBIG ? ERROR_INVALID : error_kind_from_errno(r), fmt,
                          ap);
        va_end(ap);
        return r;
}

/* --- text -------------------------------------------------------------------------------------------- */

/* The length of the UTF-8 character at s (of at most n bytes), with its code point in *ret; 0 when the
 * bytes are not one: overlong forms, surrogates and anything above U+10FFFF count as invalid. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *ret) {
        uint32_t c;
        size_t len;

        if (n == 0)
                return 0;
        if (s[0] < 0x80) {
                *ret = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                len = 2;
                c = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                c = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                c = s[0] & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
            (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *ret = c;
        return len;
}

static bool is_control(uint32_t c) {
        return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f);
}

typedef enum TextProblem {
        TEXT_OK,
        TEXT_NUL,
        TEXT_CONTROL,
        TEXT_NOT_UTF8,
} TextProblem;

/* Whether s[0..n) is UTF-8 without control characters (tabs allowed if allow_tab); the first offending
 * character's code point goes to *ret_char. */
static TextProblem text_check(const char *s, size_t n, bool allow_tab, uint32_t *ret_char) {
        const uint8_t *p = (const uint8_t *) s;

        for (size_t i = 0; i < n;) {
                uint32_t c;
                size_t k = utf8_decode(p + i, n - i, &c);

                if (k == 0)
                        return TEXT_NOT_UTF8;
                if (c == 0)
                        return TEXT_NUL;
                if (is_control(c) && !(allow_tab && c == '\t')) {
                        if (ret_char)
                                *ret_char = c;
                        return TEXT_CONTROL;
                }
                i += k;
        }
        return TEXT_OK;
}

/* s[0..n) for a message: in double quotes, control characters and broken UTF-8 shown as '?', longer
 * than QUOTE_MAX bytes cut and marked with "...". Returns buf. */
static const char *quote_n(const char *s, size_t n, char buf[static QUOTE_BUF]) {
        const uint8_t *p = (const uint8_t *) s;
        size_t i = 0, o = 0;

        buf[o++] = '"';
        while (i < n) {
                uint32_t c;
                size_t k = utf8_decode(p + i, n - i, &c);
                bool shown = k > 0 && c != 0 && !is_control(c);
                size_t out = shown ? k : 1;

                if (o - 1 + out > QUOTE_MAX)
                        break;
                if (shown)
                        memcpy(buf + o, p + i, k);
                else
                        buf[o] = '?';
                o += out;
                i += k > 0 ? k : 1;
        }
        if (i < n) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        return buf;
}

static const char *quote(const char *s, char buf[static QUOTE_BUF]) {
        return quote_n(s, strlen(s), buf);
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

/* Trims spaces and tabs on both sides of s[0..*n). */
static const char *trim(const char *s, size_t *n) {
        while (*n > 0 && is_blank(s[0])) {
                s++;
                (*n)--;
        }
        while (*n > 0 && is_blank(s[*n - 1]))
                (*n)--;
        return s;
}

/* A plain decimal number of at most max: digits only, no sign, no white space. */
static int parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned d;

                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                d = (unsigned) (s[i] - '0');
                if (d > max || v > (max - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

/* --- the checks shared by the parser and vm_def_validate() --------------------------------------------
 *
 * Each writes a cause that reads after the field's name, in the parser as `kernel: "rel" is not an
 * absolute path` and in vm_def_validate() as `VM web: kernel "rel" is not an absolute path`. */

_printf_(3, 4) static int why(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int check_text(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];

        switch (text_check(s, strlen(s), false, NULL)) {
        case TEXT_OK:
                return 0;
        case TEXT_NOT_UTF8:
                return why(buf, size, "%s is not valid UTF-8", quote(s, q));
        default:
                return why(buf, size, "%s contains control characters", quote(s, q));
        }
}

static int check_name(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];

        if (!vm_name_valid(s))
                return why(buf, size, "%s is not a VM name (" VM_NAME_RULE ")", quote(s, q));
        return 0;
}

static int check_backend(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];
        size_t n = strlen(s);
        bool ok = n >= 1 && n <= VM_DEF_BACKEND_MAX;

        for (size_t i = 0; ok && i < n; i++)
                ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
                     s[i] == '-';
        if (!ok)
                return why(buf, size, "%s is not a backend name (1..%u of a-z, 0-9, '_' and '-')",
                           quote(s, q), VM_DEF_BACKEND_MAX);
        return 0;
}

static int check_hypervisor(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF], kinds[128] = "";
        size_t o = 0;

        if (s[0] == '\0' || hypervisor_kind_from_string(s) >= 0)
                return 0;
        for (int k = 0; k < _HYPERVISOR_KIND_MAX; k++) {
                int n = snprintf(kinds + o, sizeof(kinds) - o, "%s%s",
                                 k == 0                          ? ""
                                 : k == _HYPERVISOR_KIND_MAX - 1 ? " or "
                                                                 : ", ",
                                 hypervisor_kind_to_string((HypervisorKind) k));
                if (n < 0 || (size_t) n >= sizeof(kinds) - o)
                        break;
                o += (size_t) n;
        }
        return why(buf, size, "%s is not %s", quote(s, q), kinds);
}

static int check_path(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];
        size_t n = strlen(s);
        int r;

        r = check_text(s, buf, size);
        if (r < 0)
                return r;
        if (s[0] != '/')
                return why(buf, size, "%s is not an absolute path", quote(s, q));
        if (n > VM_DEF_PATH_MAX)
                return why(buf, size, "%s (%zu bytes) is longer than %u bytes", quote(s, q), n,
                           VM_DEF_PATH_MAX);
        return 0;
}

static int check_cmdline(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];
        size_t n = strlen(s);
        int r;

        r = check_text(s, buf, size);
        if (r < 0)
                return r;
        if (n > VM_KERNEL_CMDLINE_MAX)
                return why(buf, size, "%s (%zu bytes) is longer than %u bytes", quote(s, q), n,
                           VM_KERNEL_CMDLINE_MAX);
        return 0;
}

/* What a .vm line cannot carry, since the parser trims the value. */
static int check_untrimmed(const char *s, char *buf, size_t size) {
        char q[QUOTE_BUF];
        size_t n = strlen(s);

        if (n > 0 && (is_blank(s[0]) || is_blank(s[n - 1])))
                return why(buf, size, "%s begins or ends with white space, which a .vm file cannot keep",
                           quote(s, q));
        return 0;
}

static const char *proto_to_string(uint8_t proto) {
        return proto == IPPROTO_TCP ? "tcp" : proto == IPPROTO_UDP ? "udp" : NULL;
}

/* --- ports ------------------------------------------------------------------------------------------- */

static int parse_port(const char *s, size_t n, const char *what, uint16_t *ret, char *buf, size_t size) {
        char q[QUOTE_BUF];
        uint64_t v = 0; /* set by parse_decimal() on success; gcc -O2 cannot see that */
        int r;

        if (n == 0)
                return why(buf, size, "%s port is missing", what);
        r = parse_decimal(s, n, UINT16_MAX, &v);
        if (r == -EINVAL)
                return why(buf, size, "%s port %s is not a number", what, quote_n(s, n, q));
        if (r < 0 || v == 0) {
                /* only digits here, so they need no quoting, just a limit */
                int shown = n > 20 ? 20 : (int) n;
                return why(buf, size, "%s port %.*s%s is not in 1..65535", what, shown, s,
                           n > 20 ? "..." : "");
        }
        *ret = (uint16_t) v;
        return 0;
}

int port_forward_parse(const char *s, PortForward *ret, Error *e) {
        char q[QUOTE_BUF], q2[QUOTE_BUF], buf[WHY_MAX];
        const char *slash, *colon = NULL, *end;
        uint8_t proto = IPPROTO_TCP;
        uint16_t host = 0, guest = 0;
        size_t n_colons = 0;
        int r;

        assert(s);
        assert(ret);

        quote(s, q);
        if (check_text(s, buf, sizeof(buf)) < 0)
                return fail(e, -EINVAL, "port %s", buf);

        end = s + strlen(s);
        slash = strchr(s, '/');
        if (slash) {
                if (strcmp(slash + 1, "tcp") == 0)
                        proto = IPPROTO_TCP;
                else if (strcmp(slash + 1, "udp") == 0)
                        proto = IPPROTO_UDP;
                else
                        return fail(e, -EINVAL, "port %s: protocol %s is not tcp or udp", q,
                                    quote(slash + 1, q2));
                end = slash;
        }

        for (const char *p = s; p < end; p++)
                if (*p == ':') {
                        if (!colon)
                                colon = p;
                        n_colons++;
                }
        if (n_colons == 0)
                return fail(e, -EINVAL, "port %s: expected " PORT_SYNTAX, q);
        if (n_colons > 1)
                return fail(e, -EINVAL,
                            "port %s: host address binding (ADDR:) is not supported: the forward applies to "
                            "every local address",
                            q);

        r = parse_port(s, (size_t) (colon - s), "host", &host, buf, sizeof(buf));
        if (r >= 0)
                r = parse_port(colon + 1, (size_t) (end - colon - 1), "guest", &guest, buf, sizeof(buf));
        if (r < 0)
                return fail(e, r, "port %s: %s", q, buf);

        *ret = (PortForward){ .proto = proto, .host_port = host, .guest_port = guest };
        return 0;
}

void port_forward_format(const PortForward *p, char ret[PORT_FORWARD_STRING_MAX]) {
        const char *proto;

        assert(p);

        proto = proto_to_string(p->proto);
        (void) snprintf(ret, PORT_FORWARD_STRING_MAX, "%u:%u/%s", (unsigned) p->host_port,
                        (unsigned) p->guest_port, proto ? proto : "?");
}

/* --- the definition ---------------------------------------------------------------------------------- */

VmDef *vm_def_new(void) {
        VmDef *d = calloc(1, sizeof(VmDef));

        if (!d)
                return NULL;
        d->cpus = VM_DEF_CPUS_DEFAULT;
        d->memory_mib = VM_DEF_MEMORY_MIB_DEFAULT;
        return d;
}

VmDef *vm_def_free(VmDef *d) {
        if (!d)
                return NULL;
        free(d->kernel);
        free(d->firmware);
        free(d->initrd);
        free(d->cmdline);
        /* every slot: unused ones are NULL (vm_def_new() zeroes them) */
        for (size_t i = 0; i < VM_DEF_MAX_DISKS; i++)
                free(d->disks[i]);
        free(d);
        return NULL;
}

static int strdup_or_null(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int vm_def_copy(const VmDef *d, VmDef **ret) {
        _cleanup_(vm_def_freep) VmDef *c = NULL;

        assert(d);
        assert(ret);
        assert(d->n_disks <= VM_DEF_MAX_DISKS);
        assert(d->n_ports <= VM_DEF_MAX_PORTS);

        c = vm_def_new();
        if (!c)
                return -ENOMEM;
        memcpy(c->name, d->name, sizeof(c->name));
        c->id = d->id;
        memcpy(c->backend, d->backend, sizeof(c->backend));
        memcpy(c->hypervisor, d->hypervisor, sizeof(c->hypervisor));
        c->cpus = d->cpus;
        c->memory_mib = d->memory_mib;
        memcpy(c->ports, d->ports, sizeof(c->ports));
        c->n_ports = d->n_ports;
        if (strdup_or_null(d->kernel, &c->kernel) < 0 || strdup_or_null(d->firmware, &c->firmware) < 0 ||
            strdup_or_null(d->initrd, &c->initrd) < 0 || strdup_or_null(d->cmdline, &c->cmdline) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_disks; i++) {
                if (strdup_or_null(d->disks[i], &c->disks[i]) < 0)
                        return -ENOMEM;
                c->n_disks = i + 1;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

static bool str_equal(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

bool vm_def_equal(const VmDef *a, const VmDef *b) {
        if (a == b)
                return true;
        if (!a || !b)
                return false;
        if (strncmp(a->name, b->name, sizeof(a->name)) != 0 || a->id != b->id ||
            strncmp(a->backend, b->backend, sizeof(a->backend)) != 0 ||
            strncmp(a->hypervisor, b->hypervisor, sizeof(a->hypervisor)) != 0 ||
            !str_equal(a->kernel, b->kernel) || !str_equal(a->firmware, b->firmware) ||
            !str_equal(a->initrd, b->initrd) || !str_equal(a->cmdline, b->cmdline) || a->cpus != b->cpus ||
            a->memory_mib != b->memory_mib || a->n_disks != b->n_disks || a->n_ports != b->n_ports)
                return false;
        for (size_t i = 0; i < a->n_disks && i < VM_DEF_MAX_DISKS; i++)
                if (!str_equal(a->disks[i], b->disks[i]))
                        return false;
        for (size_t i = 0; i < a->n_ports && i < VM_DEF_MAX_PORTS; i++)
                if (a->ports[i].proto != b->ports[i].proto ||
                    a->ports[i].host_port != b->ports[i].host_port ||
                    a->ports[i].guest_port != b->ports[i].guest_port)
                        return false;
        return true;
}

/* A path field: required or NULL allowed; what the checks say, plus trailing white space, which the
 * parser would trim. */
static int validate_path(const char *vm, const char *field, const char *path, bool optional, Error *e) {
        char buf[WHY_MAX];

        if (!path) {
                if (optional)
                        return 0;
                return fail(e, -EINVAL, "VM %s: %s is missing", vm, field);
        }
        if (check_path(path, buf, sizeof(buf)) < 0 || check_untrimmed(path, buf, sizeof(buf)) < 0)
                return fail(e, -EINVAL, "VM %s: %s %s", vm, field, buf);
        return 0;
}

/* A fixed-size string field of the struct: NUL-terminated inside its array. */
static bool terminated(const char *s, size_t size) {
        return memchr(s, '\0', size) != NULL;
}

static int validate_ports(const VmDef *d, Error *e) {
        if (d->n_ports > VM_DEF_MAX_PORTS)
                return fail(e, -EINVAL, "VM %s: %zu ports, more than %u", d->name, d->n_ports,
                            VM_DEF_MAX_PORTS);
        for (size_t i = 0; i < d->n_ports; i++) {
                const PortForward *p = &d->ports[i];
                char s[PORT_FORWARD_STRING_MAX];

                if (!proto_to_string(p->proto))
                        return fail(e, -EINVAL,
                                    "VM %s: port %u:%u has protocol %u, which is neither tcp nor udp",
                                    d->name, (unsigned) p->host_port, (unsigned) p->guest_port,
                                    (unsigned) p->proto);
                port_forward_format(p, s);
                if (p->host_port == 0)
                        return fail(e, -EINVAL, "VM %s: port \"%s\": host port 0 is not in 1..65535",
                                    d->name, s);
                if (p->guest_port == 0)
                        return fail(e, -EINVAL, "VM %s: port \"%s\": guest port 0 is not in 1..65535",
                                    d->name, s);
                for (size_t j = 0; j < i; j++)
                        if (d->ports[j].proto == p->proto && d->ports[j].host_port == p->host_port)
                                return fail(
                                        e, -EINVAL,
                                        "VM %s: port \"%s\": host port %u/%s is already forwarded to guest "
                                        "port %u",
                                        d->name, s, (unsigned) p->host_port, proto_to_string(p->proto),
                                        (unsigned) d->ports[j].guest_port);
        }
        return 0;
}

int vm_def_validate(const VmDef *d, Error *e) {
        char buf[WHY_MAX], q[QUOTE_BUF];
        const char *vm;
        int r;

        assert(d);

        if (!terminated(d->name, sizeof(d->name)) || check_name(d->name, buf, sizeof(buf)) < 0)
                return fail(e, -EINVAL, "VM name %s is not valid (" VM_NAME_RULE ")",
                            quote_n(d->name, strnlen(d->name, sizeof(d->name)), q));
        vm = d->name;

        if (d->id == 0)
                return fail(e, -EINVAL, "VM %s: id must not be zero", vm);
        if (!terminated(d->backend, sizeof(d->backend)))
                return fail(e, -EINVAL, "VM %s: backend is not NUL-terminated", vm);
        if (check_backend(d->backend, buf, sizeof(buf)) < 0)
                return fail(e, -EINVAL, "VM %s: backend %s", vm, buf);
        if (!terminated(d->hypervisor, sizeof(d->hypervisor)))
                return fail(e, -EINVAL, "VM %s: hypervisor is not NUL-terminated", vm);
        if (check_hypervisor(d->hypervisor, buf, sizeof(buf)) < 0)
                return fail(e, -EINVAL, "VM %s: hypervisor %s", vm, buf);

        r = validate_path(vm, "kernel", d->kernel, true, e);
        if (r < 0)
                return r;
        r = validate_path(vm, "firmware", d->firmware, true, e);
        if (r < 0)
                return r;
        r = validate_path(vm, "initrd", d->initrd, true, e);
        if (r < 0)
                return r;
        if (!d->kernel && (d->initrd || d->cmdline))
                return fail(e, -EINVAL,
                            "VM %s: %s needs a kernel (without one the VM boots its first disk through its "
                            "firmware)",
                            vm, d->initrd ? "an initrd" : "a kernel command line");
        if (!d->kernel && !d->firmware && d->n_disks == 0)
                return fail(e, -EINVAL, "VM %s: nothing to boot: no kernel, no firmware and no disk", vm);
        if (d->cmdline) {
                if (d->cmdline[0] == '\0')
                        return fail(e, -EINVAL, "VM %s: cmdline is empty (NULL means none)", vm);
                if (check_cmdline(d->cmdline, buf, sizeof(buf)) < 0 ||
                    check_untrimmed(d->cmdline, buf, sizeof(buf)) < 0)
                        return fail(e, -EINVAL, "VM %s: cmdline %s", vm, buf);
        }

        if (d->cpus < 1 || d->cpus > VM_SPEC_CPUS_MAX)
                return fail(e, -EINVAL, "VM %s: cpus %u is not in 1..%u", vm, d->cpus, VM_SPEC_CPUS_MAX);
        if (d->memory_mib < VM_SPEC_MEMORY_MIB_MIN || d->memory_mib > VM_SPEC_MEMORY_MIB_MAX)
                return fail(e, -EINVAL,
                            "VM %s: memory %" PRIu64 " MiB is not in %" PRIu64 "..%" PRIu64 " MiB", vm,
                            d->memory_mib, VM_SPEC_MEMORY_MIB_MIN, VM_SPEC_MEMORY_MIB_MAX);

        if (d->n_disks > VM_DEF_MAX_DISKS)
                return fail(e, -EINVAL, "VM %s: %zu disks, more than %u", vm, d->n_disks, VM_DEF_MAX_DISKS);
        for (size_t i = 0; i < d->n_disks; i++) {
                r = validate_path(vm, "disk", d->disks[i], false, e);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(d->disks[j], d->disks[i]) == 0)
                                return fail(e, -EINVAL, "VM %s: disk %s is given twice", vm,
                                            quote(d->disks[i], q));
        }

        return validate_ports(d, e);
}

/* --- the parser -------------------------------------------------------------------------------------- */

typedef enum VmDefKey {
        KEY_NAME,
        KEY_ID,
        KEY_BACKEND,
        KEY_HYPERVISOR,
        KEY_CPUS,
        KEY_MEMORY,
        KEY_DISK,
        KEY_PORT,
        KEY_INITRD,
        KEY_CMDLINE,
        KEY_FIRMWARE,
        KEY_KERNEL,
        _KEY_MAX,
} VmDefKey;

typedef struct Parser {
        const char *expect_name; /* NULL: any */
        VmDef *def;
        unsigned line;
        unsigned key_line[_KEY_MAX]; /* where each key was given first; 0: not yet */
        unsigned disk_line[VM_DEF_MAX_DISKS];
        unsigned port_line[VM_DEF_MAX_PORTS];
        char cause[WHY_MAX + 64];
} Parser;

_printf_(2, 3) static int cause(Parser *p, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(p->cause, sizeof(p->cause), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* Each gets the (trimmed, malloc'ed) value of its key and may take it over. */
typedef int (*KeyParser)(Parser *p, char **value);

static int parse_name(Parser *p, char **value) {
        char buf[WHY_MAX], q[QUOTE_BUF];

        if (check_name(*value, buf, sizeof(buf)) < 0)
                return cause(p, "name: %s", buf);
        if (p->expect_name && strcmp(*value, p->expect_name) != 0)
                return cause(p, "name: %s does not match the file name %s" VM_DEF_SUFFIX, quote(*value, q),
                             p->expect_name);
        memcpy(p->def->name, *value, strlen(*value) + 1);
        return 0;
}

static int parse_id(Parser *p, char **value) {
        char q[QUOTE_BUF];
        const char *s = *value;
        uint64_t id = 0;

        if (strlen(s) != 16)
                return cause(p, "id: %s is not 16 lowercase hex digits", quote(s, q));
        for (size_t i = 0; i < 16; i++) {
                unsigned x;

                if (s[i] >= '0' && s[i] <= '9')
                        x = (unsigned) (s[i] - '0');
                else if (s[i] >= 'a' && s[i] <= 'f')
                        x = (unsigned) (s[i] - 'a' + 10);
                else
                        return cause(p, "id: %s is not 16 lowercase hex digits", quote(s, q));
                id = id << 4 | x;
        }
        if (id == 0)
                return cause(p, "id: must not be zero");
        p->def->id = id;
        return 0;
}

static int parse_backend(Parser *p, char **value) {
        char buf[WHY_MAX];

        if (check_backend(*value, buf, sizeof(buf)) < 0)
                return cause(p, "backend: %s", buf);
        memcpy(p->def->backend, *value, strlen(*value) + 1);
        return 0;
}

static int parse_hypervisor(Parser *p, char **value) {
        char buf[WHY_MAX];

        if (check_hypervisor(*value, buf, sizeof(buf)) < 0)
                return cause(p, "hypervisor: %s", buf);
        if (strlen(*value) >= sizeof(p->def->hypervisor))
                return cause(p, "hypervisor: the kind's name is too long"); /* no kind's is */
        memcpy(p->def->hypervisor, *value, strlen(*value) + 1);
        return 0;
}

static int parse_cpus(Parser *p, char **value) {
        char q[QUOTE_BUF];
        uint64_t v;

        if (parse_decimal(*value, strlen(*value), VM_SPEC_CPUS_MAX, &v) < 0 || v < 1)
                return cause(p, "cpus: %s is not a number in 1..%u", quote(*value, q), VM_SPEC_CPUS_MAX);
        p->def->cpus = (unsigned) v;
        return 0;
}

static int parse_memory(Parser *p, char **value) {
        char q[QUOTE_BUF];
        uint64_t v;

        if (parse_decimal(*value, strlen(*value), VM_SPEC_MEMORY_MIB_MAX, &v) < 0 ||
            v < VM_SPEC_MEMORY_MIB_MIN)
                return cause(p, "memory: %s is not a number of MiB in %" PRIu64 "..%" PRIu64,
                             quote(*value, q), VM_SPEC_MEMORY_MIB_MIN, VM_SPEC_MEMORY_MIB_MAX);
        p->def->memory_mib = v;
        return 0;
}

static int parse_path(Parser *p, const char *key, char **value, char **ret) {
        char buf[WHY_MAX];

        if (check_path(*value, buf, sizeof(buf)) < 0)
                return cause(p, "%s: %s", key, buf);
        *ret = TAKE_PTR(*value);
        return 0;
}

static int parse_kernel(Parser *p, char **value) {
        if ((*value)[0] == '\0') /* none: the VM boots from its disk through firmware */
                return 0;
        return parse_path(p, "kernel", value, &p->def->kernel);
}

static int parse_firmware(Parser *p, char **value) {
        if ((*value)[0] == '\0')
                return 0;
        return parse_path(p, "firmware", value, &p->def->firmware);
}

static int parse_initrd(Parser *p, char **value) {
        if ((*value)[0] == '\0') /* none */
                return 0;
        return parse_path(p, "initrd", value, &p->def->initrd);
}

static int parse_cmdline(Parser *p, char **value) {
        char buf[WHY_MAX];

        if ((*value)[0] == '\0') /* none */
                return 0;
        if (check_cmdline(*value, buf, sizeof(buf)) < 0)
                return cause(p, "cmdline: %s", buf);
        p->def->cmdline = TAKE_PTR(*value);
        return 0;
}

static int parse_disk(Parser *p, char **value) {
        VmDef *d = p->def;
        char buf[WHY_MAX], q[QUOTE_BUF];

        if (check_path(*value, buf, sizeof(buf)) < 0)
                return cause(p, "disk: %s", buf);
        if (d->n_disks >= VM_DEF_MAX_DISKS)
                return cause(p, "disk: more than %u disks", VM_DEF_MAX_DISKS);
        for (size_t i = 0; i < d->n_disks; i++)
                if (strcmp(d->disks[i], *value) == 0)
                        return cause(p, "disk: %s is given twice (first at line %u)", quote(*value, q),
                                     p->disk_line[i]);
        p->disk_line[d->n_disks] = p->line;
        d->disks[d->n_disks++] = TAKE_PTR(*value);
        return 0;
}

static int parse_port_key(Parser *p, char **value) {
        VmDef *d = p->def;
        char q[QUOTE_BUF];
        PortForward pf;
        int r;

        Error e;
        r = port_forward_parse(*value, &pf, &e);
        if (r < 0) {
                snprintf(p->cause, sizeof(p->cause), "%s", error_message(&e));
                return r;
        }
        if (d->n_ports >= VM_DEF_MAX_PORTS)
                return cause(p, "port: more than %u ports", VM_DEF_MAX_PORTS);
        for (size_t i = 0; i < d->n_ports; i++)
                if (d->ports[i].proto == pf.proto && d->ports[i].host_port == pf.host_port)
                        return cause(
                                p,
                                "port %s: host port %u/%s is already forwarded to guest port %u (line %u)",
                                quote(*value, q), (unsigned) pf.host_port, proto_to_string(pf.proto),
                                (unsigned) d->ports[i].guest_port, p->port_line[i]);
        p->port_line[d->n_ports] = p->line;
        d->ports[d->n_ports++] = pf;
        return 0;
}

static const struct {
        const char *name;
        bool required;
        bool repeatable;
        KeyParser parse;
} keys[_KEY_MAX] = {
        [KEY_NAME] = { "name", true, false, parse_name },
        [KEY_ID] = { "id", true, false, parse_id },
        [KEY_BACKEND] = { "backend", true, false, parse_backend },
        [KEY_HYPERVISOR] = { "hypervisor", false, false, parse_hypervisor },
        [KEY_CPUS] = { "cpus", false, false, parse_cpus },
        [KEY_MEMORY] = { "memory", false, false, parse_memory },
        [KEY_DISK] = { "disk", false, true, parse_disk },
        [KEY_PORT] = { "port", false, true, parse_port_key },
        [KEY_INITRD] = { "initrd", false, false, parse_initrd },
        [KEY_CMDLINE] = { "cmdline", false, false, parse_cmdline },
        [KEY_FIRMWARE] = { "firmware", false, false, parse_firmware },
        [KEY_KERNEL] = { "kernel", true, false, parse_kernel },
};

static int parse_key_value(Parser *p, const char *s, size_t n, const char *eq) {
        _cleanup_free_ char *value = NULL;
        char q[QUOTE_BUF];
        const char *key, *v;
        size_t key_len = (size_t) (eq - s), value_len = n - key_len - 1;
        int k;

        key = trim(s, &key_len);
        v = trim(eq + 1, &value_len);
        if (key_len == 0)
                return cause(p, "expected KEY = VALUE, but the key before '=' is missing");

        for (k = 0; k < _KEY_MAX; k++)
                if (strlen(keys[k].name) == key_len && memcmp(keys[k].name, key, key_len) == 0)
                        break;
        if (k == _KEY_MAX)
                return cause(p, "unknown key %s", quote_n(key, key_len, q));
        if (p->key_line[k] > 0 && !keys[k].repeatable)
                return cause(p, "%s is given twice (first at line %u)", keys[k].name, p->key_line[k]);
        if (p->key_line[k] == 0)
                p->key_line[k] = p->line;

        value = strndup(v, value_len);
        if (!value)
                return -ENOMEM;
        return keys[k].parse(p, &value);
}

/* One line without its newline (and without the CR of a CRLF). */
static int parse_line(Parser *p, const char *s, size_t n, unsigned *section_line) {
        char q[QUOTE_BUF];
        const char *eq;
        uint32_t c = 0;

        switch (text_check(s, n, true, &c)) {
        case TEXT_OK:
                break;
        case TEXT_NUL:
                return cause(p, "NUL byte in the line");
        case TEXT_CONTROL:
                return cause(p, "control character U+%04" PRIX32 " in the line", c);
        case TEXT_NOT_UTF8:
                return cause(p, "the line is not valid UTF-8");
        }

        s = trim(s, &n);
        if (n == 0 || s[0] == '#' || s[0] == ';')
                return 0;

        if (s[0] == '[') {
                const char *name;
                size_t name_len;

                if (s[n - 1] != ']')
                        return cause(p, "section header %s lacks its closing ']'", quote_n(s, n, q));
                name_len = n - 2;
                name = trim(s + 1, &name_len);
                if (name_len != 2 || memcmp(name, "vm", 2) != 0)
                        return cause(p, "unknown section %s: a .vm file has one section, [vm]",
                                     quote_n(s, n, q));
                if (*section_line > 0)
                        return cause(p, "[vm] is given twice (first at line %u)", *section_line);
                *section_line = p->line;
                return 0;
        }

        eq = memchr(s, '=', n);
        if (!eq)
                return cause(p, "expected KEY = VALUE, [vm] or a comment, not %s", quote_n(s, n, q));
        if (*section_line == 0) {
                size_t key_len = (size_t) (eq - s);
                const char *key = trim(s, &key_len);
                return cause(p, "key %s before the [vm] section", quote_n(key, key_len, q));
        }
        return parse_key_value(p, s, n, eq);
}

static int parse_full(const char *file, const char *expect_name, const char *text, size_t size, VmDef **ret,
                      Error *e) {
        _cleanup_(vm_def_freep) VmDef *d = NULL;
        Parser p = { .expect_name = expect_name };
        unsigned section_line = 0;
        size_t pos = 0;
        int r;

        assert(file);
        assert(text || size == 0);
        assert(ret);

        if (size > VM_DEF_FILE_MAX)
                return fail(e, -EFBIG, "%s: the file has %zu bytes, more than %u", file, size,
                            VM_DEF_FILE_MAX);

        d = vm_def_new();
        if (!d)
                return -ENOMEM;
        p.def = d;

        /* A UTF-8 byte order mark, as some editors write, is not part of the first line. */
        if (size >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
                pos = 3;

        while (pos < size) {
                const char *line = text + pos, *nl = memchr(line, '\n', size - pos);
                size_t n;

                p.line++;
                if (!nl)
                        return fail(
                                e, -EINVAL,
                                "%s:%u: the last line has no newline at its end (the file may be cut short)",
                                file, p.line);
                n = (size_t) (nl - line);
                pos += n + 1;
                if (n > 0 && line[n - 1] == '\r')
                        n--;

                r = parse_line(&p, line, n, &section_line);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return fail(e, r, "%s:%u: %s", file, p.line, p.cause);
        }

        if (section_line == 0)
                return fail(e, -EINVAL, "%s:%u: no [vm] section", file, p.line > 0 ? p.line : 1);
        for (int k = 0; k < _KEY_MAX; k++)
                if (keys[k].required && p.key_line[k] == 0)
                        return fail(e, -EINVAL, "%s:%u: [vm] lacks the required key %s", file, section_line,
                                    keys[k].name);
        /* What no single line says: without a kernel, what boots (named at the kernel's line) */
        if (!d->kernel && (d->initrd || d->cmdline))
                return fail(
                        e, -EINVAL,
                        "%s:%u: kernel: empty, but %s needs a kernel (without one the VM boots its first disk "
                        "through its firmware)",
                        file, p.key_line[KEY_KERNEL], d->initrd ? "an initrd" : "a kernel command line");
        if (!d->kernel && !d->firmware && d->n_disks == 0)
                return fail(e, -EINVAL, "%s:%u: kernel: empty, and there is no firmware and no disk to boot",
                            file, p.key_line[KEY_KERNEL]);

        *ret = TAKE_PTR(d);
        return 0;
}

int vm_def_parse(const char *file_name, const char *text, size_t size, VmDef **ret, Error *e) {
        return parse_full(file_name, NULL, text, size, ret, e);
}

/* --- formatting -------------------------------------------------------------------------------------- */

typedef struct TextBuf {
        char *s;
        size_t len, allocated;
        bool oom;
} TextBuf;

static void text_add(TextBuf *b, const char *s, size_t n) {
        if (b->oom)
                return;
        if (b->allocated - b->len <= n) {
                size_t want = b->allocated > 0 ? b->allocated : 1024;
                char *p;

                while (want - b->len <= n)
                        want *= 2;
                p = realloc(b->s, want);
                if (!p) {
                        b->oom = true;
                        return;
                }
                b->s = p;
                b->allocated = want;
        }
        memcpy(b->s + b->len, s, n);
        b->len += n;
        b->s[b->len] = '\0';
}

static void text_add_line(TextBuf *b, const char *key, const char *value) {
        text_add(b, key, strlen(key));
        text_add(b, " = ", 3);
        text_add(b, value, strlen(value));
        text_add(b, "\n", 1);
}

int vm_def_format(const VmDef *d, char **ret_text) {
        TextBuf b = {};
        char num[32];
        int r;

        assert(d);
        assert(ret_text);

        r = vm_def_validate(d, NULL);
        if (r < 0)
                return r;

        /* The order of the keys table, kernel last: a required key at the end makes any prefix of the
         * file incomplete. */
        text_add(&b, header_comment, strlen(header_comment));
        text_add(&b, "[vm]\n", 5);
        text_add_line(&b, "name", d->name);
        (void) snprintf(num, sizeof(num), "%016" PRIx64, d->id);
        text_add_line(&b, "id", num);
        text_add_line(&b, "backend", d->backend);
        if (d->hypervisor[0] != '\0')
                text_add_line(&b, "hypervisor", d->hypervisor);
        (void) snprintf(num, sizeof(num), "%u", d->cpus);
        text_add_line(&b, "cpus", num);
        (void) snprintf(num, sizeof(num), "%" PRIu64, d->memory_mib);
        text_add_line(&b, "memory", num);
        for (size_t i = 0; i < d->n_disks; i++)
                text_add_line(&b, "disk", d->disks[i]);
        for (size_t i = 0; i < d->n_ports; i++) {
                char s[PORT_FORWARD_STRING_MAX];

                port_forward_format(&d->ports[i], s);
                text_add_line(&b, "port", s);
        }
        if (d->initrd)
                text_add_line(&b, "initrd", d->initrd);
        if (d->cmdline)
                text_add_line(&b, "cmdline", d->cmdline);
        if (d->firmware)
                text_add_line(&b, "firmware", d->firmware);
        text_add_line(&b, "kernel", d->kernel ? d->kernel : ""); /* "": boots from disk, but always there */

        if (b.oom) {
                free(b.s);
                return -ENOMEM;
        }
        *ret_text = b.s;
        return 0;
}

/* --- files ------------------------------------------------------------------------------------------- */

static void file_names(const char *name, char file[static VM_DEF_FILE_NAME_MAX],
                       char tmp[static VM_DEF_FILE_NAME_MAX]) {
        (void) snprintf(file, VM_DEF_FILE_NAME_MAX, "%s" VM_DEF_SUFFIX, name);
        (void) snprintf(tmp, VM_DEF_FILE_NAME_MAX, "%s" VM_DEF_TMP_SUFFIX, name);
}

int vm_def_save_text(int dir_fd, const char *name, const char *text, unsigned flags, const FsOps *ops) {
        _cleanup_close_ int fd = -EBADF;
        char file[VM_DEF_FILE_NAME_MAX], tmp[VM_DEF_FILE_NAME_MAX];
        bool sync = !(flags & VM_DEF_SAVE_NO_SYNC);
        int r;

        assert(text);

        if (!ops)
                ops = &fs_ops_default;
        if (!vm_name_valid(name))
                return -EINVAL;
        file_names(name, file, tmp);

        /* Left by a save that crashed half-way: never ours to keep. */
        if (unlinkat(dir_fd, tmp, 0) < 0 && errno != ENOENT)
                return negative_errno();
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return negative_errno();

        /* 0600 whatever the umask */
        r = fchmod(fd, 0600) < 0 ? negative_errno() : 0;
        if (r >= 0)
                r = fs_pwrite_full(ops, fd, text, strlen(text), 0);
        if (r >= 0 && sync)
                r = ops->fdatasync(ops->userdata, fd);
        if (r >= 0)
                r = ops->renameat(ops->userdata, dir_fd, tmp, dir_fd, file);
        if (r < 0) {
                (void) unlinkat(dir_fd, tmp, 0);
                return r;
        }

        return sync ? ops->fsync(ops->userdata, dir_fd) : 0;
}

int vm_def_save(int dir_fd, const VmDef *d, const FsOps *ops) {
        _cleanup_free_ char *text = NULL;
        int r;

        assert(d);

        r = vm_def_format(d, &text);
        if (r < 0)
                return r;
        return vm_def_save_text(dir_fd, d->name, text, 0, ops);
}

int vm_def_restore(int dir_fd, const char *name, const char *text, const FsOps *ops) {
        _cleanup_free_ char *have = NULL;
        _cleanup_close_ int fd = -EBADF;
        char file[VM_DEF_FILE_NAME_MAX], tmp[VM_DEF_FILE_NAME_MAX];
        struct stat st;
        size_t size = 0, want = strlen(text);
        int r;

        if (!vm_name_valid(name))
                return -EINVAL;
        file_names(name, file, tmp);

        fd = openat(dir_fd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && errno != ENOENT)
                return errno == ELOOP ? 0 : negative_errno(); /* a symbolic link: not ours to replace */
        if (fd >= 0) {
                if (fstat(fd, &st) < 0)
                        return negative_errno();
                if (!S_ISREG(st.st_mode))
                        return 0;
                r = fs_read_all(fd, VM_DEF_FILE_MAX, (void **) &have, &size);
                if (r == -EFBIG)
                        return 0; /* longer than the journal's text: not a cut-short copy of it */
                if (r < 0)
                        return r;
                /* Whole: nothing to do. Different, and not merely short: an administrator's edit, which
                 * wins (it takes effect at a restart, chvm-agentd(8)). */
                bool torn = memchr(have, '\0', size) || (size < want && memcmp(have, text, size) == 0);
                if (!torn)
                        return 0;
        }
        r = vm_def_save_text(dir_fd, name, text, 0, ops);
        return r < 0 ? r : 1;
}

int vm_def_load(int dir_fd, const char *name, VmDef **ret, Error *e) {
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        char file[VM_DEF_FILE_NAME_MAX], tmp[VM_DEF_FILE_NAME_MAX], q[QUOTE_BUF];
        struct stat st;
        size_t size;
        int r;

        assert(name);
        assert(ret);

        if (!vm_name_valid(name)) {
                quote(name, q);
                /* the file name as the message's subject, without the quotes */
                return fail(e, -EINVAL, "%.*s" VM_DEF_SUFFIX ": %s is not a VM name (" VM_NAME_RULE ")",
                            (int) strlen(q) - 2, q + 1, q);
        }
        file_names(name, file, tmp);

        fd = openat(dir_fd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP)
                        return fail(e, -EINVAL, "%s: is a symbolic link, not a regular file", file);
                return fail(e, r, "%s: %s", file, strerror(-r));
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return fail(e, r, "%s: %s", file, strerror(-r));
        }
        if (!S_ISREG(st.st_mode))
                return fail(e, -EINVAL, "%s: is not a regular file", file);

        r = fs_read_all(fd, VM_DEF_FILE_MAX, (void **) &text, &size);
        if (r == -EFBIG)
                return fail(e, r, "%s: the file has more than %u bytes", file, VM_DEF_FILE_MAX);
        if (r < 0)
                return fail(e, r, "%s: %s", file, strerror(-r));

        return parse_full(file, name, text, size, ret, e);
}

int vm_def_remove(int dir_fd, const char *name, const FsOps *ops) {
        char file[VM_DEF_FILE_NAME_MAX], tmp[VM_DEF_FILE_NAME_MAX];

        assert(name);

        if (!ops)
                ops = &fs_ops_default;
        if (!vm_name_valid(name))
                return -EINVAL;
        file_names(name, file, tmp);

        (void) unlinkat(dir_fd, tmp, 0);
        if (unlinkat(dir_fd, file, 0) < 0)
                return negative_errno();
        return ops->fsync(ops->userdata, dir_fd);
}

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

typedef struct NameList {
        char **names;
        size_t n, allocated;
} NameList;

static void name_list_done(NameList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->names[i]);
        free(l->names);
}

static int name_list_add(NameList *l, const char *s, size_t n) {
        if (l->n == l->allocated) {
                size_t want = l->allocated > 0 ? l->allocated * 2 : 16;
                char **p = reallocarray(l->names, want, sizeof(char *));

                if (!p)
                        return -ENOMEM;
                l->names = p;
                l->allocated = want;
        }
        l->names[l->n] = strndup(s, n);
        if (!l->names[l->n])
                return -ENOMEM;
        l->n++;
        return 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* NAME.vm, not hidden. */
static bool def_file_stem(const char *file, size_t *ret_len) {
        size_t n = strlen(file), suffix = strlen(VM_DEF_SUFFIX);

        if (file[0] == '.' || n <= suffix || strcmp(file + n - suffix, VM_DEF_SUFFIX) != 0)
                return false;
        *ret_len = n - suffix;
        return true;
}

int vm_def_load_all(int dir_fd, VmDefCallback cb, void *userdata) {
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_(name_list_done) NameList list = {};
        int fd, r;

        assert(cb);

        /* Our own open file description, so that reading the directory moves nobody else's offset. */
        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        dir = fdopendir(fd);
        if (!dir) {
                r = negative_errno();
                (void) safe_close(fd);
                return r;
        }

        for (;;) {
                struct dirent *de;
                size_t n;

                errno = 0;
                de = readdir(dir);
                if (!de) {
                        if (errno != 0)
                                return negative_errno();
                        break;
                }
                if (!def_file_stem(de->d_name, &n))
                        continue;
                r = name_list_add(&list, de->d_name, n);
                if (r < 0)
                        return r;
        }
        if (list.n > 0)
                qsort(list.names, list.n, sizeof(char *), compare_names);

        for (size_t i = 0; i < list.n; i++) {
                _cleanup_(vm_def_freep) VmDef *d = NULL;
                Error err = {};

                r = vm_def_load(dir_fd, list.names[i], &d, &err);
                if (r == -ENOENT) /* removed since we read the directory */
                        continue;
                if (r == -ENOMEM)
                        return r;
                r = r < 0 ? cb(list.names[i], NULL, error_message(&err), userdata)
                          : cb(list.names[i], TAKE_PTR(d), NULL, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}
