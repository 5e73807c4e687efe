/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the hypervisor argv builders (vmm/qemu.c, vmm/cloud-hypervisor.c, vmm/hypervisor.c).
 *
 * The input is split at NUL bytes into the strings of a VmSpec (name, kernel, initrd, cmdline, firmware,
 * up to 4 disks, tap, api socket, serial log; a missing one is NULL, an empty one NULL too where the field
 * may be unset), and its first bytes give the numbers (cpus, memory, address, prefix, MAC, what is set).
 * For both kinds:
 *   - vm_spec_validate() and the kind's build_argv() agree: what one refuses, the other refuses;
 *   - an argv that was built has no NULL inside, starts with the binary, and
 *   - (qemu) every -drive value reads back, undoubling ",,", as "file=" + the disk +
 * ",if=virtio,format=raw", and -name as "guest=" + the name: QEMU's option parser sees exactly our values;
 *   - (cloud-hypervisor) no value it passes through its option parser holds ',', '"', '[' or ']'.
 * Any violation aborts. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/hypervisor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(x)                                                                           \
        do {                                                                               \
                if (!(x)) {                                                                \
                        fprintf(stderr, "fuzz-argv: %s:%d: %s\n", __FILE__, __LINE__, #x); \
                        abort();                                                           \
                }                                                                          \
        } while (0)

#define N_STRINGS 13

/* The QEMU value undoubled up to its first single ',' (the end of our part), or NULL when it does not
 * begin with prefix. */
static char *qemu_value(const char *arg, const char *prefix, const char **ret_rest) {
        size_t lp = strlen(prefix);
        if (strncmp(arg, prefix, lp) != 0)
                return NULL;
        char *v = malloc(strlen(arg) + 1), *o = v;
        check(v);
        const char *p = arg + lp;
        for (; *p; p++) {
                if (*p == ',') {
                        if (p[1] != ',')
                                break;
                        p++;
                }
                *o++ = *p;
        }
        *o = '\0';
        *ret_rest = p;
        return v;
}

static void check_qemu(char **argv, const VmSpec *s) {
        size_t disk = 0;
        for (size_t i = 1; argv[i]; i++) {
                const char *rest;
                if (strcmp(argv[i - 1], "-drive") == 0) {
                        char *v = qemu_value(argv[i], "file=", &rest);
                        check(v && disk < s->n_disks);
                        check(strcmp(v, s->disks[disk]) == 0);
                        check(strcmp(rest, ",if=virtio,format=raw") == 0);
                        free(v);
                        disk++;
                } else if (strcmp(argv[i - 1], "-name") == 0) {
                        char *v = qemu_value(argv[i], "guest=", &rest);
                        check(v && strcmp(v, s->name) == 0 && rest[0] == '\0');
                        free(v);
                }
        }
        check(disk == s->n_disks);
}

static void check_ch(char **argv) {
        static const char *const parsed[] = { "--api-socket", "--serial", "--net", "--disk" };
        bool in_disks = false;
        for (size_t i = 1; argv[i]; i++) {
                bool via_parser = in_disks && argv[i][0] != '-';
                for (size_t k = 0; k < sizeof(parsed) / sizeof(parsed[0]); k++)
                        via_parser = via_parser || strcmp(argv[i - 1], parsed[k]) == 0;
                if (argv[i][0] == '-')
                        in_disks = strcmp(argv[i], "--disk") == 0;
                if (!via_parser)
                        continue;
                /* our own key=value separators: tap=T,mac=M is the one value with a comma we write */
                const char *v = argv[i];
                if (strncmp(v, "tap=", 4) == 0) {
                        const char *comma = strchr(v, ',');
                        check(comma && strncmp(comma, ",mac=", 5) == 0 && !strchr(comma + 1, ','));
                        check(!strpbrk(v + 4, "\"[]") && strcspn(v + 4, ",") == (size_t) (comma - v - 4));
                } else
                        check(!strpbrk(v, ",\"[]"));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 12)
                return 0;
        const uint8_t *nums = data;
        data += 12;
        size -= 12;
        char *buf = malloc(size + 1), *str[N_STRINGS] = {};
        check(buf);
        memcpy(buf, data, size);
        buf[size] = '\0';
        size_t n = 0;
        for (char *p = buf; n < N_STRINGS && p <= buf + size; p += strlen(p) + 1)
                str[n++] = p;

        const char *disks[4];
        size_t n_disks = 0;
        for (size_t i = 5; i < 9; i++)
                if (str[i] && str[i][0])
                        disks[n_disks++] = str[i];
        VmSpec s = {
                .name = str[0] ? str[0] : "",
                .kernel = str[1] && str[1][0] ? str[1] : NULL,
                .initrd = str[2] && str[2][0] ? str[2] : NULL,
                .cmdline = str[3] && str[3][0] ? str[3] : NULL,
                .firmware = str[4] && str[4][0] ? str[4] : NULL,
                .disks = disks,
                .n_disks = n_disks,
                .tap = str[9] && str[9][0] ? str[9] : NULL,
                .api_socket = str[10] ? str[10] : NULL,
                .serial_log = str[11] ? str[11] : NULL,
                .binary = str[12] && str[12][0] ? str[12] : NULL,
                .cpus = nums[0] % 4 == 0 ? nums[1] * 4u : nums[1],
                .memory_mib = nums[2] % 4 == 0 ? (uint64_t) nums[3] << (nums[4] % 48) : 32u + nums[3],
                .ip4 = nums[5] & 1 ? 0xc0a8c800u | nums[6] : 0,
                .gateway4 = nums[5] & 2 ? 0xc0a8c801u : 0,
                .prefixlen = nums[7] % 40,
                .mac = { nums[8] & 0xfe, nums[9], nums[10], 0, 0, nums[11] },
                .accel = nums[5] & 4   ? VMM_ACCEL_KVM
                         : nums[5] & 8 ? VMM_ACCEL_AUTO
                                       : VMM_ACCEL_TCG,
        };
        for (HypervisorKind k = 0; k < _HYPERVISOR_KIND_MAX; k++) {
                const HypervisorVTable *vt = hypervisor_vtable(k);
                Error err = {};
                char **argv = NULL;
                int v = vm_spec_validate(&s, k, &err);
                int b = vt->build_argv(&s, &argv);
                check((v >= 0) == (b >= 0));
                check(v >= 0 || (err.message[0] && err.code == v && err.kind == ERROR_INVALID));
                if (b < 0)
                        continue;
                check(argv && argv[0] && strcmp(argv[0], vm_spec_binary(&s, vt)) == 0);
                if (k == HYPERVISOR_QEMU)
                        check_qemu(argv, &s);
                else
                        check_ch(argv);
                strv_free(argv);
        }
        free(buf);
        return 0;
}
