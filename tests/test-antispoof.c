/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Anti-spoofing of the `local` layout (DESIGN.md "nftables layout of local"), end to end: in a private
 * network namespace, bridge chvm0 with three TAPs, our nft layout, and vm_ports/vm_addrs elements for
 * tap-a (VM a) and tap-b (VM b); tap-c is a port with no elements. The test holds the TAP fds and writes
 * Ethernet frames into them, as a guest would.
 *
 * Two independent oracles for every frame:
 *   - a capture: an AF_PACKET socket on chvm0 sees what passed the bridge's prerouting hook and was sent
 *     up the bridge device (broadcast ARP, and IPv4 addressed to the bridge's MAC). Each probe frame
 *     carries a unique marker and is followed by a sentinel frame with the sender's own addresses from
 *     the same TAP; a TAP write runs the frame through the bridge in order, so once the sentinel has
 *     arrived (within 1 s) the probe has either arrived before it or was dropped.
 *   - counters: a separate table `bridge chvmtest` (made with the nft CLI; our tables are not touched)
 *     counts every frame entering each TAP port before our chain (priority -300) and after it (-100).
 *     Ingress on a TAP port is exactly what the test writes, so the deltas are exact. */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"
#include "tests/shell-oracle.h"

#define AGENT "chvm1:c41e5500-1234-4000-8000-deadbeef0001"
#define MARKER_LEN 16

static const NftLayout layout = {
        .table = "chvm",
        .bridge = "chvm0",
        .subnet = 0xc0a8c800,
        .prefixlen = 24,
        .tag_prefix = AGENT,
};

/* A VM behind a TAP. host_mac is the TAP's own (host side) address; mac is the guest's, the one its
 * frames carry. */
typedef struct Vm {
        const char *tap;
        const char *id;
        uint8_t host_mac[6];
        uint8_t mac[6];
        uint32_t ip; /* host byte order */
        bool listed; /* has vm_ports / vm_addrs elements */
} Vm;

enum { VM_A, VM_B, VM_C, N_VMS };

static const Vm vms[N_VMS] = {
        [VM_A] = { "tap-a",
                   "000000000000000a",
                   { 0x02, 0xc4, 0xff, 0, 0, 0x0a },
                   { 0x02, 0xc4, 0, 0, 0, 0x0a },
                   0xc0a8c802,
                   true },
        [VM_B] = { "tap-b",
                   "000000000000000b",
                   { 0x02, 0xc4, 0xff, 0, 0, 0x0b },
                   { 0x02, 0xc4, 0, 0, 0, 0x0b },
                   0xc0a8c803,
                   true },
        [VM_C] = { "tap-c",
                   "000000000000000c",
                   { 0x02, 0xc4, 0xff, 0, 0, 0x0c },
                   { 0x02, 0xc4, 0, 0, 0, 0x0c },
                   0xc0a8c804,
                   false },
};

static const uint8_t foreign_mac[6] = { 0x02, 0x5e, 0x11, 0x22, 0x33, 0x44 };
#define FOREIGN_IP 0x0a010203u /* 10.1.2.3 */
#define BRIDGE_IP 0xc0a8c801u

static Rtnl *rtnl;
static Nft *nft;
static int tap_fd[N_VMS] = { -1, -1, -1 };
static size_t vnet_hdr_len;
static int cap_fd = -1;
static uint8_t bridge_mac[6];
static unsigned marker_seq;

/* --- helpers ------------------------------------------------------------------------------------- */

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* A marker no other frame of this test carries. */
static void new_marker(char m[MARKER_LEN]) {
        char s[MARKER_LEN + 1];
        snprintf(s, sizeof(s), "AS%06u-%07u", (unsigned) getpid() % 1000000, ++marker_seq);
        memcpy(m, s, MARKER_LEN);
}

static uint16_t ip_checksum(const void *data, size_t len) {
        const uint8_t *p = data;
        uint32_t sum = 0;
        for (size_t i = 0; i + 1 < len; i += 2)
                sum += (uint32_t) p[i] << 8 | p[i + 1];
        if (len & 1)
                sum += (uint32_t) p[len - 1] << 8;
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return htons((uint16_t) ~sum);
}

static size_t put_eth(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type) {
        memcpy(f, dst, 6);
        memcpy(f + 6, src, 6);
        f[12] = type >> 8;
        f[13] = type & 0xff;
        return ETH_HLEN;
}

/* Ethernet + IPv4 + UDP to the bridge (its MAC and 192.168.200.1, discard port), the marker as payload. */
static size_t build_ipv4(uint8_t *f, const uint8_t *src_mac, uint32_t src_ip,
                         const char marker[MARKER_LEN]) {
        size_t off = put_eth(f, bridge_mac, src_mac, ETH_P_IP);
        uint8_t *ip = f + off;
        size_t ip_len = 20 + 8 + MARKER_LEN;
        uint32_t saddr = htonl(src_ip), daddr = htonl(BRIDGE_IP);
        memset(ip, 0, 20);
        ip[0] = 0x45;
        ip[2] = ip_len >> 8;
        ip[3] = ip_len & 0xff;
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        memcpy(ip + 12, &saddr, 4);
        memcpy(ip + 16, &daddr, 4);
        uint16_t csum = ip_checksum(ip, 20);
        memcpy(ip + 10, &csum, 2);
        uint8_t *udp = ip + 20;
        udp[0] = 0xc0, udp[1] = 0x01; /* source port 49153 */
        udp[2] = 0, udp[3] = 9;
        udp[4] = (8 + MARKER_LEN) >> 8;
        udp[5] = (8 + MARKER_LEN) & 0xff;
        udp[6] = udp[7] = 0; /* no UDP checksum */
        memcpy(udp + 8, marker, MARKER_LEN);
        return off + ip_len;
}

/* A broadcast ARP request "who has 192.168.200.1, tell <sender ip>" from eth_src with sender hardware
 * address sha; the marker rides in the trailer after the 28 bytes of ARP (padding the frame to the
 * Ethernet minimum), which ARP ignores. */
static size_t build_arp(uint8_t *f, const uint8_t *eth_src, const uint8_t *sha, uint32_t sender_ip,
                        const char marker[MARKER_LEN]) {
        static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
        size_t off = put_eth(f, bcast, eth_src, ETH_P_ARP);
        uint8_t *a = f + off;
        uint32_t spa = htonl(sender_ip), tpa = htonl(BRIDGE_IP);
        a[0] = 0, a[1] = 1; /* Ethernet */
        a[2] = 0x08, a[3] = 0x00; /* IPv4 */
        a[4] = 6, a[5] = 4;
        a[6] = 0, a[7] = 1; /* request */
        memcpy(a + 8, sha, 6);
        memcpy(a + 14, &spa, 4);
        memset(a + 18, 0, 6);
        memcpy(a + 24, &tpa, 4);
        memset(a + 28, 0, ETH_ZLEN - ETH_HLEN - 28);
        memcpy(a + 28, marker, MARKER_LEN);
        return ETH_ZLEN;
}

/* Writes one frame into the TAP as the guest would: behind a virtio_net_hdr of zeros (no offloads). */
static void inject(int vm, const uint8_t *frame, size_t len) {
        uint8_t hdr[sizeof(struct virtio_net_hdr_mrg_rxbuf)] = {};
        struct iovec iov[2] = {
                { .iov_base = hdr, .iov_len = vnet_hdr_len },
                { .iov_base = (void *) frame, .iov_len = len },
        };
        ssize_t n = writev(tap_fd[vm], iov, 2);
        cr_assert_eq(n, (ssize_t) (vnet_hdr_len + len), "write into %s: %zd (%s)", vms[vm].tap, n,
                     n < 0 ? strerror(errno) : "short");
}

static void drain_capture(void) {
        uint8_t buf[2048];
        while (recv(cap_fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
                ;
        cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "capture: %s", strerror(errno));
}

/* Reads the capture until the frame carrying `sentinel` arrives (at most 1 s); returns whether the frame
 * carrying `probe` arrived first. */
static bool probe_seen_before(const char probe[MARKER_LEN], const char sentinel[MARKER_LEN]) {
        bool seen = false;
        uint64_t deadline = now_ms() + 1000;
        for (;;) {
                uint64_t t = now_ms();
                cr_assert_lt(t, deadline,
                             "the sentinel frame (own addresses) did not reach chvm0 within 1 s");
                struct pollfd p = { .fd = cap_fd, .events = POLLIN };
                int r = poll(&p, 1, (int) (deadline - t));
                cr_assert_geq(r, 0, "poll: %s", strerror(errno));
                if (r == 0)
                        continue;
                uint8_t buf[2048];
                struct sockaddr_ll from;
                socklen_t fl = sizeof(from);
                ssize_t n = recvfrom(cap_fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *) &from, &fl);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                cr_assert_geq(n, 0, "capture: %s", strerror(errno));
                if (from.sll_pkttype == PACKET_OUTGOING)
                        continue;
                if (memmem(buf, (size_t) n, probe, MARKER_LEN))
                        seen = true;
                if (memmem(buf, (size_t) n, sentinel, MARKER_LEN))
                        return seen;
        }
}

static uint64_t counter(const char *name) {
        char *out = sh("nft -j list counter bridge chvmtest %s 2>&1", name);
        const char *p = strstr(out, "\"packets\": ");
        cr_assert(p, "nft list counter %s: %s", name, out);
        uint64_t v = strtoull(p + strlen("\"packets\": "), NULL, 10);
        free(out);
        return v;
}

/* Writes the probe frame into vm's TAP, then a sentinel with vm's own addresses; returns whether the
 * probe passed our bridge chain, after checking that the capture and the counters agree on it. */
static bool passes(int vm, const uint8_t *frame, size_t len, const char marker[MARKER_LEN]) {
        char seen_name[32], passed_name[32], sentinel[MARKER_LEN];
        uint8_t s[128];
        snprintf(seen_name, sizeof(seen_name), "seen_%c", vms[vm].tap[4]);
        snprintf(passed_name, sizeof(passed_name), "passed_%c", vms[vm].tap[4]);
        uint64_t seen0 = counter(seen_name), passed0 = counter(passed_name);

        drain_capture();
        inject(vm, frame, len);
        new_marker(sentinel);
        inject(vm, s, build_ipv4(s, vms[vm].mac, vms[vm].ip, sentinel));
        bool captured = probe_seen_before(marker, sentinel);

        uint64_t seen = counter(seen_name) - seen0, passed = counter(passed_name) - passed0;
        cr_assert_eq(seen, 2, "%s: %" PRIu64 " frames entered the port, 2 were written", vms[vm].tap, seen);
        cr_assert_eq(passed, captured ? 2 : 1,
                     "%s: the counters say %" PRIu64 " of 2 frames passed, the capture says the probe %s",
                     vms[vm].tap, passed, captured ? "passed" : "was dropped");
        return captured;
}

/* --- the namespace ------------------------------------------------------------------------------- */

static void elem(NftBatch *b, NftElemKind kind, const Vm *v) {
        NftElem e = { .kind = kind, .guest_ip = v->ip };
        memcpy(e.mac, v->mac, 6);
        snprintf(e.ifname, sizeof(e.ifname), "%s", v->tap);
        snprintf(e.tag, sizeof(e.tag), AGENT ":%s:%s", v->id, kind == NFT_ELEM_VM_PORT ? "port" : "addr");
        cr_assert_eq(nft_batch_elem(b, &layout, &e, true), 0);
}

/* Opens the persistent TAP as its guest side. tap_create() made it with IFF_VNET_HDR, so the guest side
 * must speak virtio_net_hdr: ask for it, and check what the kernel says we got and how long it is. */
static int tap_open(const char *name) {
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        cr_assert_geq(fd, 0, "/dev/net/tun: %s", strerror(errno));
        struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
        cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0, "TUNSETIFF %s: %s", name, strerror(errno));
        struct ifreq got = {};
        cr_assert_eq(ioctl(fd, TUNGETIFF, &got), 0, "TUNGETIFF: %s", strerror(errno));
        cr_assert_eq(got.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
                     IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, "%s flags %#x", name, (unsigned) got.ifr_flags);
        int hdr = 0;
        cr_assert_eq(ioctl(fd, TUNGETVNETHDRSZ, &hdr), 0, "TUNGETVNETHDRSZ: %s", strerror(errno));
        cr_assert_eq(hdr, (int) sizeof(struct virtio_net_hdr), "%s: vnet header of %d bytes", name, hdr);
        vnet_hdr_len = (size_t) hdr;
        return fd;
}

