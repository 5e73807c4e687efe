/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Hypervisor kinds: the exact argv of representative VM specs for cloud-hypervisor and QEMU (the whole
 * NULL-terminated array), QEMU's comma escaping, the guest kernel command line, accel resolution, and every
 * validation error. No hypervisor runs here. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/cloud-hypervisor.h"
#include "vmm/hypervisor.h"
#include "vmm/qemu.h"

#define KERNEL "/var/lib/chvm/kernels/vmlinuz"
#define INITRD "/var/lib/chvm/kernels/initrd.img"
#define DISK0 "/var/lib/chvm/images/root.img"
#define DISK1 "/var/lib/chvm/images/data.img"
#define SOCK "/run/chvm/vms/0000000000000001/api.sock"
#define SERIAL "/run/chvm/vms/0000000000000001/serial.log"
#define TAP "tap-000000001"

static const char *const two_disks[] = { DISK0, DISK1 };

static VmSpec minimal_spec(void) {
        return (VmSpec){
                .name = "web",
                .kernel = KERNEL,
                .cpus = 1,
                .memory_mib = 512,
                .tap = TAP,
                .mac = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 },
                .api_socket = SOCK,
                .serial_log = SERIAL,
                .accel = VMM_ACCEL_TCG,
        };
}

/* initrd + 2 disks + ip + extra cmdline */
static VmSpec full_spec(void) {
        VmSpec s = minimal_spec();

        s.initrd = INITRD;
        s.disks = two_disks;
        s.n_disks = 2;
        s.cmdline = "quiet init=/sbin/init";
        s.cpus = 4;
        s.memory_mib = 2048;
        s.mac[5] = 0x2a;
        s.ip4 = 0xc0a8c80a; /* 192.168.200.10 */
        s.gateway4 = 0xc0a8c801; /* 192.168.200.1 */
        s.prefixlen = 24;
        return s;
}

static void assert_argv_eq(char **argv, const char *const *expected) {
        size_t i;

        cr_assert_not_null(argv);
        for (i = 0; expected[i]; i++) {
                cr_assert_not_null(argv[i], "argv ends at [%zu], expected \"%s\"", i, expected[i]);
                cr_assert_str_eq(argv[i], expected[i], "argv[%zu] is \"%s\", expected \"%s\"", i, argv[i],
                                 expected[i]);
        }
        cr_assert_null(argv[i], "argv has an extra \"%s\" at [%zu]", argv[i], i);
}

static void check_argv(HypervisorKind kind, const VmSpec *spec, const char *const *expected) {
        _cleanup_strv_free_ char **argv = NULL;
        Error error = {};

        cr_assert_eq(hypervisor_vtable(kind)->build_argv(spec, &argv), 0);
        assert_argv_eq(argv, expected);
        argv = strv_free(argv);

        /* the convenience entry point builds the same */
        cr_assert_eq(hypervisor_build_argv(kind, spec, &argv, &error), 0, "%s", error_message(&error));
        cr_assert_str_empty(error_message(&error));
        assert_argv_eq(argv, expected);
}

/* --- enums, vtables, accel --------------------------------------------------------------------------- */

Test(hypervisor, kind_strings) {
        cr_assert_str_eq(hypervisor_kind_to_string(HYPERVISOR_CLOUD_HYPERVISOR), "cloud-hypervisor");
        cr_assert_str_eq(hypervisor_kind_to_string(HYPERVISOR_QEMU), "qemu");
        cr_assert_null(hypervisor_kind_to_string(_HYPERVISOR_KIND_MAX));
        cr_assert_null(hypervisor_kind_to_string(_HYPERVISOR_KIND_INVALID));
        cr_assert_eq(hypervisor_kind_from_string("cloud-hypervisor"), HYPERVISOR_CLOUD_HYPERVISOR);
        cr_assert_eq(hypervisor_kind_from_string("qemu"), HYPERVISOR_QEMU);
        cr_assert_eq(hypervisor_kind_from_string("xen"), -EINVAL);
        cr_assert_eq(hypervisor_kind_from_string("QEMU"), -EINVAL);
        cr_assert_eq(hypervisor_kind_from_string(""), -EINVAL);
        cr_assert_eq(hypervisor_kind_from_string(NULL), -EINVAL);
}

Test(hypervisor, accel_strings) {
        cr_assert_str_eq(vmm_accel_to_string(VMM_ACCEL_AUTO), "auto");
        cr_assert_str_eq(vmm_accel_to_string(VMM_ACCEL_KVM), "kvm");
        cr_assert_str_eq(vmm_accel_to_string(VMM_ACCEL_TCG), "tcg");
        cr_assert_null(vmm_accel_to_string(_VMM_ACCEL_MAX));
        cr_assert_null(vmm_accel_to_string(_VMM_ACCEL_INVALID));
        for (int i = 0; i < _VMM_ACCEL_MAX; i++)
                cr_assert_eq(vmm_accel_from_string(vmm_accel_to_string(i)), i);
        cr_assert_eq(vmm_accel_from_string("hvf"), -EINVAL);
        cr_assert_eq(vmm_accel_from_string(NULL), -EINVAL);
}

