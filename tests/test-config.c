/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* agent.conf: defaults, every key, and bad input refused with FILE:LINE and the cause. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/backend-loader.h"
#include "agent/config.h"
#include "backends/backend.h"
#include "backends/local/local-config.h"
#include "util/macro.h"

static AgentConfig c;
static LocalConfig l; /* [local], as the local backend's configure hook parses it */
static Error err;

static void setup(void) {
        config_defaults(&c, "/usr/lib/chvm-agent/backends");
        local_config_defaults(&l);
        error_clear(&err);
}

TestSuite(config, .init = setup);

/* The file as the agent reads it: its own sections, then [local] through the local backend's parser, with
 * errors worded as the loader words them ([bridge] goes through its module: see bridge_section). */
static int load(const char *text) {
        static AgentConfig before;
        before = c;
        int r = config_load_string(&c, "agent.conf", text, &err);
        if (r < 0)
                return r;
        BackendSetting s[CONFIG_MAX_SETTINGS];
        BackendConfig bc = { .settings = s,
                             .n_settings = config_backend_settings(&c, "local", s, CONFIG_MAX_SETTINGS),
                             .settings_source = c.source };
        size_t bad;
        Error why = {};
        r = local_config_parse(&l, s, bc.n_settings, &bad, &why);
        if (r < 0) {
                (void) backend_setting_error(&bc, "local", bad, -EINVAL, error_message(&why), &err);
                c = before; /* the agent refuses to start: nothing of the file is taken */
        }
        return r;
}

Test(config, defaults) {
        cr_assert_eq(load(""), 0, "%s", error_message(&err));
        cr_assert_str_eq(c.state_dir, "/var/lib/chvm");
        cr_assert_str_eq(c.runtime_dir, "/run/chvm");
        cr_assert_str_eq(c.socket, "/run/chvm/agent.sock");
        cr_assert_str_eq(c.backend_dir, "/usr/lib/chvm-agent/backends");
        cr_assert_str_eq(c.default_backend, "local");
        cr_assert_str_eq(c.control_group, "chvm");
        cr_assert_eq(c.n_backends, 3);
        cr_assert_str_eq(c.hypervisor, "cloud-hypervisor");
        cr_assert_eq(c.stop_timeout, 10);
        cr_assert_eq(c.start_timeout, 30);
        cr_assert_str_eq(c.accel, "auto");
        cr_assert_str_eq(l.bridge, "chvm0");
        cr_assert_eq(l.subnet, 0xc0a8c800);
        cr_assert_eq(l.prefixlen, 24);
        cr_assert_eq(l.gateway, 0xc0a8c801, "the gateway defaults to the first host");
        cr_assert_str_eq(l.tap_prefix, "tap-");
        cr_assert_str_eq(l.table, "chvm");
        cr_assert_eq(l.table_owner, TABLE_OWNER_AUTO);
        cr_assert_eq(c.journal_compact_size, UINT64_C(8) << 20);
        cr_assert(l.dhcp);
        cr_assert(!l.dns_given, "DNS: the host's resolvers, read by the agent at start");
        cr_assert_eq(l.n_dns, 0);
        cr_assert_str_eq(l.domain, "");
        cr_assert_eq(l.lease_time, 3600);
        cr_assert_eq(l.mtu, 0, "the bridge's own");
        cr_assert(l.kernel_ip_arg);
        cr_assert_eq(c.connections_per_uid, 64);
        cr_assert_eq(c.idle_timeout, 60);
        cr_assert(!c.allow_block_devices);
        cr_assert_eq(c.n_image_dirs, 0, "anywhere");
        cr_assert(l.reserve_listening, "the ports the host listens on");
        cr_assert_eq(l.n_reserved, 0);
}