static bool all_ports_forwarding(void) {
        char *out = sh("bridge -j link show 2>&1");
        bool ok = true;
        for (int i = 0; i < N_VMS; i++) {
                char needle[64];
                snprintf(needle, sizeof(needle), "\"ifname\":\"%s\"", vms[i].tap);
                const char *p = strstr(out, needle);
                const char *end = p ? strchr(p, '}') : NULL;
                const char *st = p ? strstr(p, "\"state\":\"forwarding\"") : NULL;
                if (!st || (end && st > end))
                        ok = false;
        }
        free(out);
        return ok;
}

static void netns_setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        if (access("/dev/net/tun", R_OK | W_OK) < 0)
                cr_skip_test("/dev/net/tun is not usable: %s", strerror(errno));
        if (system("nft --version >/dev/null 2>&1") != 0 || system("bridge -V >/dev/null 2>&1") != 0)
                cr_skip_test("the nft and bridge commands (the test's oracles) are not installed");
        cr_assert_eq(rtnl_open(&rtnl), 0);
        cr_assert_eq(nft_open(&nft), 0);

        /* Our layout and the elements of VMs a and b, as the backend would add them. */
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_add_layout(b, &layout), 0);
        for (int i = 0; i < N_VMS; i++)
                if (vms[i].listed) {
                        elem(b, NFT_ELEM_VM_PORT, &vms[i]);
                        elem(b, NFT_ELEM_VM_ADDR, &vms[i]);
                }
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);

        /* The test's own counters, in a table of its own around our chain (priority -200). */
        char *out = sh(
                "nft -f - 2>&1 <<'EOF'\n"
                "table bridge chvmtest {\n"
                "  counter seen_a {}; counter seen_b {}; counter seen_c {};\n"
                "  counter passed_a {}; counter passed_b {}; counter passed_c {};\n"
                "  chain before { type filter hook prerouting priority -300;\n"
                "    iifname \"tap-a\" counter name \"seen_a\"; iifname \"tap-b\" counter name \"seen_b\";\n"
                "    iifname \"tap-c\" counter name \"seen_c\"; }\n"
                "  chain after { type filter hook prerouting priority -100;\n"
                "    iifname \"tap-a\" counter name \"passed_a\"; iifname \"tap-b\" counter name \"passed_b\";\n"
                "    iifname \"tap-c\" counter name \"passed_c\"; }\n"
                "}\n"
                "EOF\n");
        cr_assert_str_eq(out, "", "loading the test's counter table: %s", out);
        free(out);

        uint32_t br;
        cr_assert_eq(rtnl_bridge_create(rtnl, "chvm0", AGENT ":core:bridge", &br), 0, "%s",
                     rtnl_error_message(rtnl));
        cr_assert_eq(rtnl_addr_add4(rtnl, br, BRIDGE_IP, 24), 0, "%s", rtnl_error_message(rtnl));
        LinkChange up = LINK_CHANGE_KEEP;
        up.up = 1;
        cr_assert_eq(rtnl_link_change(rtnl, br, &up), 0, "%s", rtnl_error_message(rtnl));

        for (int i = 0; i < N_VMS; i++) {
                char tag[128];
                uint32_t ifindex;
                snprintf(tag, sizeof(tag), AGENT ":%s:tap", vms[i].id);
                cr_assert_eq(tap_create(rtnl, vms[i].tap, tag, (uid_t) -1, &ifindex), 0, "%s",
                             rtnl_error_message(rtnl));
                out = sh("ip -j -d link show dev %s", vms[i].tap);
                cr_assert(strstr(out, "\"vnet_hdr\":true") && strstr(out, "\"pi\":false"), "%s", out);
                free(out);
                LinkChange c = LINK_CHANGE_KEEP;
                c.master = br;
                c.mac = vms[i].host_mac;
                c.up = 1;
                cr_assert_eq(rtnl_link_change(rtnl, ifindex, &c), 0, "%s", rtnl_error_message(rtnl));
                tap_fd[i] = tap_open(vms[i].tap);
        }

        /* With a guest side attached each TAP gets its carrier and (no STP) its port starts forwarding;
         * the carrier change goes through the kernel's link watch, which may take up to a second. */
        uint64_t deadline = now_ms() + 5000;
        while (!all_ports_forwarding()) {
                cr_assert_lt(now_ms(), deadline, "bridge ports not forwarding after 5 s");
                usleep(20 * 1000);
        }

        /* The bridge takes its MAC from its ports: read it once they are all in. */
        LinkInfo l;
        cr_assert_eq(rtnl_link_get(rtnl, br, &l), 0);
        cr_assert(l.has_mac);
        memcpy(bridge_mac, l.mac, 6);

        cap_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
        cr_assert_geq(cap_fd, 0, "AF_PACKET: %s", strerror(errno));
        struct sockaddr_ll sll = { .sll_family = AF_PACKET,
                                   .sll_protocol = htons(ETH_P_ALL),
                                   .sll_ifindex = (int) br };
        cr_assert_eq(bind(cap_fd, (struct sockaddr *) &sll, sizeof(sll)), 0, "bind: %s", strerror(errno));
}