Test(hypervisor, vtables) {
        for (int k = 0; k < _HYPERVISOR_KIND_MAX; k++) {
                const HypervisorVTable *vt = hypervisor_vtable(k);
                cr_assert_not_null(vt);
                cr_assert_eq(vt->kind, k);
                cr_assert_str_eq(vt->name, hypervisor_kind_to_string(k));
                cr_assert_not_null(vt->build_argv);
                /* every kind can be asked to power off: each step waits for something */
                cr_assert(vt->power_off && vt->power_off->n > 0, "%s has no power-off conversation",
                          vt->name);
                for (size_t i = 0; i < vt->power_off->n; i++)
                        cr_assert(vt->power_off->expects[i] && vt->power_off->expects[i][0]);
        }
        /* QMP greets first (nothing to send), then qmp_capabilities, then the power button */
        cr_assert_null(qemu_vtable.power_off->requests[0]);
        cr_assert(strstr(qemu_vtable.power_off->requests[qemu_vtable.power_off->n - 1], "system_powerdown"));
        cr_assert(strncmp(cloud_hypervisor_vtable.power_off->requests[0], "PUT /api/v1/vm.power-button ",
                          28) == 0);
        cr_assert_eq(hypervisor_vtable(HYPERVISOR_CLOUD_HYPERVISOR), &cloud_hypervisor_vtable);
        cr_assert_eq(hypervisor_vtable(HYPERVISOR_QEMU), &qemu_vtable);
        cr_assert_str_eq(cloud_hypervisor_vtable.default_binary, "cloud-hypervisor");
        cr_assert_str_eq(qemu_vtable.default_binary, "qemu-system-x86_64");
        cr_assert_null(hypervisor_vtable(_HYPERVISOR_KIND_MAX));
        cr_assert_null(hypervisor_vtable(_HYPERVISOR_KIND_INVALID));
}

Test(hypervisor, accel_resolve) {
        char usable[] = "/tmp/test-vmm-argv-kvm-XXXXXX";
        int fd = mkstemp(usable);
        VmmAccel a;

        cr_assert_geq(fd, 0);
        close(fd);

        /* explicit choices pass through, whatever the device says */
        a = _VMM_ACCEL_INVALID;
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_KVM, false, "/nonexistent/kvm", &a), 0);
        cr_assert_eq(a, VMM_ACCEL_KVM);
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_TCG, true, usable, &a), 0);
        cr_assert_eq(a, VMM_ACCEL_TCG);

        /* auto: KVM only when the caller says it works and the device opens read-write */
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_AUTO, true, usable, &a), 0);
        cr_assert_eq(a, VMM_ACCEL_KVM);
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_AUTO, false, usable, &a), 0);
        cr_assert_eq(a, VMM_ACCEL_TCG);
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_AUTO, true, "/nonexistent/kvm", &a), 0);
        cr_assert_eq(a, VMM_ACCEL_TCG);

        /* a device that opens read-only only (root ignores file modes, so a directory stands in) */
        cr_assert_not(vmm_kvm_device_usable("/"));
        cr_assert_eq(vmm_accel_resolve(VMM_ACCEL_AUTO, true, "/", &a), 0);
        cr_assert_eq(a, VMM_ACCEL_TCG);

        a = VMM_ACCEL_KVM;
        cr_assert_eq(vmm_accel_resolve(_VMM_ACCEL_INVALID, true, usable, &a), -EINVAL);
        cr_assert_eq(vmm_accel_resolve(_VMM_ACCEL_MAX, true, usable, &a), -EINVAL);
        cr_assert_eq(a, VMM_ACCEL_KVM, "written on failure");

        unlink(usable);
}

Test(hypervisor, strv) {
        char **l = calloc(3, sizeof(char *));

        cr_assert_null(strv_free(NULL));
        cr_assert_eq(strv_length(NULL), 0);
        cr_assert_not_null(l);
        l[0] = strdup("a");
        l[1] = strdup("b");
        cr_assert_eq(strv_length(l), 2);
        l = strv_free(l);
        cr_assert_null(l);
}

/* --- guest kernel command line ----------------------------------------------------------------------- */

static void check_cmdline(const VmSpec *spec, const char *expected) {
        _cleanup_free_ char *s = NULL;

        cr_assert_eq(vm_spec_kernel_cmdline(spec, &s), 0);
        cr_assert_str_eq(s, expected);
}

Test(cmdline, variants) {
        VmSpec s = minimal_spec();

        check_cmdline(&s, "console=ttyS0");
        s.cmdline = "";
        check_cmdline(&s, "console=ttyS0");
        s.cmdline = "quiet";
        check_cmdline(&s, "console=ttyS0 quiet");

        s = full_spec();
        check_cmdline(&s, "console=ttyS0 quiet init=/sbin/init "
                          "ip=192.168.200.10::192.168.200.1:255.255.255.0::eth0:off");

        /* no gateway: an empty field */
        s.cmdline = NULL;
        s.gateway4 = 0;
        s.ip4 = 0x0a000102; /* 10.0.1.2 */
        s.prefixlen = 32;
        check_cmdline(&s, "console=ttyS0 ip=10.0.1.2:::255.255.255.255::eth0:off");
        s.prefixlen = 1;
        check_cmdline(&s, "console=ttyS0 ip=10.0.1.2:::128.0.0.0::eth0:off");

        /* ip4 0: no ip= whatever the gateway and prefix say */
        s.ip4 = 0;
        s.gateway4 = 0x0a000101;
        check_cmdline(&s, "console=ttyS0");

        /* ours comes last, after an ip= of the caller's own */
        s = full_spec();
        s.cmdline = "ip=dhcp";
        check_cmdline(&s, "console=ttyS0 ip=dhcp ip=192.168.200.10::192.168.200.1:255.255.255.0::eth0:off");
}

