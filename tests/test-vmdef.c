/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* VM definitions (state/vmdef.c): the .vm format both ways, every kind of error with its exact message,
 * cut-short and corrupted files, the port syntax, and saving, loading and removing files, including saves
 * that fail half-way. */

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/vmdef.h"
#include "tests/journal-test-util.h"
#include "util/vmname.h"

static Error err;

/* --- helpers ------------------------------------------------------------------------------------------ */

static char *xstrdup(const char *s) {
        char *p = strdup(s);
        cr_assert_not_null(p);
        return p;
}

/* A string of n bytes: prefix, then filler cycling through printable characters (no white space at the
 * ends, so the parser keeps it as it is). */
static char *long_string(const char *prefix, size_t n) {
        static const char filler[] = "abcdefghijklmnopqrstuvwxyz0123456789=;#.,_-+/";
        size_t p = strlen(prefix);
        char *s = malloc(n + 1);

        cr_assert_not_null(s);
        cr_assert_leq(p, n);
        memcpy(s, prefix, p);
        for (size_t i = p; i < n; i++)
                s[i] = filler[i % (sizeof(filler) - 1)];
        s[n] = '\0';
        return s;
}

static VmDef *minimal_def(void) {
        VmDef *d = vm_def_new();

        cr_assert_not_null(d);
        strcpy(d->name, "web");
        d->id = 0x4d2;
        strcpy(d->backend, "local");
        d->kernel = xstrdup("/boot/vmlinuz");
        return d;
}

/* Every field, each at its limit: 16 disks, 64 ports, a 2047-byte cmdline, 4095-byte paths. */
static VmDef *full_def(void) {
        VmDef *d = vm_def_new();

        cr_assert_not_null(d);
        strcpy(d->name, "a-very-long-vm-name-of-32-bytes0");
        cr_assert_eq(strlen(d->name), 32);
        d->id = UINT64_MAX;
        strcpy(d->backend, "backend_name-with-32-bytes-0123_");
        cr_assert_eq(strlen(d->backend), 32);
        strcpy(d->hypervisor, "qemu");
        d->kernel = long_string("/boot/", 4095);
        d->initrd = long_string("/boot/initrd-", 4095);
        d->cmdline = long_string("console=hvc0 quiet ", 2047);
        d->cpus = 512;
        d->memory_mib = UINT64_C(1) << 24;
        for (size_t i = 0; i < VM_DEF_MAX_DISKS; i++) {
                char prefix[32];
                snprintf(prefix, sizeof(prefix), "/srv/disk%02zu/", i);
                d->disks[i] = long_string(prefix, i == 0 ? 4095 : 40 + i);
        }
        d->n_disks = VM_DEF_MAX_DISKS;
        for (size_t i = 0; i < VM_DEF_MAX_PORTS; i++)
                d->ports[i] = (PortForward){ .proto = i % 2 ? IPPROTO_UDP : IPPROTO_TCP,
                                             .host_port = (uint16_t) (i < 2 ? 65535 : 1000 + i / 2),
                                             .guest_port = (uint16_t) (i == 0 ? 1 : 65535 - i) };
        d->n_ports = VM_DEF_MAX_PORTS;
        return d;
}

/* Every kind of field, but small: the cut-short and corrupted-byte sweeps parse it thousands of times. */
static VmDef *small_def(void) {
        VmDef *d = minimal_def();

        strcpy(d->hypervisor, "cloud-hypervisor");
        d->initrd = xstrdup("/boot/initrd.img");
        d->cmdline = xstrdup("root=/dev/vda rw quiet");
        d->cpus = 4;
        d->memory_mib = 2048;
        d->disks[0] = xstrdup("/srv/web/root.img");
        d->disks[1] = xstrdup("/srv/web/data.img");
        d->n_disks = 2;
        d->ports[0] = (PortForward){ IPPROTO_TCP, 8080, 80 };
        d->ports[1] = (PortForward){ IPPROTO_UDP, 5353, 53 };
        d->n_ports = 2;
        return d;
}

static int parse(const char *text, VmDef **ret) {
        error_clear(&err);
        return vm_def_parse("web.vm", text, strlen(text), ret, &err);
}

/* parse(format(d)) equals d, and formatting that again gives the same bytes. */
static void assert_round_trip(const VmDef *d) {
        _cleanup_free_ char *text = NULL, *again = NULL;
        _cleanup_(vm_def_freep) VmDef *back = NULL;

        cr_assert_eq(vm_def_validate(d, &err), 0, "%s", error_message(&err));
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert_eq(parse(text, &back), 0, "%s", error_message(&err));
        cr_assert(vm_def_equal(d, back), "parse(format(d)) differs from d");
        cr_assert_eq(vm_def_format(back, &again), 0);
        cr_assert_str_eq(again, text, "formatting is not byte-stable");
}

/* The base of the error cases: six lines, so the line under test is line 7. */
#define BASE                      \
        "# test\n"                \
        "[vm]\n"                  \
        "name = web\n"            \
        "id = 00000000000004d2\n" \
        "backend = local\n"       \
        "kernel = /boot/vmlinuz\n"

static void assert_parse_error(const char *text, size_t size, int expect_r, const char *expect) {
        VmDef *d = (VmDef *) 0x1; /* must stay untouched */

        error_clear(&err);
        cr_assert_eq(vm_def_parse("web.vm", text, size, &d, &err), expect_r, "for %s", expect);
        cr_assert_eq(d, (VmDef *) 0x1, "nothing partial may be returned");
        cr_assert_str_eq(error_message(&err), expect);
}

static void assert_error(const char *text, const char *expect) {
        assert_parse_error(text, strlen(text), -EINVAL, expect);
}

/* --- parsing ------------------------------------------------------------------------------------------ */

TestSuite(vmdef);

Test(vmdef, new_has_the_defaults) {
        _cleanup_(vm_def_freep) VmDef *d = vm_def_new();

        cr_assert_not_null(d);
        cr_assert_eq(d->cpus, 1);
        cr_assert_eq(d->memory_mib, 256);
        cr_assert_str_eq(d->hypervisor, "");
        cr_assert_null(d->kernel);
        cr_assert_null(d->initrd);
        cr_assert_null(d->cmdline);
        cr_assert_eq(d->n_disks, 0);
        cr_assert_eq(d->n_ports, 0);
        cr_assert_null(vm_def_free(NULL));
        d = vm_def_free(d);
        cr_assert_null(d);
}

Test(vmdef, required_keys_only_gives_defaults) {
        _cleanup_(vm_def_freep) VmDef *d = NULL;

        cr_assert_eq(parse(BASE, &d), 0, "%s", error_message(&err));
        cr_assert_str_eq(d->name, "web");
        cr_assert_eq(d->id, 0x4d2);
        cr_assert_str_eq(d->backend, "local");
        cr_assert_str_eq(d->kernel, "/boot/vmlinuz");
        cr_assert_str_eq(d->hypervisor, "", "absent hypervisor: the agent's default");
        cr_assert_null(d->initrd);
        cr_assert_null(d->cmdline);
        cr_assert_eq(d->cpus, 1);
        cr_assert_eq(d->memory_mib, 256);
        cr_assert_eq(d->n_disks, 0);
        cr_assert_eq(d->n_ports, 0);
        cr_assert_eq(vm_def_validate(d, &err), 0, "%s", error_message(&err));
}

/* What an admin may write: comments of both kinds, blank lines, indentation, tabs around '=', CRLF line
 * ends, a BOM; repeated disk and port in order; empty optional values; a cmdline with '#', ';' and '='. */