static void netns_teardown(void) {
        if (cap_fd >= 0)
                close(cap_fd);
        cap_fd = -1;
        for (int i = 0; i < N_VMS; i++) {
                if (tap_fd[i] >= 0)
                        close(tap_fd[i]);
                tap_fd[i] = -1;
        }
        nft = nft_close(nft);
        rtnl = rtnl_close(rtnl);
}

/* --- the cases ----------------------------------------------------------------------------------- */

static bool ipv4_passes(int vm, const uint8_t *src_mac, uint32_t src_ip) {
        uint8_t f[128];
        char m[MARKER_LEN];
        new_marker(m);
        return passes(vm, f, build_ipv4(f, src_mac, src_ip, m), m);
}

static bool arp_passes(int vm, const uint8_t *eth_src, const uint8_t *sha, uint32_t sender_ip) {
        uint8_t f[128];
        char m[MARKER_LEN];
        new_marker(m);
        return passes(vm, f, build_arp(f, eth_src, sha, sender_ip, m), m);
}

TestSuite(antispoof, .init = netns_setup, .fini = netns_teardown);

Test(antispoof, ipv4_own_addresses_pass) {
        cr_assert(ipv4_passes(VM_A, vms[VM_A].mac, vms[VM_A].ip), "VM a's own IPv4 frame was dropped");
        cr_assert(ipv4_passes(VM_B, vms[VM_B].mac, vms[VM_B].ip), "VM b's own IPv4 frame was dropped");
}