Test(cmdline, length_limit) {
        char extra[VM_KERNEL_CMDLINE_MAX + 2];
        _cleanup_free_ char *s = NULL;
        VmSpec spec = minimal_spec();
        size_t fixed = strlen("console=ttyS0 ");

        /* exactly VM_KERNEL_CMDLINE_MAX bytes in all: fine */
        memset(extra, 'x', sizeof(extra));
        extra[VM_KERNEL_CMDLINE_MAX - fixed] = '\0';
        spec.cmdline = extra;
        cr_assert_eq(vm_spec_kernel_cmdline(&spec, &s), 0);
        cr_assert_eq(strlen(s), VM_KERNEL_CMDLINE_MAX);
        free(s);
        s = NULL;

        /* one more: refused, nothing returned */
        extra[VM_KERNEL_CMDLINE_MAX - fixed] = 'x';
        extra[VM_KERNEL_CMDLINE_MAX - fixed + 1] = '\0';
        cr_assert_eq(vm_spec_kernel_cmdline(&spec, &s), -EINVAL);
        cr_assert_null(s);
}

/* --- cloud-hypervisor -------------------------------------------------------------------------------- */

Test(cloud_hypervisor, minimal) {
        VmSpec s = minimal_spec();

        /* clang-format off */
        check_argv(HYPERVISOR_CLOUD_HYPERVISOR, &s,
                   (const char *const[]) { "cloud-hypervisor",
                                           "--api-socket", "path=" SOCK,
                                           "--kernel", KERNEL,
                                           "--cmdline", "console=ttyS0",
                                           "--cpus", "boot=1",
                                           "--memory", "size=512M",
                                           "--net", "tap=" TAP ",mac=02:00:00:00:00:01",
                                           "--serial", "file=" SERIAL,
                                           "--console", "off",
                                           NULL });
        /* clang-format on */
}

Test(cloud_hypervisor, initrd_disks_ip_cmdline) {
        VmSpec s = full_spec();

        s.binary = "/opt/ch/bin/cloud-hypervisor";
        s.accel = VMM_ACCEL_AUTO; /* ignored by this kind */
        /* clang-format off */
        check_argv(HYPERVISOR_CLOUD_HYPERVISOR, &s,
                   (const char *const[]) { "/opt/ch/bin/cloud-hypervisor",
                                           "--api-socket", "path=" SOCK,
                                           "--kernel", KERNEL,
                                           "--initramfs", INITRD,
                                           "--cmdline",
                                           "console=ttyS0 quiet init=/sbin/init "
                                           "ip=192.168.200.10::192.168.200.1:255.255.255.0::eth0:off",
                                           "--cpus", "boot=4",
                                           "--memory", "size=2048M",
                                           "--disk", "path=" DISK0, "path=" DISK1,
                                           "--net", "tap=" TAP ",mac=02:00:00:00:00:2a",
                                           "--serial", "file=" SERIAL,
                                           "--console", "off",
                                           NULL });
        /* clang-format on */
}

Test(cloud_hypervisor, no_nic_one_disk) {
        static const char *const one_disk[] = { DISK0 };
        VmSpec s = minimal_spec();

        s.tap = NULL;
        s.disks = one_disk;
        s.n_disks = 1;
        /* clang-format off */
        check_argv(HYPERVISOR_CLOUD_HYPERVISOR, &s,
                   (const char *const[]) { "cloud-hypervisor",
                                           "--api-socket", "path=" SOCK,
                                           "--kernel", KERNEL,
                                           "--cmdline", "console=ttyS0",
                                           "--cpus", "boot=1",
                                           "--memory", "size=512M",
                                           "--disk", "path=" DISK0,
                                           "--serial", "file=" SERIAL,
                                           "--console", "off",
                                           NULL });
        /* clang-format on */
}

/* Verbatim values (kernel, initrd, cmdline) may hold anything; the option-parsed ones may not. */
Test(cloud_hypervisor, verbatim_values) {
        VmSpec s = minimal_spec();

        s.kernel = "/boot/a,b \"c\" [d]/vmlinuz";
        s.initrd = "/boot/a,b/initrd";
        s.cmdline = "console=ttyS0,115200n8";
        s.disks = (const char *const[]){ "/images/key=value.img" };
        s.n_disks = 1;
        /* clang-format off */
        check_argv(HYPERVISOR_CLOUD_HYPERVISOR, &s,
                   (const char *const[]) { "cloud-hypervisor",
                                           "--api-socket", "path=" SOCK,
                                           "--kernel", "/boot/a,b \"c\" [d]/vmlinuz",
                                           "--initramfs", "/boot/a,b/initrd",
                                           "--cmdline", "console=ttyS0 console=ttyS0,115200n8",
                                           "--cpus", "boot=1",
                                           "--memory", "size=512M",
                                           "--disk", "path=/images/key=value.img",
                                           "--net", "tap=" TAP ",mac=02:00:00:00:00:01",
                                           "--serial", "file=" SERIAL,
                                           "--console", "off",
                                           NULL });
        /* clang-format on */
}