Test(vmdef, hand_written_file) {
        _cleanup_(vm_def_freep) VmDef *d = NULL;
        const char *text = "\xef\xbb\xbf# my web server\n"
                           "; another comment\n"
                           "\n"
                           "   [ vm ]   \n"
                           "\tname\t=\tweb\n"
                           "id=00000000deadbeef\r\n"
                           "  backend =   bridge  \n"
                           "hypervisor =\n"
                           "initrd =\n"
                           "   # indented comment\n"
                           "cmdline =   root=/dev/vda  # not a comment; nor this = x   \n"
                           "kernel = /boot/vmlinuz-6.1 with space\n"
                           "cpus = 0002\n"
                           "memory = 32\n"
                           "disk = /b.img\n"
                           "port = 8080:80\n"
                           "disk = /a.img\n"
                           "port = 8080:80/udp\n"
                           "port = 1:65535/tcp\n"
                           "\n";

        cr_assert_eq(parse(text, &d), 0, "%s", error_message(&err));
        cr_assert_str_eq(d->name, "web");
        cr_assert_eq(d->id, 0xdeadbeef);
        cr_assert_str_eq(d->backend, "bridge");
        cr_assert_str_eq(d->hypervisor, "");
        cr_assert_null(d->initrd, "an empty initrd is none");
        cr_assert_str_eq(d->cmdline, "root=/dev/vda  # not a comment; nor this = x");
        cr_assert_str_eq(d->kernel, "/boot/vmlinuz-6.1 with space");
        cr_assert_eq(d->cpus, 2);
        cr_assert_eq(d->memory_mib, 32);
        cr_assert_eq(d->n_disks, 2);
        cr_assert_str_eq(d->disks[0], "/b.img", "disks keep the file's order");
        cr_assert_str_eq(d->disks[1], "/a.img");
        cr_assert_eq(d->n_ports, 3);
        cr_assert_eq(d->ports[0].proto, IPPROTO_TCP, "tcp is the default");
        cr_assert_eq(d->ports[0].host_port, 8080);
        cr_assert_eq(d->ports[0].guest_port, 80);
        cr_assert_eq(d->ports[1].proto, IPPROTO_UDP, "the same host port is fine for another protocol");
        cr_assert_eq(d->ports[2].host_port, 1);
        cr_assert_eq(d->ports[2].guest_port, 65535);
        assert_round_trip(d);
}

Test(vmdef, hypervisor_kinds) {
        _cleanup_(vm_def_freep) VmDef *a = NULL, *b = NULL;

        cr_assert_eq(parse(BASE "hypervisor = qemu\n", &a), 0, "%s", error_message(&err));
        cr_assert_str_eq(a->hypervisor, "qemu");
        cr_assert_eq(parse(BASE "hypervisor = cloud-hypervisor\n", &b), 0, "%s", error_message(&err));
        cr_assert_str_eq(b->hypervisor, "cloud-hypervisor");
}

/* No line-length limit: a 100 KiB comment line, and values far beyond inih's 200 bytes. */
Test(vmdef, long_lines) {
        _cleanup_(vm_def_freep) VmDef *d = NULL;
        _cleanup_free_ char *comment = long_string("# ", 100 * 1024), *text = NULL;
        _cleanup_free_ char *path = long_string("/srv/", 4095), *cmdline = long_string("x", 2047);

        cr_assert_gt(asprintf(&text,
                              "%s\n[vm]\nname = web\nid = 00000000000004d2\nbackend = local\n"
                              "kernel = %s\ncmdline = %s\n",
                              comment, path, cmdline),
                     0);
        cr_assert_eq(parse(text, &d), 0, "%s", error_message(&err));
        cr_assert_str_eq(d->kernel, path);
        cr_assert_str_eq(d->cmdline, cmdline);
}

Test(vmdef, round_trip_minimal) {
        _cleanup_(vm_def_freep) VmDef *d = minimal_def();
        _cleanup_free_ char *text = NULL;

        assert_round_trip(d);
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert_str_eq(text, "# VM definition, written by chvm-agentd.\n"
                               "[vm]\n"
                               "name = web\n"
                               "id = 00000000000004d2\n"
                               "backend = local\n"
                               "cpus = 1\n"
                               "memory = 256\n"
                               "kernel = /boot/vmlinuz\n");
}

Test(vmdef, round_trip_small) {
        _cleanup_(vm_def_freep) VmDef *d = small_def();
        _cleanup_free_ char *text = NULL;

        assert_round_trip(d);
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert_str_eq(text, "# VM definition, written by chvm-agentd.\n"
                               "[vm]\n"
                               "name = web\n"
                               "id = 00000000000004d2\n"
                               "backend = local\n"
                               "hypervisor = cloud-hypervisor\n"
                               "cpus = 4\n"
                               "memory = 2048\n"
                               "disk = /srv/web/root.img\n"
                               "disk = /srv/web/data.img\n"
                               "port = 8080:80/tcp\n"
                               "port = 5353:53/udp\n"
                               "initrd = /boot/initrd.img\n"
                               "cmdline = root=/dev/vda rw quiet\n"
                               "kernel = /boot/vmlinuz\n");
}

/* No kernel: the key stays (empty) and last, so a file cut short is still refused; firmware before it. */
Test(vmdef, round_trip_disk_boot) {
        _cleanup_(vm_def_freep) VmDef *d = minimal_def();
        _cleanup_free_ char *text = NULL;

        free(d->kernel);
        d->kernel = NULL;
        d->disks[0] = xstrdup("/srv/web/root.img");
        d->n_disks = 1;
        assert_round_trip(d);
        d->firmware = xstrdup("/usr/share/ovmf/OVMF.fd");
        assert_round_trip(d);
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert_str_eq(text, "# VM definition, written by chvm-agentd.\n"
                               "[vm]\n"
                               "name = web\n"
                               "id = 00000000000004d2\n"
                               "backend = local\n"
                               "cpus = 1\n"
                               "memory = 256\n"
                               "disk = /srv/web/root.img\n"
                               "firmware = /usr/share/ovmf/OVMF.fd\n"
                               "kernel = \n");
        /* every prefix of it is refused */
        for (size_t n = 0; n < strlen(text); n++) {
                VmDef *p = NULL;
                cr_assert_lt(vm_def_parse("web.vm", text, n, &p, NULL), 0, "prefix of %zu bytes accepted",
                             n);
        }
}

Test(vmdef, round_trip_every_field_at_its_limit) {
        _cleanup_(vm_def_freep) VmDef *d = full_def();
        _cleanup_free_ char *text = NULL;

        assert_round_trip(d);
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert(strncmp(text, "# ", 2) == 0 && strstr(text, "chvm-agentd"), "a header comment first");
        cr_assert_eq(strlen(d->kernel), 4095);
        cr_assert_eq(strlen(d->cmdline), 2047);
}

/* UTF-8 (not control characters) is kept: paths may be in any language. */
Test(vmdef, round_trip_utf8) {
        _cleanup_(vm_def_freep) VmDef *d = minimal_def();

        free(d->kernel);
        d->kernel = xstrdup("/srv/café/vmlinuz-\xe2\x82\xac-\xf0\x9f\x90\xa7");
        d->cmdline = xstrdup("hostname=\xc3\xa9t\xc3\xa9");
        assert_round_trip(d);
}