Test(antispoof, ipv4_other_vms_ip_dropped) {
        cr_assert_not(ipv4_passes(VM_A, vms[VM_A].mac, vms[VM_B].ip), "VM a sent as b's IP and it passed");
        cr_assert(ipv4_passes(VM_A, vms[VM_A].mac, vms[VM_A].ip));
}

Test(antispoof, ipv4_other_vms_mac_dropped) {
        cr_assert_not(ipv4_passes(VM_A, vms[VM_B].mac, vms[VM_A].ip),
                      "VM a sent with b's MAC and it passed");
        cr_assert(ipv4_passes(VM_A, vms[VM_A].mac, vms[VM_A].ip));
}

/* Both of another VM's addresses, from the wrong port: the port is part of the match. */
Test(antispoof, ipv4_other_vms_identity_dropped) {
        cr_assert_not(ipv4_passes(VM_A, vms[VM_B].mac, vms[VM_B].ip), "VM a posed as b and it passed");
        cr_assert_not(ipv4_passes(VM_B, vms[VM_A].mac, vms[VM_A].ip), "VM b posed as a and it passed");
        cr_assert(ipv4_passes(VM_B, vms[VM_B].mac, vms[VM_B].ip));
}

Test(antispoof, ipv4_foreign_ip_dropped) {
        cr_assert_not(ipv4_passes(VM_A, vms[VM_A].mac, FOREIGN_IP), "VM a sent as 10.1.2.3 and it passed");
        cr_assert_not(ipv4_passes(VM_A, vms[VM_A].mac, BRIDGE_IP), "VM a sent as the host and it passed");
        cr_assert_not(ipv4_passes(VM_A, foreign_mac, vms[VM_A].ip),
                      "VM a sent with a made-up MAC and it passed");
}