/* Issue 13: the keys that bound clients and what a VM may be given. */
Test(config, hardening_keys) {
        cr_assert_eq(load("[agent]\nconnections_per_uid = 8\nidle_timeout = 0\n"
                          "[vmm]\nallow_block_devices = yes\nimage_dirs = /srv/images/ /var/lib/images\n"
                          "[local]\nreserved_ports = 22 listening 5000-5010/udp 8080/tcp\n"),
                     0, "%s", error_message(&err));
        cr_assert_eq(c.connections_per_uid, 8);
        cr_assert_eq(c.idle_timeout, 0, "never");
        cr_assert(c.allow_block_devices);
        cr_assert_eq(c.n_image_dirs, 2);
        cr_assert_str_eq(c.image_dirs[0], "/srv/images", "a trailing / is dropped");
        cr_assert_str_eq(c.image_dirs[1], "/var/lib/images");
        cr_assert(l.reserve_listening);
        cr_assert_eq(l.n_reserved, 3);
        cr_assert(l.reserved[0].proto == 0 && l.reserved[0].first == 22 && l.reserved[0].last == 22);
        cr_assert(l.reserved[1].proto == IPPROTO_UDP && l.reserved[1].first == 5000 &&
                  l.reserved[1].last == 5010);
        cr_assert(l.reserved[2].proto == IPPROTO_TCP && l.reserved[2].first == 8080);
        setup();
        cr_assert_eq(
                load("[vmm]\nenvironment = LANG=C.UTF-8 RUST_LOG=\npass_environment = HTTP_PROXY CH_*\n"), 0,
                "%s", error_message(&err));
        cr_assert_eq(c.n_vmm_environment, 2);
        cr_assert_str_eq(c.vmm_environment[1], "RUST_LOG=");
        cr_assert_eq(c.n_vmm_pass_environment, 2);
        cr_assert_str_eq(c.vmm_pass_environment[1], "CH_*");
        setup();
        cr_assert_eq(load("[local]\nreserved_ports = none\n"), 0, "%s", error_message(&err));
        cr_assert(!l.reserve_listening);
        cr_assert_eq(l.n_reserved, 0);
        setup();
        cr_assert_eq(load("[local]\nreserved_ports = 53\n"), 0, "%s", error_message(&err));
        cr_assert(!l.reserve_listening, "a list without \"listening\" replaces the default");
        cr_assert_eq(l.n_reserved, 1);
}

Test(config, dhcp_keys) {
        cr_assert_eq(
                load("[local]\ndhcp = no\ndns = 10.0.0.53, 10.0.0.54 192.0.2.1\ndomain = guests.example\n"
                     "lease_time = 600\nmtu = 9000\nkernel_ip_arg = no\n"),
                0, "%s", error_message(&err));
        cr_assert(!l.dhcp);
        cr_assert(l.dns_given);
        cr_assert_eq(l.n_dns, 3);
        cr_assert_eq(l.dns[0], 0x0a000035);
        cr_assert_eq(l.dns[1], 0x0a000036);
        cr_assert_eq(l.dns[2], 0xc0000201);
        cr_assert_str_eq(l.domain, "guests.example");
        cr_assert_eq(l.lease_time, 600);
        cr_assert_eq(l.mtu, 9000);
        cr_assert(!l.kernel_ip_arg);
        setup();
        cr_assert_eq(load("[local]\ndns = none\n"), 0, "%s", error_message(&err));
        cr_assert(l.dns_given, "none: no option 6, not the host's");
        cr_assert_eq(l.n_dns, 0);
}

Test(config, table_owner) {
        static const struct {
                const char *value;
                TableOwner want;
        } cases[] = { { "auto", TABLE_OWNER_AUTO }, { "yes", TABLE_OWNER_YES }, { "no", TABLE_OWNER_NO } };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char text[64];
                setup();
                snprintf(text, sizeof(text), "[local]\ntable_owner = %s\n", cases[i].value);
                cr_assert_eq(load(text), 0, "%s", error_message(&err));
                cr_assert_eq(l.table_owner, cases[i].want);
                cr_assert_str_eq(table_owner_to_string(cases[i].want), cases[i].value);
        }
}