Test(vmdef, errors_of_values) {
        assert_error(BASE "cpus = 0\n", "web.vm:7: cpus: \"0\" is not a number in 1..512");
        assert_error(BASE "cpus = 513\n", "web.vm:7: cpus: \"513\" is not a number in 1..512");
        assert_error(BASE "cpus = -1\n", "web.vm:7: cpus: \"-1\" is not a number in 1..512");
        assert_error(BASE "cpus = 2x\n", "web.vm:7: cpus: \"2x\" is not a number in 1..512");
        assert_error(BASE "cpus =\n", "web.vm:7: cpus: \"\" is not a number in 1..512");
        assert_error(BASE "cpus = 184467440737095516160\n",
                     "web.vm:7: cpus: \"184467440737095516160\" is not a number in 1..512");
        assert_error(BASE "memory = 31\n",
                     "web.vm:7: memory: \"31\" is not a number of MiB in 32..16777216");
        assert_error(BASE "memory = 16777217\n",
                     "web.vm:7: memory: \"16777217\" is not a number of MiB in 32..16777216");
        assert_error(BASE "memory = 1G\n",
                     "web.vm:7: memory: \"1G\" is not a number of MiB in 32..16777216");
        assert_error(BASE "hypervisor = xen\n",
                     "web.vm:7: hypervisor: \"xen\" is not cloud-hypervisor or qemu");
        assert_error(BASE "hypervisor = QEMU\n",
                     "web.vm:7: hypervisor: \"QEMU\" is not cloud-hypervisor or qemu");
        assert_error(BASE "initrd = boot/initrd\n",
                     "web.vm:7: initrd: \"boot/initrd\" is not an absolute path");
        assert_error(BASE "disk = disk.img\n", "web.vm:7: disk: \"disk.img\" is not an absolute path");
        assert_error(BASE "disk =\n", "web.vm:7: disk: \"\" is not an absolute path");
        assert_error(BASE "cmdline = a\tb\n", "web.vm:7: cmdline: \"a?b\" contains control characters");
        assert_error(BASE "disk = /a\t b\n", "web.vm:7: disk: \"/a? b\" contains control characters");
        assert_error(BASE "port = 8080:0\n", "web.vm:7: port \"8080:0\": guest port 0 is not in 1..65535");
        assert_error(
                BASE "port = 127.0.0.1:8080:80\n",
                "web.vm:7: port \"127.0.0.1:8080:80\": host address binding (ADDR:) is not supported: the "
                "forward applies to every local address");

        assert_error("[vm]\nname = Web\n",
                     "web.vm:2: name: \"Web\" is not a VM name (a lowercase letter, then up to 31 lowercase "
                     "letters, digits or '-')");
        assert_error("[vm]\nname = a23456789012345678901234567890123\n",
                     "web.vm:2: name: \"a23456789012345678901234567890123\" is not a VM name (a lowercase "
                     "letter, then up to 31 lowercase letters, digits or '-')");
        assert_error("[vm]\nid = 4d2\n", "web.vm:2: id: \"4d2\" is not 16 lowercase hex digits");
        assert_error("[vm]\nid = 00000000000004D2\n",
                     "web.vm:2: id: \"00000000000004D2\" is not 16 lowercase hex digits");
        assert_error("[vm]\nid = 0x000000000004d2\n",
                     "web.vm:2: id: \"0x000000000004d2\" is not 16 lowercase hex digits");
        assert_error("[vm]\nid = 0000000000000000\n", "web.vm:2: id: must not be zero");
        assert_error("[vm]\nbackend = Local\n",
                     "web.vm:2: backend: \"Local\" is not a backend name (1..32 of a-z, 0-9, '_' and '-')");
        assert_error("[vm]\nbackend = a23456789012345678901234567890123\n",
                     "web.vm:2: backend: \"a23456789012345678901234567890123\" is not a backend name (1..32 "
                     "of a-z, 0-9, '_' and '-')");
        assert_error("[vm]\nbackend =\n",
                     "web.vm:2: backend: \"\" is not a backend name (1..32 of a-z, 0-9, '_' and '-')");
        assert_error("[vm]\nfirmware = ovmf.fd\n",
                     "web.vm:2: firmware: \"ovmf.fd\" is not an absolute path");
        /* found by fuzz/fuzz-vmdef: an empty kernel with nothing else to boot was read, then not valid */
        assert_error("[vm]\nname = web\nid = 00000000000004d2\nbackend = local\nkernel =\n",
                     "web.vm:5: kernel: empty, and there is no firmware and no disk to boot");
        assert_error(
                "[vm]\nname = web\nid = 00000000000004d2\nbackend = local\ninitrd = /i\nkernel =\n",
                "web.vm:6: kernel: empty, but an initrd needs a kernel (without one the VM boots its first "
                "disk through its firmware)");
        assert_error("[vm]\nkernel = vmlinuz\n", "web.vm:2: kernel: \"vmlinuz\" is not an absolute path");
}

Test(vmdef, errors_of_lengths) {
        _cleanup_free_ char *path = long_string("/", 4096), *cmdline = long_string("q", 2048);
        _cleanup_free_ char *t1 = NULL, *t2 = NULL, *e1 = NULL, *e2 = NULL;

        cr_assert_gt(asprintf(&t1, BASE "disk = %s\n", path), 0);
        cr_assert_gt(
                asprintf(&e1, "web.vm:7: disk: \"%.64s...\" (4096 bytes) is longer than 4095 bytes", path),
                0);
        assert_error(t1, e1);
        cr_assert_gt(asprintf(&t2, BASE "cmdline = %s\n", cmdline), 0);
        cr_assert_gt(asprintf(&e2, "web.vm:7: cmdline: \"%.64s...\" (2048 bytes) is longer than 2047 bytes",
                              cmdline),
                     0);
        assert_error(t2, e2);
}

Test(vmdef, errors_of_structure) {
        assert_error(BASE "cpu = 2\n", "web.vm:7: unknown key \"cpu\"");
        assert_error(BASE "Name = web\n", "web.vm:7: unknown key \"Name\"");
        assert_error(BASE "kernel = /boot/other\n", "web.vm:7: kernel is given twice (first at line 6)");
        assert_error(BASE "name = web\n", "web.vm:7: name is given twice (first at line 3)");
        assert_error(BASE "cpus = 1\ncpus = 1\n", "web.vm:8: cpus is given twice (first at line 7)");
        assert_error(BASE "cmdline =\ncmdline = quiet\n",
                     "web.vm:8: cmdline is given twice (first at line 7)");
        assert_error(BASE "garbage\n", "web.vm:7: expected KEY = VALUE, [vm] or a comment, not \"garbage\"");
        assert_error(BASE "= x\n", "web.vm:7: expected KEY = VALUE, but the key before '=' is missing");
        assert_error(BASE "[vm]\n", "web.vm:7: [vm] is given twice (first at line 2)");
        assert_error(BASE "[net]\n",
                     "web.vm:7: unknown section \"[net]\": a .vm file has one section, [vm]");
        assert_error(BASE "[vm\n", "web.vm:7: section header \"[vm\" lacks its closing ']'");
        assert_error("name = web\n[vm]\n", "web.vm:1: key \"name\" before the [vm] section");
        assert_error("", "web.vm:1: no [vm] section");
        assert_error("# only\n; comments\n", "web.vm:2: no [vm] section");
        assert_error("# a VM\n[vm]\nname = web\nid = 00000000000004d2\nbackend = local\n",
                     "web.vm:2: [vm] lacks the required key kernel");
        assert_error("[vm]\nkernel = /k\n", "web.vm:1: [vm] lacks the required key name");
        assert_error("[vm]\nname = web\nkernel = /k\nbackend = x\n",
                     "web.vm:1: [vm] lacks the required key id");
        assert_error("[vm]\nname = web\nkernel = /k\nid = 00000000000004d2\n",
                     "web.vm:1: [vm] lacks the required key backend");
        assert_error(BASE "disk = /a\ndisk = /b\ndisk = /a\n",
                     "web.vm:9: disk: \"/a\" is given twice (first at line 7)");
        assert_error(
                BASE "port = 8080:80\nport = 8080:80/udp\nport = 8080:81/tcp\n",
                "web.vm:9: port \"8080:81/tcp\": host port 8080/tcp is already forwarded to guest port 80 "
                "(line 7)");
}