Test(antispoof, arp_own_addresses_pass) {
        cr_assert(arp_passes(VM_A, vms[VM_A].mac, vms[VM_A].mac, vms[VM_A].ip),
                  "VM a's own ARP was dropped");
        cr_assert(arp_passes(VM_B, vms[VM_B].mac, vms[VM_B].mac, vms[VM_B].ip),
                  "VM b's own ARP was dropped");
}

Test(antispoof, arp_other_vms_ip_dropped) {
        cr_assert_not(arp_passes(VM_A, vms[VM_A].mac, vms[VM_A].mac, vms[VM_B].ip),
                      "VM a claimed b's IP in ARP and it passed");
        cr_assert_not(arp_passes(VM_A, vms[VM_A].mac, vms[VM_A].mac, FOREIGN_IP),
                      "VM a claimed 10.1.2.3 in ARP and it passed");
        cr_assert(arp_passes(VM_A, vms[VM_A].mac, vms[VM_A].mac, vms[VM_A].ip));
}

Test(antispoof, arp_other_vms_mac_dropped) {
        cr_assert_not(arp_passes(VM_A, vms[VM_B].mac, vms[VM_B].mac, vms[VM_A].ip),
                      "VM a sent ARP from b's MAC and it passed");
        cr_assert_not(arp_passes(VM_B, vms[VM_A].mac, vms[VM_A].mac, vms[VM_A].ip),
                      "VM b sent ARP as a and it passed");
}