/* --- qemu -------------------------------------------------------------------------------------------- */

Test(qemu, minimal_tcg) {
        VmSpec s = minimal_spec();

        /* clang-format off */
        check_argv(HYPERVISOR_QEMU, &s,
                   (const char *const[]) { "qemu-system-x86_64",
                                           "-name", "guest=web",
                                           "-accel", "tcg",
                                           "-nodefaults", "-nographic", "-no-user-config",
                                           "-m", "512",
                                           "-smp", "1",
                                           "-kernel", KERNEL,
                                           "-append", "console=ttyS0",
                                           "-serial", "file:" SERIAL,
                                           "-qmp", "unix:path=" SOCK ",server=on,wait=off",
                                           "-netdev", "tap,id=net0,ifname=" TAP ",script=no,downscript=no",
                                           "-device",
                                           "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=",
                                           "-no-reboot",
                                           NULL });
        /* clang-format on */
}

/* No kernel: SeaBIOS (or -bios) boots the first disk; no -append, no ip= (the guest asks DHCP). */
Test(qemu, disk_boot_through_firmware) {
        VmSpec s = minimal_spec();

        s.kernel = NULL;
        s.disks = two_disks;
        s.n_disks = 2;
        s.ip4 = 0xc0a8c80a;
        s.gateway4 = 0xc0a8c801;
        s.prefixlen = 24;
        /* clang-format off */
        check_argv(HYPERVISOR_QEMU, &s,
                   (const char *const[]) { "qemu-system-x86_64",
                                           "-name", "guest=web",
                                           "-accel", "tcg",
                                           "-nodefaults", "-nographic", "-no-user-config",
                                           "-m", "512",
                                           "-smp", "1",
                                           "-serial", "file:" SERIAL,
                                           "-qmp", "unix:path=" SOCK ",server=on,wait=off",
                                           "-netdev", "tap,id=net0,ifname=" TAP ",script=no,downscript=no",
                                           "-device",
                                           "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=",
                                           "-drive", "file=" DISK0 ",if=virtio,format=raw",
                                           "-drive", "file=" DISK1 ",if=virtio,format=raw",
                                           "-no-reboot",
                                           NULL });
        s.firmware = "/usr/share/ovmf/OVMF.fd";
        check_argv(HYPERVISOR_QEMU, &s,
                   (const char *const[]) { "qemu-system-x86_64",
                                           "-name", "guest=web",
                                           "-accel", "tcg",
                                           "-nodefaults", "-nographic", "-no-user-config",
                                           "-m", "512",
                                           "-smp", "1",
                                           "-bios", "/usr/share/ovmf/OVMF.fd",
                                           "-serial", "file:" SERIAL,
                                           "-qmp", "unix:path=" SOCK ",server=on,wait=off",
                                           "-netdev", "tap,id=net0,ifname=" TAP ",script=no,downscript=no",
                                           "-device",
                                           "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=",
                                           "-drive", "file=" DISK0 ",if=virtio,format=raw",
                                           "-drive", "file=" DISK1 ",if=virtio,format=raw",
                                           "-no-reboot",
                                           NULL });
        /* clang-format on */
}

Test(cloud_hypervisor, firmware_boot) {
        static const char *const one_disk[] = { DISK0 };
        VmSpec s = minimal_spec();

        s.kernel = NULL;
        s.firmware = "/usr/share/cloud-hypervisor/CLOUDHV.fd";
        s.disks = one_disk;
        s.n_disks = 1;
        /* clang-format off */
        check_argv(HYPERVISOR_CLOUD_HYPERVISOR, &s,
                   (const char *const[]) { "cloud-hypervisor",
                                           "--api-socket", "path=" SOCK,
                                           "--firmware", "/usr/share/cloud-hypervisor/CLOUDHV.fd",
                                           "--cpus", "boot=1",
                                           "--memory", "size=512M",
                                           "--disk", "path=" DISK0,
                                           "--net", "tap=" TAP ",mac=02:00:00:00:00:01",
                                           "--serial", "file=" SERIAL,
                                           "--console", "off",
                                           NULL });
        /* clang-format on */
}

Test(qemu, kvm_initrd_disks_ip_cmdline) {
        VmSpec s = full_spec();

        s.accel = VMM_ACCEL_KVM;
        s.binary = "/usr/bin/qemu-system-x86_64";
        /* clang-format off */
        check_argv(HYPERVISOR_QEMU, &s,
                   (const char *const[]) { "/usr/bin/qemu-system-x86_64",
                                           "-name", "guest=web",
                                           "-accel", "kvm",
                                           "-nodefaults", "-nographic", "-no-user-config",
                                           "-m", "2048",
                                           "-smp", "4",
                                           "-kernel", KERNEL,
                                           "-initrd", INITRD,
                                           "-append",
                                           "console=ttyS0 quiet init=/sbin/init "
                                           "ip=192.168.200.10::192.168.200.1:255.255.255.0::eth0:off",
                                           "-serial", "file:" SERIAL,
                                           "-qmp", "unix:path=" SOCK ",server=on,wait=off",
                                           "-netdev", "tap,id=net0,ifname=" TAP ",script=no,downscript=no",
                                           "-device",
                                           "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:2a,romfile=",
                                           "-drive", "file=" DISK0 ",if=virtio,format=raw",
                                           "-drive", "file=" DISK1 ",if=virtio,format=raw",
                                           "-no-reboot",
                                           NULL });
        /* clang-format on */
}