Test(config, every_key) {
        const char *text = "; a comment\n"
                           "[agent]\n"
                           "state_dir = /tmp/s\n"
                           "runtime_dir = /tmp/r\n"
                           "backend_dir = /opt/b\n"
                           "default_backend = mosnet\n"
                           "control_group = vmadmins\n"
                           "backends = local mosnet bridge\n"
                           "journal_compact_size = 64K\n"
                           "[vmm]\n"
                           "hypervisor = qemu\n"
                           "binary = /bin/sh\n"
                           "stop_timeout = 30\n"
                           "start_timeout = 7\n"
                           "accel = tcg\n"
                           "[local]\n"
                           "bridge = vmbr9\n"
                           "subnet = 10.20.0.0/16\n"
                           "gateway = 10.20.0.254\n"
                           "tap_prefix = vm-\n"
                           "table = chvm_test\n"
                           "table_owner = no\n"
                           "[bridge]\n"
                           "bridge = br-lan\n"
                           "tap_prefix = vb-\n";
        cr_assert_eq(load(text), 0, "%s", error_message(&err));
        cr_assert_str_eq(c.state_dir, "/tmp/s");
        cr_assert_str_eq(c.socket, "/tmp/r/agent.sock", "the socket follows runtime_dir unless set");
        cr_assert_str_eq(c.backend_dir, "/opt/b");
        cr_assert_str_eq(c.default_backend, "mosnet");
        cr_assert_str_eq(c.control_group, "vmadmins");
        cr_assert_eq(c.n_backends, 3);
        cr_assert_str_eq(c.backends[1], "mosnet");
        cr_assert_eq(c.journal_compact_size, 65536);
        cr_assert_str_eq(c.hypervisor, "qemu");
        cr_assert_str_eq(c.vmm_binary, "/bin/sh");
        cr_assert_eq(c.stop_timeout, 30);
        cr_assert_eq(c.start_timeout, 7);
        cr_assert_str_eq(c.accel, "tcg");
        cr_assert_str_eq(l.bridge, "vmbr9");
        cr_assert_eq(l.subnet, 0x0a140000);
        cr_assert_eq(l.prefixlen, 16);
        cr_assert_eq(l.gateway, 0x0a1400fe);
        cr_assert_str_eq(l.tap_prefix, "vm-");
        cr_assert_str_eq(l.table, "chvm_test");
        cr_assert_eq(l.table_owner, TABLE_OWNER_NO);
        cr_assert_eq(c.n_settings, 8, "the backends' lines are kept for them");
        BackendSetting bs[4];
        cr_assert_eq(config_backend_settings(&c, "bridge", bs, 4), 2);
        cr_assert(strcmp(bs[0].key, "bridge") == 0 && strcmp(bs[0].value, "br-lan") == 0 && bs[0].line == 24,
                  "%s = %s at %u", bs[0].key, bs[0].value, bs[0].line);
        cr_assert(strcmp(bs[1].key, "tap_prefix") == 0 && strcmp(bs[1].value, "vb-") == 0 &&
                  bs[1].line == 25);
}