Test(vmdef, errors_of_counts) {
        char text[8192], expect[128];
        size_t o;

        o = (size_t) snprintf(text, sizeof(text), "%s", BASE);
        for (unsigned i = 0; i <= VM_DEF_MAX_DISKS; i++)
                o += (size_t) snprintf(text + o, sizeof(text) - o, "disk = /d%u\n", i);
        snprintf(expect, sizeof(expect), "web.vm:%u: disk: more than 16 disks", 7 + VM_DEF_MAX_DISKS);
        assert_error(text, expect);

        o = (size_t) snprintf(text, sizeof(text), "%s", BASE);
        for (unsigned i = 0; i <= VM_DEF_MAX_PORTS; i++)
                o += (size_t) snprintf(text + o, sizeof(text) - o, "port = %u:22\n", 2000 + i);
        snprintf(expect, sizeof(expect), "web.vm:%u: port: more than 64 ports", 7 + VM_DEF_MAX_PORTS);
        assert_error(text, expect);
}

Test(vmdef, errors_of_bytes) {
        static const char nul[] = BASE "cmdline = a\0b\n";

        assert_parse_error(nul, sizeof(nul) - 1, -EINVAL, "web.vm:7: NUL byte in the line");
        assert_error(BASE "cmdline = \x1b[1m\n", "web.vm:7: control character U+001B in the line");
        assert_error(BASE "cmdline = a\rb\n", "web.vm:7: control character U+000D in the line");
        assert_error(BASE "# \x7f\n", "web.vm:7: control character U+007F in the line");
        assert_error(BASE "cmdline = \xc2\x85\n", "web.vm:7: control character U+0085 in the line");
        assert_error(BASE "disk = /x\xff\n", "web.vm:7: the line is not valid UTF-8");
        assert_error(BASE "disk = /x\xc3\n", "web.vm:7: the line is not valid UTF-8");
        assert_error(BASE "disk = /\xc0\xaf\n", "web.vm:7: the line is not valid UTF-8"); /* overlong */
        assert_error(BASE "disk = /\xed\xa0\x80\n", "web.vm:7: the line is not valid UTF-8"); /* surrogate */
        assert_error(BASE "disk = /\xf4\x90\x80\x80\n",
                     "web.vm:7: the line is not valid UTF-8"); /* > U+10FFFF */
        assert_error(BASE "cpus = 2",
                     "web.vm:7: the last line has no newline at its end (the file may be cut "
                     "short)");
}

Test(vmdef, files_over_1_mib_refused) {
        size_t size = VM_DEF_FILE_MAX + 1;
        _cleanup_free_ char *text = malloc(size);
        _cleanup_(vm_def_freep) VmDef *d = NULL;

        cr_assert_not_null(text);
        memset(text, '\n', size);
        memcpy(text, BASE, strlen(BASE));
        assert_parse_error(text, size, -EFBIG, "web.vm: the file has 1048577 bytes, more than 1048576");
        /* exactly the limit is fine */
        cr_assert_eq(vm_def_parse("web.vm", text, size - 1, &d, &err), 0, "%s", error_message(&err));
}

/* Every proper prefix of a file the agent wrote is refused, never read as a shorter definition; the whole
 * file gives the definition back. */
static void sweep_prefixes(const VmDef *d) {
        _cleanup_free_ char *text = NULL;
        size_t size;

        cr_assert_eq(vm_def_format(d, &text), 0);
        size = strlen(text);
        for (size_t n = 0; n <= size; n++) {
                _cleanup_(vm_def_freep) VmDef *back = NULL;
                int r;

                error_clear(&err);
                r = vm_def_parse("web.vm", text, n, &back, &err);
                if (n == size) {
                        cr_assert_eq(r, 0, "%s", error_message(&err));
                        cr_assert(vm_def_equal(d, back));
                        continue;
                }
                cr_assert_eq(r, -EINVAL, "a prefix of %zu of %zu bytes was accepted", n, size);
                cr_assert_null(back);
                cr_assert(strncmp(error_message(&err), "web.vm:", 7) == 0, "%s", error_message(&err));
        }
}

Test(vmdef, every_prefix_of_a_written_file_is_refused) {
        _cleanup_(vm_def_freep) VmDef *small = small_def(), *minimal = minimal_def(), *full = full_def();

        sweep_prefixes(minimal);
        sweep_prefixes(small);
        sweep_prefixes(full);
}

/* Any byte replaced by any of a set of troublesome ones: either refused with a FILE:LINE message, or
 * parsed into a definition that validates and survives a round trip. */
Test(vmdef, corrupted_byte_sweep) {
        static const uint8_t bytes[] = { 0x00, 0x01, '\t', '\n', '\r', ' ',  '#',  ';',  '=',  '[',
                                         ']',  ':',  '/',  '0',  '9',  'a',  'f',  'g',  'z',  'Z',
                                         '-',  '_',  0x7f, 0x80, 0xa9, 0xc3, 0xe2, 0xef, 0xf0, 0xff };
        _cleanup_(vm_def_freep) VmDef *d = small_def();
        _cleanup_free_ char *text = NULL;
        unsigned accepted = 0, refused = 0, changed = 0;
        size_t size;

        cr_assert_eq(vm_def_format(d, &text), 0);
        size = strlen(text);
        for (size_t i = 0; i < size; i++)
                for (size_t b = 0; b < sizeof(bytes); b++) {
                        _cleanup_(vm_def_freep) VmDef *x = NULL;
                        char saved = text[i];
                        int r;

                        if ((uint8_t) saved == bytes[b])
                                continue;
                        text[i] = (char) bytes[b];
                        error_clear(&err);
                        r = vm_def_parse("web.vm", text, size, &x, &err);
                        text[i] = saved;
                        if (r < 0) {
                                cr_assert_eq(r, -EINVAL);
                                cr_assert_null(x);
                                cr_assert(strncmp(error_message(&err), "web.vm:", 7) == 0 &&
                                                  error_message(&err)[7] >= '1' &&
                                                  error_message(&err)[7] <= '9',
                                          "%s", error_message(&err));
                                refused++;
                                continue;
                        }
                        accepted++;
                        if (!vm_def_equal(d, x))
                                changed++;
                        assert_round_trip(x);
                }
        /* both outcomes happen, and some corruptions give another valid definition (a digit of the id,
         * a letter of a path): the sweep really reaches the accepting path */
        cr_assert_gt(refused, 0);
        cr_assert_gt(accepted, 0);
        cr_assert_gt(changed, 0);
}

/* --- ports -------------------------------------------------------------------------------------------- */

static void assert_port(const char *s, uint8_t proto, uint16_t host, uint16_t guest, const char *formatted) {
        PortForward p = {};
        char buf[PORT_FORWARD_STRING_MAX];

        error_clear(&err);
        cr_assert_eq(port_forward_parse(s, &p, &err), 0, "%s: %s", s, error_message(&err));
        cr_assert_eq(p.proto, proto, "%s", s);
        cr_assert_eq(p.host_port, host, "%s", s);
        cr_assert_eq(p.guest_port, guest, "%s", s);
        port_forward_format(&p, buf);
        cr_assert_str_eq(buf, formatted);
}

static void assert_port_error(const char *s, const char *expect) {
        PortForward p = { .proto = 99 };

        error_clear(&err);
        cr_assert_eq(port_forward_parse(s, &p, &err), -EINVAL, "%s", s);
        cr_assert_eq(p.proto, 99, "nothing written on failure");
        cr_assert_str_eq(error_message(&err), expect);
        cr_assert_eq(port_forward_parse(s, &p, NULL), -EINVAL, "no message buffer is fine");
}