/* The same spec under tcg differs in the -accel value only. */
Test(qemu, tcg_vs_kvm) {
        _cleanup_strv_free_ char **kvm = NULL, **tcg = NULL;
        VmSpec s = full_spec();
        size_t n;

        s.accel = VMM_ACCEL_KVM;
        cr_assert_eq(qemu_vtable.build_argv(&s, &kvm), 0);
        s.accel = VMM_ACCEL_TCG;
        cr_assert_eq(qemu_vtable.build_argv(&s, &tcg), 0);
        n = strv_length(kvm);
        cr_assert_eq(strv_length(tcg), n);
        for (size_t i = 0; i < n; i++)
                if (i > 0 && strcmp(kvm[i - 1], "-accel") == 0) {
                        cr_assert_str_eq(kvm[i], "kvm");
                        cr_assert_str_eq(tcg[i], "tcg");
                } else
                        cr_assert_str_eq(kvm[i], tcg[i]);
}

/* Commas are doubled inside QEMU's key=value options (-name, -qmp, -netdev, -drive) and left alone in the
 * verbatim ones (-kernel, -initrd, -append, -serial file:), as QEMU 7.2 parses them. */
Test(qemu, comma_escaping) {
        VmSpec s = minimal_spec();

        s.name = "a,b";
        s.kernel = "/k,1/vmlinuz";
        s.initrd = "/k,1/initrd";
        s.cmdline = "console=ttyS0,115200";
        s.disks = (const char *const[]){ "/img,s/root,,x.img", "/img/key=v,if=ide.img" };
        s.n_disks = 2;
        s.tap = "t,ap";
        s.api_socket = "/run/x,y/q=1.sock";
        s.serial_log = "/run/x,y/serial.log";
        /* clang-format off */
        check_argv(HYPERVISOR_QEMU, &s,
                   (const char *const[]) { "qemu-system-x86_64",
                                           "-name", "guest=a,,b",
                                           "-accel", "tcg",
                                           "-nodefaults", "-nographic", "-no-user-config",
                                           "-m", "512",
                                           "-smp", "1",
                                           "-kernel", "/k,1/vmlinuz",
                                           "-initrd", "/k,1/initrd",
                                           "-append", "console=ttyS0 console=ttyS0,115200",
                                           "-serial", "file:/run/x,y/serial.log",
                                           "-qmp", "unix:path=/run/x,,y/q=1.sock,server=on,wait=off",
                                           "-netdev", "tap,id=net0,ifname=t,,ap,script=no,downscript=no",
                                           "-device",
                                           "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=",
                                           "-drive", "file=/img,,s/root,,,,x.img,if=virtio,format=raw",
                                           "-drive", "file=/img/key=v,,if=ide.img,if=virtio,format=raw",
                                           "-no-reboot",
                                           NULL });
        /* clang-format on */
}

/* --- validation -------------------------------------------------------------------------------------- */

typedef struct BadCase {
        const char *what;
        void (*mutate)(VmSpec *s);
        const char *message; /* a piece of the error */
} BadCase;

static char long_path[PATH_MAX + 8];
static char long_cmdline[VM_KERNEL_CMDLINE_MAX + 8];
static char long_socket[VM_SOCKET_PATH_MAX + 2];