/* A port with no elements is not ours to filter: anything goes, even addresses of our VMs. */
Test(antispoof, port_not_in_vm_ports_unfiltered) {
        cr_assert(ipv4_passes(VM_C, vms[VM_C].mac, vms[VM_C].ip));
        cr_assert(ipv4_passes(VM_C, foreign_mac, FOREIGN_IP), "a frame of an unlisted port was dropped");
        cr_assert(ipv4_passes(VM_C, vms[VM_A].mac, vms[VM_A].ip), "a frame of an unlisted port was dropped");
        cr_assert(arp_passes(VM_C, foreign_mac, foreign_mac, FOREIGN_IP),
                  "an ARP of an unlisted port was dropped");
}

/* An IPv6 frame to the bridge with the given source MAC: the marker as the payload of an empty IPv6
 * header (next header 59, "no next header"). */
static size_t build_ipv6(uint8_t *f, const uint8_t *src_mac, const char marker[MARKER_LEN]) {
        size_t off = put_eth(f, bridge_mac, src_mac, ETH_P_IPV6);
        uint8_t *ip6 = f + off;
        memset(ip6, 0, 40);
        ip6[0] = 0x60;
        ip6[5] = MARKER_LEN;
        ip6[6] = 59;
        ip6[7] = 64;
        ip6[8] = 0xfe, ip6[9] = 0x80, ip6[23] = 0x0a; /* fe80::a */
        ip6[24] = 0xfe, ip6[25] = 0x80, ip6[39] = 0x01; /* fe80::1 */
        memcpy(ip6 + 40, marker, MARKER_LEN);
        return off + 40 + MARKER_LEN;
}

/* The ARP frame of build_arp() with an 802.1Q tag (VLAN 5) between the MACs and the ARP type. */
static size_t build_vlan_arp(uint8_t *f, const uint8_t *eth_src, uint32_t sender_ip,
                             const char marker[MARKER_LEN]) {
        uint8_t plain[128];
        size_t n = build_arp(plain, eth_src, eth_src, sender_ip, marker);
        memcpy(f, plain, 12);
        f[12] = 0x81, f[13] = 0x00, f[14] = 0x00, f[15] = 0x05;
        memcpy(f + 16, plain + 12, n - 12);
        return n + 4;
}

/* Only IPv4 and ARP leave a VM port: otherwise any other frame type could carry another VM's MAC past
 * the address checks and teach the bridge to send that VM's traffic here. */
Test(antispoof, other_frame_types_dropped) {
        uint8_t f[256];
        char m[MARKER_LEN];
        new_marker(m);
        cr_assert_not(passes(VM_A, f, build_ipv6(f, vms[VM_B].mac, m), m),
                      "IPv6 from a with b's MAC passed");
        new_marker(m);
        cr_assert_not(passes(VM_A, f, build_ipv6(f, vms[VM_A].mac, m), m), "IPv6 from a VM port passed");
        new_marker(m);
        cr_assert_not(passes(VM_A, f, build_vlan_arp(f, vms[VM_A].mac, vms[VM_B].ip, m), m),
                      "a VLAN-tagged ARP claiming b's IP passed");
        new_marker(m);
        cr_assert(passes(VM_C, f, build_ipv6(f, vms[VM_B].mac, m), m),
                  "an unlisted port's IPv6 frame was dropped");
}

/* The sender hardware address inside the ARP packet is checked too, not only the Ethernet source. */
Test(antispoof, arp_sender_hardware_address_checked) {
        cr_assert_not(arp_passes(VM_A, vms[VM_A].mac, vms[VM_B].mac, vms[VM_A].ip),
                      "an ARP from a naming b's MAC as its sender passed");
        cr_assert(arp_passes(VM_A, vms[VM_A].mac, vms[VM_A].mac, vms[VM_A].ip));
}