Test(vmdef, port_forward_parse_and_format) {
        assert_port("8080:80", IPPROTO_TCP, 8080, 80, "8080:80/tcp");
        assert_port("8080:80/tcp", IPPROTO_TCP, 8080, 80, "8080:80/tcp");
        assert_port("53:5353/udp", IPPROTO_UDP, 53, 5353, "53:5353/udp");
        assert_port("1:1", IPPROTO_TCP, 1, 1, "1:1/tcp");
        assert_port("65535:65535/udp", IPPROTO_UDP, 65535, 65535, "65535:65535/udp");
        cr_assert_eq(strlen("65535:65535/udp") + 1, PORT_FORWARD_STRING_MAX);

        /* every formatted forward reads back as itself */
        for (unsigned host = 1; host <= 65535; host += 257)
                for (unsigned proto = 0; proto < 2; proto++) {
                        PortForward p = { proto ? IPPROTO_UDP : IPPROTO_TCP, (uint16_t) host,
                                          (uint16_t) (65536 - host) },
                                    q;
                        char buf[PORT_FORWARD_STRING_MAX];

                        port_forward_format(&p, buf);
                        cr_assert_eq(port_forward_parse(buf, &q, &err), 0, "%s", error_message(&err));
                        cr_assert(q.proto == p.proto && q.host_port == p.host_port &&
                                  q.guest_port == p.guest_port);
                }
}

Test(vmdef, port_forward_errors) {
        assert_port_error("8080:0", "port \"8080:0\": guest port 0 is not in 1..65535");
        assert_port_error("0:80", "port \"0:80\": host port 0 is not in 1..65535");
        assert_port_error("70000:80", "port \"70000:80\": host port 70000 is not in 1..65535");
        assert_port_error(
                "80:123456789012345678901234567890",
                "port \"80:123456789012345678901234567890\": guest port 12345678901234567890... is not in "
                "1..65535");
        assert_port_error("http:80", "port \"http:80\": host port \"http\" is not a number");
        assert_port_error("+80:80", "port \"+80:80\": host port \"+80\" is not a number");
        assert_port_error(" 80:80", "port \" 80:80\": host port \" 80\" is not a number");
        assert_port_error(":80", "port \":80\": host port is missing");
        assert_port_error("80:", "port \"80:\": guest port is missing");
        assert_port_error("8080", "port \"8080\": expected HOSTPORT:GUESTPORT[/tcp|/udp]");
        assert_port_error("", "port \"\": expected HOSTPORT:GUESTPORT[/tcp|/udp]");
        assert_port_error("8080:80/sctp", "port \"8080:80/sctp\": protocol \"sctp\" is not tcp or udp");
        assert_port_error("8080:80/TCP", "port \"8080:80/TCP\": protocol \"TCP\" is not tcp or udp");
        assert_port_error("8080:80/", "port \"8080:80/\": protocol \"\" is not tcp or udp");
        assert_port_error(
                "127.0.0.1:8080:80",
                "port \"127.0.0.1:8080:80\": host address binding (ADDR:) is not supported: the forward "
                "applies to every local address");
        assert_port_error("0.0.0.0:8080:80/udp",
                          "port \"0.0.0.0:8080:80/udp\": host address binding (ADDR:) is not supported: the "
                          "forward applies to every local address");
        assert_port_error(
                "[::1]:8080:80",
                "port \"[::1]:8080:80\": host address binding (ADDR:) is not supported: the forward "
                "applies to every local address");
        assert_port_error("80:\x1b", "port \"80:?\" contains control characters");
}

/* --- validate, copy, equal ------------------------------------------------------------------------------
 */

static void assert_invalid(VmDef *d, const char *expect) {
        _cleanup_free_ char *text = NULL;

        error_clear(&err);
        cr_assert_eq(vm_def_validate(d, &err), -EINVAL, "for %s", expect);
        cr_assert_str_eq(error_message(&err), expect);
        cr_assert_eq(vm_def_validate(d, NULL), -EINVAL);
        cr_assert_eq(vm_def_format(d, &text), -EINVAL, "an invalid definition is never written");
        cr_assert_null(text);
}

/* Runs one mutation on a fresh small definition. */
#define INVALID(mutation, expect)                               \
        do {                                                    \
                _cleanup_(vm_def_freep) VmDef *d = small_def(); \
                mutation;                                       \
                assert_invalid(d, expect);                      \
        } while (0)

static void set_str(char **field, const char *value) {
        free(*field);
        *field = value ? xstrdup(value) : NULL;
}

Test(vmdef, validate_messages) {
        INVALID(set_str(&d->kernel, "rel/path"), "VM web: kernel \"rel/path\" is not an absolute path");
        INVALID(set_str(&d->kernel, NULL),
                "VM web: an initrd needs a kernel (without one the VM boots its first disk through its firmware)");
        INVALID((set_str(&d->kernel, NULL), set_str(&d->initrd, NULL)),
                "VM web: a kernel command line needs a kernel (without one the VM boots its first disk through "
                "its firmware)");
        INVALID((set_str(&d->kernel, NULL), set_str(&d->initrd, NULL), set_str(&d->cmdline, NULL),
                 d->n_disks = 0),
                "VM web: nothing to boot: no kernel, no firmware and no disk");
        INVALID(set_str(&d->firmware, "fw.fd"), "VM web: firmware \"fw.fd\" is not an absolute path");
        INVALID(set_str(&d->kernel, "/boot/vmlinuz "),
                "VM web: kernel \"/boot/vmlinuz \" begins or ends with white space, which a .vm file cannot keep");
        INVALID(set_str(&d->kernel, "/boot/\nvmlinuz"),
                "VM web: kernel \"/boot/?vmlinuz\" contains control characters");
        INVALID(set_str(&d->kernel, "/boot/\xff"), "VM web: kernel \"/boot/?\" is not valid UTF-8");
        INVALID(set_str(&d->initrd, ""), "VM web: initrd \"\" is not an absolute path");
        INVALID(set_str(&d->cmdline, ""), "VM web: cmdline is empty (NULL means none)");
        INVALID(set_str(&d->cmdline, " quiet"),
                "VM web: cmdline \" quiet\" begins or ends with white space, which a .vm file cannot keep");
        INVALID(set_str(&d->cmdline, "quiet\t"), "VM web: cmdline \"quiet?\" contains control characters");
        INVALID(strcpy(d->name, "Web"),
                "VM name \"Web\" is not valid (a lowercase letter, then up to 31 lowercase letters, digits or '-')");
        INVALID(strcpy(d->name, ""),
                "VM name \"\" is not valid (a lowercase letter, then up to 31 lowercase letters, digits or '-')");
        INVALID(memset(d->name, 'a', sizeof(d->name)),
                "VM name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is not valid (a lowercase letter, then up to 31 "
                "lowercase letters, digits or '-')");
        INVALID(d->id = 0, "VM web: id must not be zero");
        INVALID(strcpy(d->backend, "a b"),
                "VM web: backend \"a b\" is not a backend name (1..32 of a-z, 0-9, '_' and '-')");
        INVALID(memset(d->backend, 'a', sizeof(d->backend)), "VM web: backend is not NUL-terminated");
        INVALID(strcpy(d->hypervisor, "xen"), "VM web: hypervisor \"xen\" is not cloud-hypervisor or qemu");
        INVALID(d->cpus = 0, "VM web: cpus 0 is not in 1..512");
        INVALID(d->cpus = 513, "VM web: cpus 513 is not in 1..512");
        INVALID(d->memory_mib = 31, "VM web: memory 31 MiB is not in 32..16777216 MiB");
        INVALID(d->n_disks = 17, "VM web: 17 disks, more than 16");
        INVALID(set_str(&d->disks[1], "/srv/web/root.img"),
                "VM web: disk \"/srv/web/root.img\" is given twice");
        INVALID(set_str(&d->disks[1], NULL), "VM web: disk is missing");
        INVALID(set_str(&d->disks[1], "data.img"), "VM web: disk \"data.img\" is not an absolute path");
        INVALID(d->n_ports = 65, "VM web: 65 ports, more than 64");
        INVALID(d->ports[1].proto = IPPROTO_ICMP,
                "VM web: port 5353:53 has protocol 1, which is neither tcp nor udp");
        INVALID(d->ports[1].host_port = 0, "VM web: port \"0:53/udp\": host port 0 is not in 1..65535");
        INVALID(d->ports[1].guest_port = 0, "VM web: port \"5353:0/udp\": guest port 0 is not in 1..65535");
        INVALID((d->ports[1] = (PortForward){ IPPROTO_TCP, 8080, 81 }),
                "VM web: port \"8080:81/tcp\": host port 8080/tcp is already forwarded to guest port 80");

        /* the parser's limits hold in memory too */
        _cleanup_free_ char *path = long_string("/", 4096), *cmdline = long_string("q", 2048);
        _cleanup_free_ char *e1 = NULL, *e2 = NULL;
        cr_assert_gt(asprintf(&e1, "VM web: disk \"%.64s...\" (4096 bytes) is longer than 4095 bytes", path),
                     0);
        INVALID(set_str(&d->disks[0], path), e1);
        cr_assert_gt(asprintf(&e2, "VM web: cmdline \"%.64s...\" (2048 bytes) is longer than 2047 bytes",
                              cmdline),
                     0);
        INVALID(set_str(&d->cmdline, cmdline), e2);
}