/* clang-format off */
static void no_name(VmSpec *s) { s->name = NULL; }
static void empty_name(VmSpec *s) { s->name = ""; }
static void name_ctrl(VmSpec *s) { s->name = "we\nb"; }
static void no_kernel(VmSpec *s) { s->kernel = NULL; }
static void kernel_relative(VmSpec *s) { s->kernel = "vmlinuz"; }
static void kernel_empty(VmSpec *s) { s->kernel = ""; }
static void kernel_ctrl(VmSpec *s) { s->kernel = "/boot/vm\tlinuz"; }
static void kernel_long(VmSpec *s) {
        memset(long_path, 'k', sizeof(long_path) - 1);
        long_path[0] = '/';
        long_path[PATH_MAX] = '\0'; /* PATH_MAX bytes without the NUL */
        s->kernel = long_path;
}
static void initrd_relative(VmSpec *s) { s->initrd = "initrd.img"; }
static void initrd_empty(VmSpec *s) { s->initrd = ""; }
static void disks_missing(VmSpec *s) { s->disks = NULL; s->n_disks = 2; }
static void disk_relative(VmSpec *s) {
        static const char *const disks[] = { DISK0, "data.img" };
        s->disks = disks;
        s->n_disks = 2;
}
static void disk_null(VmSpec *s) {
        static const char *const disks[] = { NULL };
        s->disks = disks;
        s->n_disks = 1;
}
static void cpus_zero(VmSpec *s) { s->cpus = 0; }
static void cpus_513(VmSpec *s) { s->cpus = 513; }
static void memory_31(VmSpec *s) { s->memory_mib = 31; }
static void memory_0(VmSpec *s) { s->memory_mib = 0; }
static void memory_huge(VmSpec *s) { s->memory_mib = VM_SPEC_MEMORY_MIB_MAX + 1; }
static void tap_empty(VmSpec *s) { s->tap = ""; }
static void tap_16(VmSpec *s) { s->tap = "tap-0123456789ab"; }
static void tap_slash(VmSpec *s) { s->tap = "tap/0"; }
static void tap_colon(VmSpec *s) { s->tap = "tap:0"; }
static void tap_space(VmSpec *s) { s->tap = "tap 0"; }
static void tap_dot(VmSpec *s) { s->tap = "."; }
static void tap_dotdot(VmSpec *s) { s->tap = ".."; }
static void tap_newline(VmSpec *s) { s->tap = "tap\n0"; }
static void mac_multicast(VmSpec *s) { s->mac[0] = 0x03; }
static void mac_zero(VmSpec *s) { memset(s->mac, 0, sizeof(s->mac)); }
static void ip_without_tap(VmSpec *s) { s->tap = NULL; s->ip4 = 0x0a000002; s->prefixlen = 24; }
static void prefix_0(VmSpec *s) { s->ip4 = 0x0a000002; s->prefixlen = 0; }
static void prefix_33(VmSpec *s) { s->ip4 = 0x0a000002; s->prefixlen = 33; }
static void gateway_is_ip(VmSpec *s) { s->ip4 = 0x0a000002; s->gateway4 = 0x0a000002; s->prefixlen = 24; }
static void gateway_outside(VmSpec *s) { s->ip4 = 0x0a000002; s->gateway4 = 0x0a000101; s->prefixlen = 24; }
static void no_socket(VmSpec *s) { s->api_socket = NULL; }
static void socket_relative(VmSpec *s) { s->api_socket = "api.sock"; }
static void socket_108(VmSpec *s) {
        memset(long_socket, 's', sizeof(long_socket) - 1);
        long_socket[0] = '/';
        long_socket[VM_SOCKET_PATH_MAX + 1] = '\0'; /* 108 bytes: no room for the NUL in sun_path */
        s->api_socket = long_socket;
}
static void no_serial(VmSpec *s) { s->serial_log = NULL; }
static void serial_relative(VmSpec *s) { s->serial_log = "serial.log"; }
static void binary_relative(VmSpec *s) { s->binary = "bin/qemu"; }
static void binary_empty(VmSpec *s) { s->binary = ""; }
static void cmdline_ctrl(VmSpec *s) { s->cmdline = "quiet\ninit=/bin/sh"; }
static void cmdline_long(VmSpec *s) {
        memset(long_cmdline, 'x', sizeof(long_cmdline) - 1);
        long_cmdline[VM_KERNEL_CMDLINE_MAX - strlen("console=ttyS0 ") + 1] = '\0';
        s->cmdline = long_cmdline;
}
static void cmdline_long_with_ip(VmSpec *s) {
        /* fits alone, but not with the ip= we add (full_spec() has an address) */
        memset(long_cmdline, 'x', sizeof(long_cmdline) - 1);
        long_cmdline[VM_KERNEL_CMDLINE_MAX - strlen("console=ttyS0 ")] = '\0';
        s->cmdline = long_cmdline;
}

/* clang-format on */

