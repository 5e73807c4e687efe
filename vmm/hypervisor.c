/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/ifname.h"
#include "util/string-table.h"
#include "vmm/cloud-hypervisor.h"
#include "vmm/hypervisor.h"
#include "vmm/qemu.h"

static const char *const vmm_accel_table[_VMM_ACCEL_MAX] = {
        [VMM_ACCEL_AUTO] = "auto",
        [VMM_ACCEL_KVM] = "kvm",
        [VMM_ACCEL_TCG] = "tcg",
};

DEFINE_STRING_TABLE(vmm_accel, VmmAccel, vmm_accel_table, _VMM_ACCEL_MAX)

bool vmm_kvm_device_usable(const char *path) {
        _cleanup_close_ int fd = -EBADF;

        fd = open(path ? path : VMM_KVM_DEVICE, O_RDWR | O_CLOEXEC | O_NOCTTY);
        return fd >= 0;
}

int vmm_accel_resolve(VmmAccel accel, bool kvm_works, const char *kvm_device, VmmAccel *ret) {
        assert(ret);

        switch (accel) {
        case VMM_ACCEL_KVM:
        case VMM_ACCEL_TCG:
                *ret = accel;
                return 0;
        case VMM_ACCEL_AUTO:
                *ret = kvm_works && vmm_kvm_device_usable(kvm_device) ? VMM_ACCEL_KVM : VMM_ACCEL_TCG;
                return 0;
        default:
                return -EINVAL;
        }
}

static const HypervisorVTable *const hypervisor_vtables[_HYPERVISOR_KIND_MAX] = {
        [HYPERVISOR_CLOUD_HYPERVISOR] = &cloud_hypervisor_vtable,
        [HYPERVISOR_QEMU] = &qemu_vtable,
};

const HypervisorVTable *hypervisor_vtable(HypervisorKind kind) {
        if (kind < 0 || kind >= _HYPERVISOR_KIND_MAX)
                return NULL;
        return hypervisor_vtables[kind];
}

const char *vm_spec_binary(const VmSpec *spec, const HypervisorVTable *vt) {
        return spec->binary ? spec->binary : vt->default_binary;
}

void vm_mac_to_string(const uint8_t mac[6], char ret[18]) {
        (void) snprintf(ret, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                        mac[5]);
}

