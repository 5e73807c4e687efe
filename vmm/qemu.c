/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* QEMU (checked with 7.2 on Debian 12):
 *
 *   qemu-system-x86_64 -name guest=NAME -accel tcg|kvm -nodefaults -nographic -no-user-config -m N -smp N
 *                      [-bios FIRMWARE] [-kernel K [-initrd I] -append CMDLINE] -serial file:LOG
 *                      -qmp unix:path=SOCK,server=on,wait=off
 *                      [-netdev tap,id=net0,ifname=TAP,script=no,downscript=no
 *                       -device virtio-net-pci,netdev=net0,mac=MAC,romfile=]
 *                      [-drive file=D,if=virtio,format=raw]... -no-reboot
 *
 * Values of QEMU's key=value option syntax (-name, -qmp, -netdev, -drive) get every ',' doubled, its only
 * escape, and always come with their key spelled out, so an '=' in a value cannot turn it into a key.
 * -bios, -kernel, -initrd, -append and -serial file: take their value verbatim and must not be escaped.
 * Without -kernel the firmware (SeaBIOS unless -bios says otherwise) boots the first virtio disk.
 * -no-reboot: a guest reboot ends the process like a poweroff, so the agent sees it exit. romfile= skips the
 * iPXE ROM. script=no/downscript=no: QEMU runs no helper, the TAP exists already. */

#include <inttypes.h>
#include <stdio.h>

#include "util/macro.h"
#include "vmm/qemu.h"

static int qemu_validate(const VmSpec *spec, Error *e) {
        if (!spec->kernel && !spec->firmware && spec->n_disks == 0) {
                return vm_spec_invalid(e,
                                       "nothing to boot: no kernel, and no disk for the firmware to boot");
        }
        if (spec->accel != VMM_ACCEL_KVM && spec->accel != VMM_ACCEL_TCG) {
                return vm_spec_invalid(
                        e, "accel \"%s\" is not kvm or tcg (resolve auto with vmm_accel_resolve())",
                        vmm_accel_to_string(spec->accel) ?: "?");
        }
        return 0;
}

static int qemu_build_argv(const VmSpec *spec, char ***ret_argv) {
        _cleanup_free_ char *cmdline = NULL;
        ArgvBuilder b = {};
        int r;

        r = vm_spec_validate(spec, HYPERVISOR_QEMU, NULL);
        if (r < 0)
                return r;
        r = spec->kernel ? vm_spec_kernel_cmdline(spec, &cmdline) : 0;
        if (r < 0)
                return r;

        argv_builder_add(&b, vm_spec_binary(spec, &qemu_vtable));
        argv_builder_add(&b, "-name");
        argv_builder_add_qemu_escaped(&b, "guest=", spec->name, NULL);
        argv_builder_add(&b, "-accel");
        argv_builder_add(&b, vmm_accel_to_string(spec->accel));
        argv_builder_add(&b, "-nodefaults");
        argv_builder_add(&b, "-nographic");
        argv_builder_add(&b, "-no-user-config");
        argv_builder_add(&b, "-m");
        argv_builder_addf(&b, "%" PRIu64, spec->memory_mib);
        argv_builder_add(&b, "-smp");
        argv_builder_addf(&b, "%u", spec->cpus);
        if (spec->firmware) {
                argv_builder_add(&b, "-bios");
                argv_builder_add(&b, spec->firmware);
        }
        if (spec->kernel) {
                argv_builder_add(&b, "-kernel");
                argv_builder_add(&b, spec->kernel);
                if (spec->initrd) {
                        argv_builder_add(&b, "-initrd");
                        argv_builder_add(&b, spec->initrd);
                }
                argv_builder_add(&b, "-append");
                argv_builder_add(&b, cmdline);
        }
        argv_builder_add(&b, "-serial");
        argv_builder_addf(&b, "file:%s", spec->serial_log);
        argv_builder_add(&b, "-qmp");
        argv_builder_add_qemu_escaped(&b, "unix:path=", spec->api_socket, ",server=on,wait=off");
        if (spec->tap) {
                char mac[18];

                vm_mac_to_string(spec->mac, mac);
                argv_builder_add(&b, "-netdev");
                argv_builder_add_qemu_escaped(&b, "tap,id=net0,ifname=", spec->tap,
                                              ",script=no,downscript=no");
                argv_builder_add(&b, "-device");
                argv_builder_addf(&b, "virtio-net-pci,netdev=net0,mac=%s,romfile=", mac);
        }
        for (size_t i = 0; i < spec->n_disks; i++) {
                argv_builder_add(&b, "-drive");
                argv_builder_add_qemu_escaped(&b, "file=", spec->disks[i], ",if=virtio,format=raw");
        }
        argv_builder_add(&b, "-no-reboot");

        return argv_builder_finish(&b, ret_argv);
}

/* QMP: the greeting, qmp_capabilities, system_powerdown (the ACPI power button). */
static const char *const qmp_requests[] = { NULL, "{\"execute\":\"qmp_capabilities\"}\n",
                                            "{\"execute\":\"system_powerdown\"}\n" };
static const char *const qmp_expects[] = { "\"QMP\"", "\"return\"", "\"return\"" };
static const HypervisorTalk qmp_power_off = { qmp_requests, qmp_expects, ELEMENTSOF(qmp_requests) };

/* Ready when the monitor greets and takes qmp_capabilities: QEMU made its machine and answers. */
static const HypervisorTalk qmp_ready = { qmp_requests, qmp_expects, 2 };

const HypervisorVTable qemu_vtable = {
        .kind = HYPERVISOR_QEMU,
        .name = "qemu",
        .default_binary = "qemu-system-x86_64",
        .validate = qemu_validate,
        .build_argv = qemu_build_argv,
        .power_off = &qmp_power_off,
        .ready = &qmp_ready,
};