static const BadCase common_cases[] = {
        { "no name", no_name, "VM name is missing" },
        { "empty name", empty_name, "VM name is missing" },
        { "name with a control character", name_ctrl, "VM name contains control characters" },
        { "no kernel, with an initrd", no_kernel, "an initrd needs a kernel" },
        { "relative kernel", kernel_relative, "kernel \"vmlinuz\" is not an absolute path" },
        { "empty kernel", kernel_empty, "kernel \"\" is not an absolute path" },
        { "kernel with a control character", kernel_ctrl, "kernel contains control characters" },
        { "kernel path too long", kernel_long, "kernel is longer than" },
        { "relative initrd", initrd_relative, "initrd \"initrd.img\" is not an absolute path" },
        { "empty initrd", initrd_empty, "initrd \"\" is not an absolute path" },
        { "disks announced, none given", disks_missing, "2 disks announced but none given" },
        { "relative disk", disk_relative, "disk 1 \"data.img\" is not an absolute path" },
        { "NULL disk", disk_null, "disk 0 is missing" },
        { "cpus 0", cpus_zero, "cpus 0 out of range 1..512" },
        { "cpus 513", cpus_513, "cpus 513 out of range 1..512" },
        { "memory 31 MiB", memory_31, "memory 31 MiB out of range 32..16777216 MiB" },
        { "memory 0", memory_0, "memory 0 MiB out of range" },
        { "memory too big", memory_huge, "memory 16777217 MiB out of range" },
        { "empty TAP name", tap_empty, "TAP name \"\" is not a valid interface name" },
        { "TAP name of 16 bytes", tap_16, "TAP name \"tap-0123456789ab\" is not a valid interface name" },
        { "TAP name with '/'", tap_slash, "TAP name \"tap/0\" is not a valid interface name" },
        { "TAP name with ':'", tap_colon, "TAP name \"tap:0\" is not a valid interface name" },
        { "TAP name with a blank", tap_space, "TAP name \"tap 0\" is not a valid interface name" },
        { "TAP name .", tap_dot, "TAP name \".\" is not a valid interface name" },
        { "TAP name ..", tap_dotdot, "TAP name \"..\" is not a valid interface name" },
        { "TAP name with a newline", tap_newline, "TAP name \"?\" is not a valid interface name" },
        { "multicast MAC", mac_multicast, "MAC 03:00:00:00:00:2a is a multicast address" },
        { "zero MAC", mac_zero, "MAC 00:00:00:00:00:00 is all zero" },
        { "address without a NIC", ip_without_tap, "a guest address needs a network device" },
        { "prefix length 0", prefix_0, "prefix length 0 of guest address 10.0.0.2 out of range 1..32" },
        { "prefix length 33", prefix_33, "prefix length 33 of guest address 10.0.0.2 out of range 1..32" },
        { "gateway = guest address", gateway_is_ip, "gateway 10.0.0.2 is the guest's own address" },
        { "gateway outside the network", gateway_outside,
          "gateway 10.0.1.1 is outside the guest's network 10.0.0.0/24" },
        { "no API socket", no_socket, "API socket is missing" },
        { "relative API socket", socket_relative, "API socket \"api.sock\" is not an absolute path" },
        { "API socket path too long", socket_108,
          "API socket path is 108 bytes, longer than the 107 a unix socket address holds" },
        { "no serial log", no_serial, "serial log is missing" },
        { "relative serial log", serial_relative, "serial log \"serial.log\" is not an absolute path" },
        { "relative binary", binary_relative, "hypervisor binary \"bin/qemu\" is not an absolute path" },
        { "empty binary", binary_empty, "hypervisor binary \"\" is not an absolute path" },
        { "cmdline with a control character", cmdline_ctrl,
          "kernel command line contains control characters" },
        { "cmdline too long", cmdline_long, "kernel command line is longer than 2047 bytes" },
        { "cmdline too long with ip=", cmdline_long_with_ip,
          "kernel command line is longer than 2047 bytes" },
};

static void check_refused(HypervisorKind kind, const VmSpec *s, const char *what, const char *message) {
        char **sentinel = (char **) (uintptr_t) 0x1, **argv = sentinel;
        Error error = {};

        cr_assert_eq(vm_spec_validate(s, kind, &error), -EINVAL, "%s (%s): accepted", what,
                     hypervisor_kind_to_string(kind));
        cr_assert(strstr(error_message(&error), message), "%s (%s): error \"%s\" does not say \"%s\"", what,
                  hypervisor_kind_to_string(kind), error_message(&error), message);
        /* no message buffer: still refused */
        cr_assert_eq(vm_spec_validate(s, kind, NULL), -EINVAL);

        cr_assert_eq(hypervisor_vtable(kind)->build_argv(s, &argv), -EINVAL, "%s (%s): built", what,
                     hypervisor_kind_to_string(kind));
        cr_assert_eq(argv, sentinel, "%s: ret_argv written on failure", what);
        error_clear(&error);
        cr_assert_eq(hypervisor_build_argv(kind, s, &argv, &error), -EINVAL);
        cr_assert(strstr(error_message(&error), message), "%s: hypervisor_build_argv() said \"%s\"", what,
                  error_message(&error));
        cr_assert_eq(argv, sentinel);
}

Test(validate, common_errors_both_kinds) {
        for (int k = 0; k < _HYPERVISOR_KIND_MAX; k++)
                for (size_t i = 0; i < sizeof(common_cases) / sizeof(common_cases[0]); i++) {
                        VmSpec s = full_spec();
                        common_cases[i].mutate(&s);
                        check_refused(k, &s, common_cases[i].what, common_cases[i].message);
                }
}

Test(validate, boundaries_accepted) {
        static char socket_107[VM_SOCKET_PATH_MAX + 1];
        for (int k = 0; k < _HYPERVISOR_KIND_MAX; k++) {
                _cleanup_strv_free_ char **argv = NULL;
                Error error = {};
                VmSpec s = full_spec();

                s.cpus = VM_SPEC_CPUS_MAX;
                s.memory_mib = VM_SPEC_MEMORY_MIB_MIN;
                s.tap = "tap-0123456789a"; /* 15 bytes */
                memset(socket_107, 's', VM_SOCKET_PATH_MAX);
                socket_107[0] = '/';
                socket_107[VM_SOCKET_PATH_MAX] = '\0';
                s.api_socket = socket_107;
                s.prefixlen = 32;
                s.gateway4 = 0;
                s.mac[0] = 0x06; /* locally administered unicast */
                cr_assert_eq(vm_spec_validate(&s, k, &error), 0, "%s", error_message(&error));
                cr_assert_eq(hypervisor_vtable(k)->build_argv(&s, &argv), 0);
                argv = strv_free(argv);

                s.memory_mib = VM_SPEC_MEMORY_MIB_MAX;
                s.cpus = 1;
                cr_assert_eq(hypervisor_vtable(k)->build_argv(&s, &argv), 0);
        }
}