Test(vmdef, copy_is_deep_and_equal) {
        _cleanup_(vm_def_freep) VmDef *d = full_def(), *c = NULL;

        cr_assert_eq(vm_def_copy(d, &c), 0);
        cr_assert(vm_def_equal(d, c));
        cr_assert_neq(c->kernel, d->kernel);
        cr_assert_neq(c->disks[15], d->disks[15]);
        c->disks[15][1] = 'X';
        cr_assert_not(vm_def_equal(d, c), "a changed copy leaves the original alone");
        cr_assert_eq(d->disks[15][1], 's');
}

Test(vmdef, equal_sees_every_field) {
        _cleanup_(vm_def_freep) VmDef *a = small_def();

        cr_assert(vm_def_equal(a, a));
        cr_assert_not(vm_def_equal(a, NULL));
        cr_assert(vm_def_equal(NULL, NULL));
        for (int field = 0; field < 14; field++) {
                _cleanup_(vm_def_freep) VmDef *b = small_def();

                cr_assert(vm_def_equal(a, b));
                switch (field) {
                case 0:
                        b->name[0] = 'x';
                        break;
                case 1:
                        b->id++;
                        break;
                case 2:
                        b->backend[0] = 'x';
                        break;
                case 3:
                        b->hypervisor[0] = '\0';
                        break;
                case 4:
                        b->kernel[1] = 'x';
                        break;
                case 5:
                        set_str(&b->initrd, NULL);
                        break;
                case 6:
                        set_str(&b->cmdline, "other");
                        break;
                case 7:
                        b->cpus++;
                        break;
                case 8:
                        b->memory_mib++;
                        break;
                case 9:
                        b->n_disks--;
                        break;
                case 10:
                        b->disks[1][1] = 'x';
                        break;
                case 11:
                        b->n_ports--;
                        break;
                case 12:
                        b->ports[1].proto = IPPROTO_TCP;
                        break;
                case 13:
                        b->ports[1].guest_port++;
                        break;
                }
                cr_assert_not(vm_def_equal(a, b), "field %d", field);
        }
}

Test(vmdef, vm_name_rules) {
        cr_assert(vm_name_valid("a"));
        cr_assert(vm_name_valid("web-01"));
        cr_assert(vm_name_valid("a2345678901234567890123456789012"));
        cr_assert_not(vm_name_valid("a23456789012345678901234567890123"), "33 bytes");
        cr_assert_not(vm_name_valid(""));
        cr_assert_not(vm_name_valid(NULL));
        cr_assert_not(vm_name_valid("1web"));
        cr_assert_not(vm_name_valid("-web"));
        cr_assert_not(vm_name_valid("web_1"));
        cr_assert_not(vm_name_valid("Web"));
        cr_assert_not(vm_name_valid("web.vm"));
        cr_assert_not(vm_name_valid("a/b"));
}

/* --- files -------------------------------------------------------------------------------------------- */

static char *dir;
static int dir_fd = -EBADF;

static void setup_dir(void) {
        dir = test_mkdtemp();
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        cr_assert_geq(dir_fd, 0);
}

static void teardown_dir(void) {
        dir_fd = safe_close(dir_fd);
        test_rm_rf(dir);
        free(dir);
        dir = NULL;
}

TestSuite(vmdef_files, .init = setup_dir, .fini = teardown_dir);

static char *read_text(const char *name) {
        void *buf = NULL;
        size_t size = 0;
        char *s;

        cr_assert_eq(test_read_file(dir, name, &buf, &size), 0, "%s", name);
        s = realloc(buf, size + 1);
        cr_assert_not_null(s);
        s[size] = '\0';
        return s;
}

static void write_text(const char *name, const char *text) {
        cr_assert_eq(test_write_file(dir, name, text, strlen(text)), 0);
}