/* Each bad file is refused, the message names the line and the cause, and nothing of it is taken. */
Test(config, bad_input_names_file_line_and_cause) {
        static const struct {
                const char *text;
                const char *expect;
        } cases[] = {
                { "[agent]\nstate_dir = /x\nsoket = /y\n",
                  "agent.conf:3: unknown key \"soket\" in [agent]" },
                { "[locla]\nbridge = x\n", "agent.conf:2: unknown section [locla]" },
                { "[local]\nsubnet = 192.168.200.0\n",
                  "agent.conf:2: [local] subnet \"192.168.200.0\": expected A.B.C.D/N" },
                { "[local]\nsubnet = 192.168.200.7/24\n",
                  "agent.conf:2: [local] subnet \"192.168.200.7/24\" has host bits set" },
                { "[local]\nsubnet = 300.1.1.0/24\n", "agent.conf:2: [local] subnet" },
                { "[local]\nsubnet = 10.0.0.0/31\n", "with N from 8 to 30" },
                { "[local]\ngateway = 10.0.0.1\n",
                  "agent.conf: [local] gateway is not a host address of subnet 192.168.200.0/24" },
                { "[local]\ngateway = 192.168.200.255\n", "gateway is not a host address" },
                { "[local]\nbridge = way-too-long-bridge\n",
                  "agent.conf:2: [local] bridge \"way-too-long-bridge\" is not a valid interface name" },
                { "[local]\nbridge = a/b\n", "is not a valid interface name" },
                { "[local]\ntap_prefix = twelve-chars\n", "agent.conf:2: [local] tap_prefix" },
                { "[local]\ntable_owner = maybe\n",
                  "agent.conf:2: [local] table_owner \"maybe\": expected auto, yes or no" },
                /* the kernel reads a '%' as a template ("br%d" -> br0): never the name we asked for */
                { "[local]\nbridge = br%d\n",
                  "agent.conf:2: [local] bridge \"br%d\" is not a valid interface name" },
                { "[local]\ntap_prefix = vm%\n", "agent.conf:2: [local] tap_prefix \"vm%\"" },
                /* 0.0.0.0 is no host of the subnet, not a way to ask for the default */
                { "[local]\ngateway = 0.0.0.0\n",
                  "agent.conf: [local] gateway is not a host address of subnet" },
                { "[vmm]\nhypervisor = xen\n",
                  "agent.conf:2: hypervisor \"xen\": expected cloud-hypervisor or qemu" },
                { "[vmm]\nstop_timeout = 0\n", "agent.conf:2: stop_timeout \"0\"" },
                { "[vmm]\nstop_timeout = 10s\n", "stop_timeout \"10s\"" },
                { "[vmm]\nstop_timeout = -5\n", "stop_timeout \"-5\"" },
                { "[vmm]\nstart_timeout = 0\n",
                  "agent.conf:2: start_timeout \"0\": expected whole seconds from 1 to 100" },
                { "[vmm]\nstart_timeout = 101\n", "start_timeout \"101\"" },
                { "[vmm]\naccel = hvf\n", "accel \"hvf\": expected auto, kvm or tcg" },
                { "[vmm]\nbinary = qemu\n", "binary must be an absolute path" },
                { "[vmm]\nhypervisor = qemu\nbinary = /nonexistent/qemu-system-x86_64\n",
                  "agent.conf:3: binary /nonexistent/qemu-system-x86_64: No such file or directory" },
                { "[vmm]\nbinary = /etc/passwd\n", "agent.conf:2: binary /etc/passwd: Permission denied" },
                { "[agent]\nstate_dir = relative/dir\n",
                  "agent.conf:2: state_dir must be an absolute path" },
                { "[agent]\nbackends = local local\n", "\"local\" is listed twice" },
                { "[agent]\nbackends = local ../evil\n", "\"../evil\" is not a backend name" },
                { "[agent]\ndefault_backend = bridge\nbackends = local mosnet\n",
                  "default_backend \"bridge\" is not among the loaded backends" },
                { "[agent]\nstate_dir = /a\n\n[agent]\nstate_dir = /b\n",
                  "agent.conf:5: [agent] state_dir is set twice" },
                { "[agent\nstate_dir = /a\n", "agent.conf:1:" },
                { "[agent]\njournal_compact_size = 0\n", "agent.conf:2: journal_compact_size \"0\"" },
                { "[agent]\njournal_compact_size = 8X\n", "journal_compact_size \"8X\": expected bytes" },
                { "[agent]\njournal_compact_size = -1\n", "journal_compact_size \"-1\"" },
                { "[agent]\njournal_compact_size = 2048G\n", "journal_compact_size \"2048G\"" },
                /* inih would read the rest as the next line (or drop it as a comment) */
                { "[agent]\nstate_dir = /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaaaa#b\n",
                  "agent.conf:2: line is longer than 198 bytes" },
                { "[agent]\njust some words\n", "agent.conf:2:" },
                { "[local]\ndhcp = maybe\n", "agent.conf:2: [local] dhcp \"maybe\": expected yes or no" },
                { "[local]\nkernel_ip_arg = 2\n",
                  "agent.conf:2: [local] kernel_ip_arg \"2\": expected yes or no" },
                { "[local]\ndns = fe80::1\n",
                  "agent.conf:2: [local] dns: \"fe80::1\" is not a unicast IPv4 address" },
                { "[local]\ndns = 0.0.0.0\n", "dns: \"0.0.0.0\" is not a unicast IPv4 address" },
                { "[local]\ndns = 1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4\n",
                  "agent.conf:2: [local] dns: at most 3 servers" },
                { "[local]\ndns = ,\n", "agent.conf:2: [local] dns: expected addresses, or none" },
                { "[local]\ndomain = a..b\n",
                  "agent.conf:2: [local] domain \"a..b\" is not a DNS domain name" },
                { "[local]\ndomain = -x.test\n", "domain \"-x.test\" is not a DNS domain name" },
                { "[local]\ndomain = x y\n", "domain \"x y\" is not a DNS domain name" },
                { "[local]\nlease_time = 59\n",
                  "agent.conf:2: [local] lease_time \"59\": expected whole seconds from 60" },
                { "[local]\nlease_time = 1h\n", "lease_time \"1h\": expected whole seconds" },
                { "[local]\nmtu = 575\n",
                  "agent.conf:2: [local] mtu \"575\": expected bytes from 576 to 65535" },
                { "[local]\nmtu = 65536\n", "mtu \"65536\"" },
                { "[agent]\nconnections_per_uid = 0\n",
                  "agent.conf:2: connections_per_uid \"0\": expected a number from 1 to 512" },
                { "[agent]\nidle_timeout = -1\n",
                  "agent.conf:2: idle_timeout \"-1\": expected whole seconds from 0 (never) to 86400" },
                { "[vmm]\nallow_block_devices = sometimes\n",
                  "agent.conf:2: allow_block_devices \"sometimes\": expected yes or no" },
                { "[vmm]\nimage_dirs = images\n",
                  "agent.conf:2: image_dirs: \"images\" is not an absolute path" },
                { "[vmm]\nimage_dirs = /a /b /c /d /e /f /g /h /i\n",
                  "agent.conf:2: image_dirs: at most 8 folders" },
                { "[local]\nreserved_ports = 0\n",
                  "agent.conf:2: [local] reserved_ports: \"0\": expected a port or a range" },
                { "[local]\nreserved_ports = 10-5\n",
                  "reserved_ports: \"10-5\": expected a port or a range" },
                { "[local]\nreserved_ports = 22/sctp\n",
                  "reserved_ports: \"sctp\": expected tcp or udp after /" },
                { "[local]\nreserved_ports = none 22\n",
                  "agent.conf:2: [local] reserved_ports: none stands alone" },
                { "[local]\nreserved_ports = ,\n", "reserved_ports: expected listening, none or ports" },
                { "[vmm]\nenvironment = LANG\n", "agent.conf:2: environment: \"LANG\" is not NAME=VALUE" },
                { "[vmm]\nenvironment = 1X=2\n", "environment: \"1X=2\" is not NAME=VALUE" },
                { "[vmm]\nenvironment = PATH=/tmp\n", "agent.conf:2: environment: PATH is the agent's" },
                { "[vmm]\npass_environment = A-B\n", "pass_environment: \"A-B\" is not a variable name" },
                { "[vmm]\npass_environment = *\n", "pass_environment: \"*\" is not a variable name" },
                /* a backend's section: its own keys only, and only for a backend that is loaded */
                { "[agent]\nstate_dir = /a\n[local]\ncolour = blue\n",
                  "agent.conf:4: [local] unknown key \"colour\"" },
                { "[agent]\nbackends = local mosnet\n[bridge]\nbridge = br0\n",
                  "agent.conf:4: unknown section [bridge]: not a backend that [agent] backends loads" },
                { "[local]\nColour = x\n", "agent.conf:2: unknown key \"Colour\" in [local]" },
                { "[local]\ndhcp = yes\ndhcp = no\n", "agent.conf:3: [local] dhcp is set twice" },
        };
        LocalConfig lbefore;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                setup();
                AgentConfig before = c;
                lbefore = l;
                cr_assert_lt(load(cases[i].text), 0, "accepted: %s", cases[i].text);
                cr_assert(strstr(error_message(&err), cases[i].expect),
                          "case %zu: got \"%s\", expected \"%s\"", i, err, cases[i].expect);
                cr_assert_eq(memcmp(&before, &c, sizeof(c)), 0, "case %zu changed the config", i);
                cr_assert_eq(memcmp(&lbefore, &l, sizeof(l)), 0, "case %zu changed [local]", i);
        }
}