Test(validate, unknown_kind) {
        VmSpec s = minimal_spec();
        Error error = {};
        char **argv = NULL;

        cr_assert_eq(vm_spec_validate(&s, _HYPERVISOR_KIND_MAX, &error), -EINVAL);
        cr_assert_str_eq(error_message(&error), "unknown hypervisor kind 2");
        cr_assert_eq(hypervisor_build_argv(_HYPERVISOR_KIND_INVALID, &s, &argv, NULL), -EINVAL);
        cr_assert_null(argv);
}

/* clang-format off */
static void accel_auto(VmSpec *s) { s->accel = VMM_ACCEL_AUTO; }
static void accel_invalid(VmSpec *s) { s->accel = _VMM_ACCEL_INVALID; }
static void accel_max(VmSpec *s) { s->accel = _VMM_ACCEL_MAX; }
/* clang-format on */

Test(validate, qemu_wants_a_resolved_accel) {
        static const BadCase cases[] = {
                { "accel auto", accel_auto, "accel \"auto\" is not kvm or tcg" },
                { "accel invalid", accel_invalid, "accel \"?\" is not kvm or tcg" },
                { "accel max", accel_max, "accel \"?\" is not kvm or tcg" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                _cleanup_strv_free_ char **argv = NULL;
                VmSpec s = full_spec();

                cases[i].mutate(&s);
                check_refused(HYPERVISOR_QEMU, &s, cases[i].what, cases[i].message);
                /* cloud-hypervisor has no accel choice and ignores it */
                cr_assert_eq(cloud_hypervisor_vtable.build_argv(&s, &argv), 0);
        }
}

/* clang-format off */
static void ch_socket_comma(VmSpec *s) { s->api_socket = "/run/a,b/api.sock"; }
static void ch_serial_quote(VmSpec *s) { s->serial_log = "/run/a\"b/serial.log"; }
static void ch_disk_bracket(VmSpec *s) {
        static const char *const disks[] = { DISK0, "/img/[x.img" };
        s->disks = disks;
        s->n_disks = 2;
}
static void ch_disk_close_bracket(VmSpec *s) {
        static const char *const disks[] = { "/img/x].img" };
        s->disks = disks;
        s->n_disks = 1;
}
static void ch_disk_trailing_blank(VmSpec *s) {
        static const char *const disks[] = { "/img/x.img " };
        s->disks = disks;
        s->n_disks = 1;
}
static void ch_tap_comma(VmSpec *s) { s->tap = "tap,0"; }
/* clang-format on */

/* Values cloud-hypervisor's option parser would split, unquote or trim: refused for it, fine for QEMU. */
Test(validate, cloud_hypervisor_option_syntax) {
        static const BadCase cases[] = {
                { "API socket with ','", ch_socket_comma,
                  "API socket path \"/run/a,b/api.sock\" contains ',', which cloud-hypervisor's option "
                  "syntax cannot carry" },
                { "serial log with '\"'", ch_serial_quote,
                  "serial log path \"/run/a\"b/serial.log\" contains '\"'" },
                { "disk with '['", ch_disk_bracket, "disk 1 path \"/img/[x.img\" contains '['" },
                { "disk with ']'", ch_disk_close_bracket, "disk 0 path \"/img/x].img\" contains ']'" },
                { "disk ending in a blank", ch_disk_trailing_blank,
                  "disk 0 path \"/img/x.img \" ends in a blank, which cloud-hypervisor would strip" },
                { "TAP name with ','", ch_tap_comma, "TAP name \"tap,0\" contains ','" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                _cleanup_strv_free_ char **argv = NULL;
                VmSpec s = full_spec();

                cases[i].mutate(&s);
                check_refused(HYPERVISOR_CLOUD_HYPERVISOR, &s, cases[i].what, cases[i].message);
                cr_assert_eq(qemu_vtable.build_argv(&s, &argv), 0, "%s: refused by qemu", cases[i].what);
        }
}

static void no_kernel_no_firmware(VmSpec *s) {
        s->kernel = NULL;
        s->initrd = NULL;
        s->cmdline = NULL;
}

/* What only one kind refuses, and what needs a kernel. */
Test(validate, boot_without_a_kernel) {
        VmSpec s = full_spec();
        no_kernel_no_firmware(&s);
        check_refused(HYPERVISOR_CLOUD_HYPERVISOR, &s, "disk, no firmware",
                      "cloud-hypervisor boots a disk only through a firmware");
        s.n_disks = 0;
        check_refused(HYPERVISOR_QEMU, &s, "nothing to boot", "nothing to boot: no kernel, and no disk");
        s = full_spec();
        s.kernel = NULL;
        s.cmdline = NULL;
        check_refused(HYPERVISOR_QEMU, &s, "initrd without kernel", "an initrd needs a kernel");
        s = full_spec();
        s.kernel = NULL;
        s.initrd = NULL;
        check_refused(HYPERVISOR_QEMU, &s, "cmdline without kernel", "a kernel command line needs a kernel");
        s = full_spec();
        no_kernel_no_firmware(&s);
        s.firmware = "fw.fd";
        check_refused(HYPERVISOR_QEMU, &s, "relative firmware",
                      "firmware \"fw.fd\" is not an absolute path");
}
