/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* cloud-hypervisor (v30 and later):
 *
 *   cloud-hypervisor --api-socket path=SOCK (--kernel K [--initramfs I] --cmdline CMDLINE | --firmware F)
 *                    --cpus boot=N
 *                    --memory size=NM [--disk path=D1 path=D2 ...] [--net tap=TAP,mac=MAC]
 *                    --serial file=LOG --console off
 *
 * --disk takes several values after one flag (the form cloud-hypervisor's own tests use); the next flag ends
 * the list. --api-socket, --disk, --net and --serial values go through cloud-hypervisor's option parser,
 * which splits on ',', treats '"' as quoting and '[' ']' as nesting, and trims blanks, with no escape: such
 * values are refused rather than mangled. --kernel, --initramfs, --cmdline and --firmware are taken
 * verbatim. The guest MAC is set with mac=; no ip=/mask= is passed, and cloud-hypervisor leaves the
 * addresses of a TAP that already exists alone. A guest poweroff ends the process (no --no-shutdown). */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/macro.h"
#include "vmm/cloud-hypervisor.h"

static int check_option_value(const char *what, const char *value, Error *e) {
        size_t n;
        const char *bad;

        if (!value)
                return 0;
        bad = strpbrk(value, ",\"[]");
        if (bad) {
                return vm_spec_invalid(
                        e,
                        "%s \"%s\" contains '%c', which cloud-hypervisor's option syntax cannot "
                        "carry",
                        what, value, *bad);
        }
        n = strlen(value);
        if (n > 0 && value[n - 1] == ' ') {
                return vm_spec_invalid(e, "%s \"%s\" ends in a blank, which cloud-hypervisor would strip",
                                       what, value);
        }
        return 0;
}

static int cloud_hypervisor_validate(const VmSpec *spec, Error *e) {
        int r;

        if (!spec->kernel && !spec->firmware) {
                return vm_spec_invalid(
                        e, "cloud-hypervisor boots a disk only through a firmware: give a kernel or "
                           "a firmware (rust-hypervisor-firmware, CLOUDHV.fd)");
        }

        r = check_option_value("API socket path", spec->api_socket, e);
        if (r < 0)
                return r;
        r = check_option_value("serial log path", spec->serial_log, e);
        if (r < 0)
                return r;
        r = check_option_value("TAP name", spec->tap, e);
        if (r < 0)
                return r;
        for (size_t i = 0; i < spec->n_disks; i++) {
                char what[32];

                (void) snprintf(what, sizeof(what), "disk %zu path", i);
                r = check_option_value(what, spec->disks[i], e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int cloud_hypervisor_build_argv(const VmSpec *spec, char ***ret_argv) {
        _cleanup_free_ char *cmdline = NULL;
        ArgvBuilder b = {};
        int r;

        r = vm_spec_validate(spec, HYPERVISOR_CLOUD_HYPERVISOR, NULL);
        if (r < 0)
                return r;
        r = spec->kernel ? vm_spec_kernel_cmdline(spec, &cmdline) : 0;
        if (r < 0)
                return r;

        argv_builder_add(&b, vm_spec_binary(spec, &cloud_hypervisor_vtable));
        argv_builder_add(&b, "--api-socket");
        argv_builder_addf(&b, "path=%s", spec->api_socket);
        if (spec->kernel) {
                argv_builder_add(&b, "--kernel");
                argv_builder_add(&b, spec->kernel);
                if (spec->initrd) {
                        argv_builder_add(&b, "--initramfs");
                        argv_builder_add(&b, spec->initrd);
                }
                /* starts with "console=", so it can never be mistaken for a flag */
                argv_builder_add(&b, "--cmdline");
                argv_builder_add(&b, cmdline);
        } else {
                /* --firmware takes the path verbatim, like --kernel */
                argv_builder_add(&b, "--firmware");
                argv_builder_add(&b, spec->firmware);
        }
        argv_builder_add(&b, "--cpus");
        argv_builder_addf(&b, "boot=%u", spec->cpus);
        argv_builder_add(&b, "--memory");
        argv_builder_addf(&b, "size=%" PRIu64 "M", spec->memory_mib);
        if (spec->n_disks > 0) {
                argv_builder_add(&b, "--disk");
                for (size_t i = 0; i < spec->n_disks; i++)
                        argv_builder_addf(&b, "path=%s", spec->disks[i]);
        }
        if (spec->tap) {
                char mac[18];

                vm_mac_to_string(spec->mac, mac);
                argv_builder_add(&b, "--net");
                argv_builder_addf(&b, "tap=%s,mac=%s", spec->tap, mac);
        }
        argv_builder_add(&b, "--serial");
        argv_builder_addf(&b, "file=%s", spec->serial_log);
        argv_builder_add(&b, "--console");
        argv_builder_add(&b, "off");

        return argv_builder_finish(&b, ret_argv);
}

/* The HTTP API's PUT vm.power-button; any 2xx is an answer. */
static const char *const ch_requests[] = { "PUT /api/v1/vm.power-button HTTP/1.1\r\nHost: localhost\r\n"
                                           "Content-Length: 0\r\n\r\n" };
static const char *const ch_expects[] = { "HTTP/1.1 2" };
static const HypervisorTalk ch_power_off = { ch_requests, ch_expects, ELEMENTSOF(ch_requests) };

/* Ready when GET vmm.ping answers 200: the VMM's API thread serves (the VM was made from the command line).
 */
static const char *const ch_ping_requests[] = { "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n" };
static const char *const ch_ping_expects[] = { "HTTP/1.1 200" };
static const HypervisorTalk ch_ready = { ch_ping_requests, ch_ping_expects, ELEMENTSOF(ch_ping_requests) };

const HypervisorVTable cloud_hypervisor_vtable = {
        .kind = HYPERVISOR_CLOUD_HYPERVISOR,
        .name = "cloud-hypervisor",
        .default_binary = "cloud-hypervisor",
        .validate = cloud_hypervisor_validate,
        .build_argv = cloud_hypervisor_build_argv,
        .power_off = &ch_power_off,
        .ready = &ch_ready,
};