/* [bridge] and [mosnet] through the modules themselves, as the agent (and --check-config) loads them. */
Test(config, bridge_and_mosnet_sections_through_their_modules) {
        if (geteuid() != 0)
                cr_skip_test("the loader takes modules owned by root only");
        static const struct {
                const char *name, *text, *expect; /* NULL: accepted */
        } cases[] = {
                { "bridge", "[bridge]\nbridge = br-lan\ntap_prefix = vb-\n", NULL },
                { "bridge", "[bridge]\nbridge = all\n",
                  "agent.conf:2: [bridge] bridge \"all\" is not a valid interface name" },
                { "bridge", "[bridge]\n\ntap_prefix = twelve-chars\n",
                  "agent.conf:3: [bridge] tap_prefix \"twelve-chars\"" },
                { "bridge", "[bridge]\nsubnet = 10.0.0.0/24\n",
                  "agent.conf:2: [bridge] unknown key \"subnet\"" },
                { "mosnet", "[mosnet]\nbridge = x\n",
                  "agent.conf:2: [mosnet] unknown key \"bridge\" (the mosnet backend has no settings)" },
                { "local", "[local]\nsubnet = 10.0.0.0/16\ngateway = 10.1.0.1\n",
                  "agent.conf: [local] gateway is not a host address of subnet 10.0.0.0/16" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                setup();
                cr_assert_eq(config_load_string(&c, "agent.conf", cases[i].text, &err), 0, "%s",
                             error_message(&err));
                BackendSetting s[CONFIG_MAX_SETTINGS];
                BackendConfig bc = { .settings = s,
                                     .n_settings = config_backend_settings(&c, cases[i].name, s,
                                                                           CONFIG_MAX_SETTINGS),
                                     .settings_source = c.source };
                error_clear(&err);
                int r = backend_check(BUILD_BACKEND_DIR, cases[i].name, &bc, &err);
                if (!cases[i].expect)
                        cr_assert_eq(r, 0, "case %zu: %s", i, error_message(&err));
                else {
                        cr_assert_eq(r, -EINVAL, "case %zu accepted", i);
                        cr_assert(strstr(error_message(&err), cases[i].expect), "case %zu: got \"%s\"", i,
                                  error_message(&err));
                }
        }
}

Test(config, file_errors) {
        cr_assert_eq(config_load(&c, "/nonexistent/agent.conf", &err), -ENOENT);
        cr_assert_str_eq(error_message(&err), "/nonexistent/agent.conf: No such file or directory");

        char path[] = "/tmp/chvm-config-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        const char *text = "[vmm]\nhypervisor = qemu\nfoo = bar\n";
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        cr_assert_lt(config_load(&c, path, &err), 0);
        char expect[128];
        snprintf(expect, sizeof(expect), "%s:3: unknown key \"foo\" in [vmm]", path);
        cr_assert_str_eq(error_message(&err), expect);

        /* the parser would stop at the NUL and never see the bad key after it */
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "[vmm]\nhypervisor = qemu\n\0foo = bar\n", 34), 34);
        close(fd);
        cr_assert_eq(config_load(&c, path, &err), -EINVAL);
        snprintf(expect, sizeof(expect), "%s: not a text file (a NUL byte at offset 24)", path);
        cr_assert_str_eq(error_message(&err), expect);

        /* a line of 198 bytes is fine, from a file too */
        char line[256];
        snprintf(line, sizeof(line), "[agent]\nstate_dir = /%0185d\n", 0);
        cr_assert_eq(strlen(line) - strlen("[agent]\n") - 1, 198);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        cr_assert_eq(write(fd, line, strlen(line)), (ssize_t) strlen(line));
        close(fd);
        cr_assert_eq(config_load(&c, path, &err), 0, "%s", error_message(&err));
        cr_assert_eq(strlen(c.state_dir), 186);
        unlink(path);
}