int vm_spec_invalid(Error *e, const char *fmt, ...) {
        va_list ap;

        if (!e)
                return -EINVAL;
        va_start(ap, fmt);
        (void) error_setv(e, -EINVAL, ERROR_INVALID, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static bool has_control_chars(const char *s) {
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return true;
        return false;
}

/* The kernel's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or whitespace. */
static int check_path(const char *what, const char *path, bool optional, Error *e) {
        if (!path) {
                if (optional)
                        return 0;
                return vm_spec_invalid(e, "%s is missing", what);
        }
        if (path[0] != '/')
                return vm_spec_invalid(e, "%s \"%s\" is not an absolute path", what, path);
        if (has_control_chars(path))
                return vm_spec_invalid(e, "%s contains control characters", what);
        if (strlen(path) >= PATH_MAX)
                return vm_spec_invalid(e, "%s is longer than %d bytes", what, PATH_MAX - 1);
        return 0;
}

static uint32_t prefix_mask(uint8_t prefixlen) {
        return prefixlen == 0 ? 0 : UINT32_MAX << (32 - prefixlen);
}

static void ip4_to_string(uint32_t a, char ret[16]) {
        (void) snprintf(ret, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xffu, (a >> 8) & 0xffu, a & 0xffu);
}

static int check_network(const VmSpec *spec, Error *e) {
        char mac[18], ip[16], gw[16];
        uint32_t mask;

        if (!spec->tap) {
                if (spec->ip4 != 0)
                        return vm_spec_invalid(e, "a guest address needs a network device (no TAP given)");
                return 0;
        }
        if (!ifname_valid(spec->tap))
                return vm_spec_invalid(
                        e,
                        "TAP name \"%s\" is not a valid interface name (1..15 bytes, no '/', ':' or "
                        "whitespace)",
                        has_control_chars(spec->tap) ? "?" : spec->tap);

        vm_mac_to_string(spec->mac, mac);
        if (spec->mac[0] & 1)
                return vm_spec_invalid(e, "MAC %s is a multicast address", mac);
        if ((spec->mac[0] | spec->mac[1] | spec->mac[2] | spec->mac[3] | spec->mac[4] | spec->mac[5]) == 0)
                return vm_spec_invalid(e, "MAC %s is all zero", mac);

        if (spec->ip4 == 0)
                return 0;
        ip4_to_string(spec->ip4, ip);
        if (spec->prefixlen < 1 || spec->prefixlen > 32)
                return vm_spec_invalid(e, "prefix length %u of guest address %s out of range 1..32",
                                       spec->prefixlen, ip);
        if (spec->gateway4 == 0)
                return 0;
        ip4_to_string(spec->gateway4, gw);
        mask = prefix_mask(spec->prefixlen);
        if (spec->gateway4 == spec->ip4)
                return vm_spec_invalid(e, "gateway %s is the guest's own address", gw);
        if ((spec->gateway4 & mask) != (spec->ip4 & mask)) {
                char net[16];

                ip4_to_string(spec->ip4 & mask, net);
                return vm_spec_invalid(e, "gateway %s is outside the guest's network %s/%u", gw, net,
                                       spec->prefixlen);
        }
        return 0;
}

int vm_spec_kernel_cmdline(const VmSpec *spec, char **ret) {
        _cleanup_free_ char *s = NULL;
        char ipopt[80] = "", ip[16], gw[16] = "", mask[16];
        bool extra;

        assert(spec);
        assert(ret);

        if (spec->ip4 != 0) {
                ip4_to_string(spec->ip4, ip);
                if (spec->gateway4 != 0)
                        ip4_to_string(spec->gateway4, gw);
                ip4_to_string(prefix_mask(spec->prefixlen), mask);
                /* ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf> */
                (void) snprintf(ipopt, sizeof(ipopt), " ip=%s::%s:%s::" VM_GUEST_IFNAME ":off", ip, gw,
                                mask);
        }

        extra = spec->cmdline && spec->cmdline[0] != '\0';
        if (asprintf(&s, "console=" VM_GUEST_CONSOLE "%s%s%s", extra ? " " : "", extra ? spec->cmdline : "",
                     ipopt) < 0)
                return -ENOMEM;
        if (strlen(s) > VM_KERNEL_CMDLINE_MAX)
                return -EINVAL;
        *ret = TAKE_PTR(s);
        return 0;
}

int vm_spec_validate(const VmSpec *spec, HypervisorKind kind, Error *e) {
        const HypervisorVTable *vt;
        _cleanup_free_ char *cmdline = NULL;
        int r;

        assert(spec);

        if (e)
                error_clear(e);

        vt = hypervisor_vtable(kind);
        if (!vt)
                return vm_spec_invalid(e, "unknown hypervisor kind %d", (int) kind);

        if (!spec->name || spec->name[0] == '\0')
                return vm_spec_invalid(e, "VM name is missing");
        if (has_control_chars(spec->name))
                return vm_spec_invalid(e, "VM name contains control characters");

        r = check_path("kernel", spec->kernel, true, e);
        if (r < 0)
                return r;
        r = check_path("firmware", spec->firmware, true, e);
        if (r < 0)
                return r;
        r = check_path("initrd", spec->initrd, true, e);
        if (r < 0)
                return r;
        if (!spec->kernel && spec->initrd)
                return vm_spec_invalid(e, "an initrd needs a kernel (without one the VM boots its first "
                                          "disk through its firmware)");
        if (!spec->kernel && spec->cmdline)
                return vm_spec_invalid(e, "a kernel command line needs a kernel (without one the VM "
                                          "boots its first disk through its firmware)");
        if (spec->n_disks > 0 && !spec->disks)
                return vm_spec_invalid(e, "%zu disks announced but none given", spec->n_disks);
        for (size_t i = 0; i < spec->n_disks; i++) {
                char what[32];

                (void) snprintf(what, sizeof(what), "disk %zu", i);
                r = check_path(what, spec->disks[i], false, e);
                if (r < 0)
                        return r;
        }

        if (spec->cpus < 1 || spec->cpus > VM_SPEC_CPUS_MAX)
                return vm_spec_invalid(e, "cpus %u out of range 1..%u", spec->cpus, VM_SPEC_CPUS_MAX);
        if (spec->memory_mib < VM_SPEC_MEMORY_MIB_MIN || spec->memory_mib > VM_SPEC_MEMORY_MIB_MAX)
                return vm_spec_invalid(e, "memory %" PRIu64 " MiB out of range %" PRIu64 "..%" PRIu64 " MiB",
                                       spec->memory_mib, VM_SPEC_MEMORY_MIB_MIN, VM_SPEC_MEMORY_MIB_MAX);

        r = check_network(spec, e);
        if (r < 0)
                return r;

        r = check_path("API socket", spec->api_socket, false, e);
        if (r < 0)
                return r;
        if (strlen(spec->api_socket) > VM_SOCKET_PATH_MAX)
                return vm_spec_invalid(
                        e, "API socket path is %zu bytes, longer than the %u a unix socket address holds",
                        strlen(spec->api_socket), VM_SOCKET_PATH_MAX);
        r = check_path("serial log", spec->serial_log, false, e);
        if (r < 0)
                return r;
        r = check_path("hypervisor binary", spec->binary, true, e);
        if (r < 0)
                return r;

        if (spec->cmdline && has_control_chars(spec->cmdline))
                return vm_spec_invalid(e, "kernel command line contains control characters");
        r = spec->kernel ? vm_spec_kernel_cmdline(spec, &cmdline) : 0;
        if (r == -EINVAL)
                return vm_spec_invalid(e, "kernel command line is longer than %u bytes",
                                       VM_KERNEL_CMDLINE_MAX);
        if (r < 0)
                return r;

        if (vt->validate)
                return vt->validate(spec, e);
        return 0;
}

int hypervisor_build_argv(HypervisorKind kind, const VmSpec *spec, char ***ret_argv, Error *e) {
        int r;

        r = vm_spec_validate(spec, kind, e);
        if (r < 0)
                return r;
        return hypervisor_vtable(kind)->build_argv(spec, ret_argv);
}