static size_t count_files(void) {
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        cr_assert_not_null(d);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

Test(vmdef_files, save_load_remove) {
        _cleanup_(vm_def_freep) VmDef *d = small_def(), *back = NULL, *again = NULL;
        _cleanup_free_ char *on_disk = NULL, *expect = NULL;
        struct stat st;
        mode_t old_umask;

        /* the file is 0600 whatever the umask */
        old_umask = umask(0277);
        cr_assert_eq(vm_def_save(dir_fd, d, NULL), 0);
        umask(old_umask);
        cr_assert_eq(fstatat(dir_fd, "web.vm", &st, AT_SYMLINK_NOFOLLOW), 0);
        cr_assert(S_ISREG(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0600);
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"));
        cr_assert_eq(count_files(), 1);

        cr_assert_eq(vm_def_format(d, &expect), 0);
        on_disk = read_text("web.vm");
        cr_assert_str_eq(on_disk, expect);

        cr_assert_eq(vm_def_load(dir_fd, "web", &back, &err), 0, "%s", error_message(&err));
        cr_assert(vm_def_equal(d, back));

        /* saving again replaces the file; a stale tmp from a crashed save is no obstacle */
        write_text("web.vm.tmp", "half a file");
        d->cpus = 8;
        cr_assert_eq(vm_def_save(dir_fd, d, NULL), 0);
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"));
        cr_assert_eq(vm_def_load(dir_fd, "web", &again, &err), 0, "%s", error_message(&err));
        cr_assert_eq(again->cpus, 8);

        cr_assert_eq(vm_def_remove(dir_fd, "web", NULL), 0);
        cr_assert_not(test_file_exists(dir, "web.vm"));
        cr_assert_eq(count_files(), 0);
        cr_assert_eq(vm_def_remove(dir_fd, "web", NULL), -ENOENT);
        cr_assert_eq(vm_def_remove(dir_fd, "../web", NULL), -EINVAL);

        VmDef *none = (VmDef *) 0x1;
        cr_assert_eq(vm_def_load(dir_fd, "web", &none, &err), -ENOENT);
        cr_assert_str_eq(error_message(&err), "web.vm: No such file or directory");
        cr_assert_eq(none, (VmDef *) 0x1);

        /* an invalid definition is never written */
        d->cpus = 0;
        cr_assert_eq(vm_def_save(dir_fd, d, NULL), -EINVAL);
        cr_assert_eq(count_files(), 0);
}

Test(vmdef_files, load_refusals) {
        _cleanup_(vm_def_freep) VmDef *api = small_def();
        _cleanup_free_ char *text = NULL, *big = NULL;
        VmDef *d = NULL;

        strcpy(api->name, "api");
        cr_assert_eq(vm_def_format(api, &text), 0);
        write_text("web.vm", text);
        cr_assert_eq(vm_def_load(dir_fd, "web", &d, &err), -EINVAL);
        cr_assert_str_eq(error_message(&err), "web.vm:3: name: \"api\" does not match the file name web.vm");
        cr_assert_null(d);

        cr_assert_eq(vm_def_load(dir_fd, "Web", &d, &err), -EINVAL);
        cr_assert_str_eq(error_message(&err),
                         "Web.vm: \"Web\" is not a VM name (a lowercase letter, then up to 31 lowercase "
                         "letters, digits or '-')");
        cr_assert_eq(vm_def_load(dir_fd, "../etc/x", &d, &err), -EINVAL);

        cr_assert_eq(symlinkat("web.vm", dir_fd, "link.vm"), 0);
        cr_assert_eq(vm_def_load(dir_fd, "link", &d, &err), -EINVAL);
        cr_assert_str_eq(error_message(&err), "link.vm: is a symbolic link, not a regular file");

        cr_assert_eq(mkdirat(dir_fd, "sub.vm", 0700), 0);
        cr_assert_eq(vm_def_load(dir_fd, "sub", &d, &err), -EINVAL);
        cr_assert_str_eq(error_message(&err), "sub.vm: is not a regular file");

        big = malloc(VM_DEF_FILE_MAX + 2);
        cr_assert_not_null(big);
        memset(big, '\n', VM_DEF_FILE_MAX + 1);
        big[VM_DEF_FILE_MAX + 1] = '\0';
        write_text("big.vm", big);
        cr_assert_eq(vm_def_load(dir_fd, "big", &d, &err), -EFBIG);
        cr_assert_str_eq(error_message(&err), "big.vm: the file has more than 1048576 bytes");
        cr_assert_null(d);
}

typedef struct FailFs {
        TestFs fs; /* pwrite and fdatasync failures */
        bool fail_rename, fail_dir_fsync;
} FailFs;

static int failfs_renameat(void *userdata, int a, const char *an, int b, const char *bn) {
        FailFs *f = userdata;
        if (f->fail_rename)
                return -EIO;
        return fs_ops_default.renameat(NULL, a, an, b, bn);
}

static int failfs_fsync(void *userdata, int fd) {
        FailFs *f = userdata;
        if (f->fail_dir_fsync)
                return -EIO;
        return fs_ops_default.fsync(NULL, fd);
}

static FsOps failfs_ops(FailFs *f) {
        FsOps ops = f->fs.ops;

        ops.renameat = failfs_renameat;
        ops.fsync = failfs_fsync;
        ops.userdata = f;
        return ops;
}

static ssize_t failfs_pwrite(void *userdata, int fd, const void *buf, size_t size, off_t offset) {
        FailFs *f = userdata;
        return f->fs.ops.pwrite(&f->fs, fd, buf, size, offset);
}

static int failfs_fdatasync(void *userdata, int fd) {
        FailFs *f = userdata;
        return f->fs.ops.fdatasync(&f->fs, fd);
}

/* A save that fails before its rename: the old file is what it was, and no tmp is left. */
static void assert_failed_save_keeps_old(FailFs *f, int expect_r) {
        _cleanup_(vm_def_freep) VmDef *old = small_def(), *new = small_def(), *back = NULL;
        _cleanup_free_ char *old_text = NULL, *after = NULL;
        FsOps ops;

        cr_assert_eq(vm_def_save(dir_fd, old, NULL), 0);
        old_text = read_text("web.vm");

        ops = failfs_ops(f);
        ops.pwrite = failfs_pwrite;
        ops.fdatasync = failfs_fdatasync;
        set_str(&new->cmdline, "a new command line, long enough that half of the file is a real write");
        new->n_ports = 0;
        cr_assert_eq(vm_def_save(dir_fd, new, &ops), expect_r);

        after = read_text("web.vm");
        cr_assert_str_eq(after, old_text, "the old file must be intact");
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"), "no tmp file may be left");
        cr_assert_eq(count_files(), 1);
        cr_assert_eq(vm_def_load(dir_fd, "web", &back, &err), 0, "%s", error_message(&err));
        cr_assert(vm_def_equal(back, old));
}

Test(vmdef_files, save_fdatasync_eio_keeps_old_file) {
        FailFs f;

        test_fs_init(&f.fs);
        f.fail_rename = f.fail_dir_fsync = false;
        f.fs.fail_fdatasync_at = 1;
        f.fs.fail_errno = EIO;
        assert_failed_save_keeps_old(&f, -EIO);
        cr_assert_eq(f.fs.fdatasync_calls, 1);
}

Test(vmdef_files, save_write_enospc_keeps_old_file) {
        FailFs f;

        test_fs_init(&f.fs);
        f.fail_rename = f.fail_dir_fsync = false;
        f.fs.fail_pwrite_at = 1;
        f.fs.short_pwrite = 40; /* part of the tmp file is written, then the disk is full */
        f.fs.fail_errno = ENOSPC;
        assert_failed_save_keeps_old(&f, -ENOSPC);
        cr_assert_eq(f.fs.pwrite_calls, 2);
        cr_assert_eq(f.fs.fdatasync_calls, 0, "no sync after a failed write");
}

Test(vmdef_files, save_rename_failure_keeps_old_file) {
        FailFs f;

        test_fs_init(&f.fs);
        f.fail_rename = true;
        f.fail_dir_fsync = false;
        assert_failed_save_keeps_old(&f, -EIO);
}

/* After the rename there is no going back: a failed directory fsync is reported, the new file is there. */
Test(vmdef_files, save_dir_fsync_failure_is_reported) {
        _cleanup_(vm_def_freep) VmDef *d = small_def(), *back = NULL;
        FailFs f;
        FsOps ops;

        test_fs_init(&f.fs);
        f.fail_rename = false;
        f.fail_dir_fsync = true;
        ops = failfs_ops(&f);
        ops.pwrite = failfs_pwrite;
        ops.fdatasync = failfs_fdatasync;
        cr_assert_eq(vm_def_save(dir_fd, d, &ops), -EIO);
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"));
        cr_assert_eq(vm_def_load(dir_fd, "web", &back, &err), 0, "%s", error_message(&err));
        cr_assert(vm_def_equal(back, d));
        cr_assert_eq(vm_def_remove(dir_fd, "web", &ops), -EIO, "remove reports its fsync too");
        cr_assert_not(test_file_exists(dir, "web.vm"));
}

typedef struct Seen {
        char names[16][64];
        char errors[16][512];
        bool loaded[16];
        size_t n;
        size_t stop_at; /* return -ECANCELED at this call (1-based); 0: never */
} Seen;

static int collect(const char *name, VmDef *def, const char *error, void *userdata) {
        Seen *s = userdata;

        cr_assert_lt(s->n, 16);
        cr_assert((def == NULL) != (error == NULL), "exactly one of def and error");
        snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
        snprintf(s->errors[s->n], sizeof(s->errors[0]), "%s", error ? error : "");
        s->loaded[s->n] = def != NULL;
        if (def)
                cr_assert_str_eq(def->name, name);
        vm_def_free(def); /* ours */
        s->n++;
        return s->n == s->stop_at ? -ECANCELED : 0;
}

static void make_load_all_dir(void) {
        _cleanup_(vm_def_freep) VmDef *a = small_def(), *c = minimal_def();

        strcpy(a->name, "alpha");
        strcpy(c->name, "charlie");
        cr_assert_eq(vm_def_save(dir_fd, c, NULL), 0);
        cr_assert_eq(vm_def_save(dir_fd, a, NULL), 0);
        write_text("bravo.vm", "[vm]\nname = bravo\ncpus = 0\n");
        /* strays */
        write_text("alpha.vm.tmp", "junk");
        write_text("notes.txt", "junk");
        write_text(".hidden.vm", "junk");
        write_text(".vm", "junk");
        write_text("alpha.vm~", "junk");
        /* *.vm that cannot be loaded */
        write_text("Bad.vm", "junk");
        cr_assert_eq(mkdirat(dir_fd, "dir.vm", 0700), 0);
}

Test(vmdef_files, load_all_good_bad_and_stray) {
        Seen s = {};

        make_load_all_dir();
        cr_assert_eq(vm_def_load_all(dir_fd, collect, &s), 0);
        cr_assert_eq(s.n, 5);
        cr_assert_str_eq(s.names[0], "Bad");
        cr_assert_not(s.loaded[0]);
        cr_assert_str_eq(s.errors[0], "Bad.vm: \"Bad\" is not a VM name (a lowercase letter, then up to 31 "
                                      "lowercase letters, digits or '-')");
        cr_assert_str_eq(s.names[1], "alpha");
        cr_assert(s.loaded[1]);
        cr_assert_str_eq(s.names[2], "bravo");
        cr_assert_not(s.loaded[2]);
        cr_assert_str_eq(s.errors[2], "bravo.vm:3: cpus: \"0\" is not a number in 1..512");
        cr_assert_str_eq(s.names[3], "charlie");
        cr_assert(s.loaded[3]);
        cr_assert_str_eq(s.names[4], "dir");
        cr_assert_not(s.loaded[4]);
        cr_assert_str_eq(s.errors[4], "dir.vm: is not a regular file");
}

Test(vmdef_files, load_all_stops_when_the_callback_fails) {
        Seen s = { .stop_at = 2 };

        make_load_all_dir();
        cr_assert_eq(vm_def_load_all(dir_fd, collect, &s), -ECANCELED);
        cr_assert_eq(s.n, 2);
        cr_assert_str_eq(s.names[1], "alpha");
}

Test(vmdef_files, load_all_empty_dir) {
        Seen s = {};

        cr_assert_eq(vm_def_load_all(dir_fd, collect, &s), 0);
        cr_assert_eq(s.n, 0);
        cr_assert_eq(vm_def_load_all(-1, collect, &s), -EBADF);
}

/* The text rides in the journal's VM_DEFINE: the file then gets neither an fdatasync nor its folder an
 * fsync, and is still written whole under its name through the tmp file. */
Test(vmdef_files, save_text_without_sync) {
        _cleanup_(vm_def_freep) VmDef *d = small_def(), *back = NULL;
        _cleanup_free_ char *text = NULL, *on_disk = NULL;
        TestFs fs;

        test_fs_init(&fs);
        cr_assert_eq(vm_def_format(d, &text), 0);
        cr_assert_eq(vm_def_save_text(dir_fd, "web", text, VM_DEF_SAVE_NO_SYNC, &fs.ops), 0);
        cr_assert_eq(fs.fdatasync_calls, 0);
        cr_assert_eq(fs.fsync_calls, 0);
        cr_assert_eq(fs.rename_calls, 1);
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"));
        on_disk = read_text("web.vm");
        cr_assert_str_eq(on_disk, text);
        cr_assert_eq(vm_def_load(dir_fd, "web", &back, &err), 0, "%s", error_message(&err));
        cr_assert(vm_def_equal(d, back));

        /* without the flag: both syncs, as vm_def_save() */
        cr_assert_eq(vm_def_save_text(dir_fd, "web", text, 0, &fs.ops), 0);
        cr_assert_eq(fs.fdatasync_calls, 1);
        cr_assert_eq(fs.fsync_calls, 1);
        cr_assert_eq(vm_def_save_text(dir_fd, "../web", text, 0, &fs.ops), -EINVAL);
}

static void assert_restored(const char *state, const char *text, int expect) {
        TestFs fs;
        test_fs_init(&fs);
        int r = vm_def_restore(dir_fd, "web", text, &fs.ops);
        cr_assert_eq(r, expect, "%s: vm_def_restore() gave %d, not %d", state, r, expect);
        /* a restore is synced: it happens once, after a crash */
        cr_assert_eq(fs.fdatasync_calls, expect == 1 ? 1U : 0U, "%s", state);
        cr_assert_eq(fs.fsync_calls, expect == 1 ? 1U : 0U, "%s", state);
}

/* What a power loss can leave of a file written without a sync: nothing, an empty file, a part of it,
 * blocks of zeros. Each is written again from the journal's text; a whole file, or one an administrator
 * edited, is left alone. */
Test(vmdef_files, restore_from_the_journal_text) {
        _cleanup_(vm_def_freep) VmDef *d = small_def();
        _cleanup_free_ char *text = NULL;

        cr_assert_eq(vm_def_format(d, &text), 0);
        size_t n = strlen(text);

        assert_restored("missing", text, 1);
        char *s = read_text("web.vm");
        cr_assert_str_eq(s, text);
        free(s);

        assert_restored("whole", text, 0);

        write_text("web.vm", "");
        assert_restored("empty", text, 1);
        s = read_text("web.vm");
        cr_assert_str_eq(s, text);
        free(s);

        for (size_t cut = 1; cut < n; cut += 7) {
                cr_assert_eq(test_write_file(dir, "web.vm", text, cut), 0);
                assert_restored("cut short", text, 1);
                s = read_text("web.vm");
                cr_assert_str_eq(s, text, "cut at %zu", cut);
                free(s);
        }

        /* the right length, a block never written */
        char *zeros = strdup(text);
        cr_assert_not_null(zeros);
        memset(zeros + n / 2, 0, n - n / 2);
        cr_assert_eq(test_write_file(dir, "web.vm", zeros, n), 0);
        assert_restored("zeros", text, 1);
        free(zeros);

        /* an administrator's edit: longer, shorter but not a part of it, the same length */
        const char *edits[] = {
                "[vm]\nname = web\ncpus = 2\nmemory = 512\nkernel = /boot/vmlinuz\n# a long comment that makes it longer than the text, surely, and then some more of it to be safe\n",
                "[vm]\nname = web\n"
        };
        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                write_text("web.vm", edits[i]);
                assert_restored("edited", text, 0);
                s = read_text("web.vm");
                cr_assert_str_eq(s, edits[i]);
                free(s);
        }
        char *same_len = strdup(text);
        cr_assert_not_null(same_len);
        same_len[n - 2] = same_len[n - 2] == 'x' ? 'y' : 'x';
        write_text("web.vm", same_len);
        assert_restored("edited, same length", text, 0);
        free(same_len);

        /* not a regular file, or a symbolic link: not ours to replace */
        cr_assert_eq(unlinkat(dir_fd, "web.vm", 0), 0);
        cr_assert_eq(mkdirat(dir_fd, "web.vm", 0700), 0);
        assert_restored("a folder", text, 0);
        cr_assert_eq(unlinkat(dir_fd, "web.vm", AT_REMOVEDIR), 0);
        cr_assert_eq(symlinkat("/dev/null", dir_fd, "web.vm"), 0);
        assert_restored("a symbolic link", text, 0);
        cr_assert_eq(unlinkat(dir_fd, "web.vm", 0), 0);

        cr_assert_eq(vm_def_restore(dir_fd, "Bad", text, NULL), -EINVAL);

        /* a failed write is returned */
        TestFs fs;
        test_fs_init(&fs);
        fs.fail_fdatasync_at = 1;
        cr_assert_eq(vm_def_restore(dir_fd, "web", text, &fs.ops), -EIO);
        cr_assert_not(test_file_exists(dir, "web.vm"));
        cr_assert_not(test_file_exists(dir, "web.vm.tmp"));
}
