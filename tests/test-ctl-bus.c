/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* agent/ctl-bus: chvmctl's D-Bus client. Against a real sd-bus server (a thread on the other end of a
 * socket, the way chvm-agentd serves): calls with every type chvmctl sends, replies with every type it
 * reads, error replies, signals in between, authentication; and on its own: the messages it builds parse
 * back, and malformed ones are refused without a read outside them. */

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "agent/ctl-bus.h"

#define PATH "/org/chvm/test"
#define IFACE "org.chvm.Test1"

/* Echo(s t u q b as a(sqq)) -> (s t u q b as a(sqq)) s: the arguments back in a struct, then a string;
 * with a signal of its own sent first. */
static int method_echo(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *s;
        uint64_t t;
        uint32_t u;
        uint16_t q;
        int b;
        char **strv = NULL;
        sd_bus_message *reply = NULL;
        (void) userdata;
        (void) error;

        int r = sd_bus_message_read(m, "stuqb", &s, &t, &u, &q, &b);
        if (r >= 0)
                r = sd_bus_message_read_strv(m, &strv);
        if (r < 0)
                return r;
        r = sd_bus_emit_signal(sd_bus_message_get_bus(m), PATH, IFACE, "Noise", "a{sv}s", 1, "k", "u", 7,
                               "between");
        if (r >= 0)
                r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'r', "stuqbasa(sqq)");
        if (r >= 0)
                r = sd_bus_message_append(reply, "stuqb", s, t, u, q, b);
        if (r >= 0)
                r = sd_bus_message_append_strv(reply, strv);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sqq)");
        const char *proto;
        uint16_t host, guest;
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "(sqq)");
        while (r >= 0 && (r = sd_bus_message_read(m, "(sqq)", &proto, &host, &guest)) > 0)
                r = sd_bus_message_append(reply, "(sqq)", proto, host, guest);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", "end");
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        for (char **p = strv; p && *p; p++)
                free(*p);
        free(strv);
        return r < 0 ? r : 1;
}

static int method_fail(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        (void) m;
        (void) userdata;
        return sd_bus_error_set(error, "org.chvm.Test1.Error.Bad", "VM web: it went wrong");
}

static int method_deny(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        (void) m;
        (void) userdata;
        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "not for you");
}

static const sd_bus_vtable vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Echo", "stuqbasa(sqq)", "(stuqbasa(sqq))s", method_echo, 0),
        SD_BUS_METHOD("Fail", "", "", method_fail, 0),
        SD_BUS_METHOD("Deny", "", "", method_deny, 0),
        SD_BUS_SIGNAL("Noise", "a{sv}s", 0),
        SD_BUS_VTABLE_END,
};

typedef struct Server {
        int fd;
        int stop_fd; /* written by the test when done */
} Server;

static void *serve(void *userdata) {
        Server *srv = userdata;
        sd_bus *bus = NULL;
        sd_id128_t id;
        cr_assert_geq(sd_id128_randomize(&id), 0);
        cr_assert_geq(sd_bus_new(&bus), 0);
        cr_assert_geq(sd_bus_set_fd(bus, srv->fd, srv->fd), 0);
        cr_assert_geq(sd_bus_set_server(bus, 1, id), 0);
        cr_assert_geq(sd_bus_add_object_vtable(bus, NULL, PATH, IFACE, vtable, NULL), 0);
        cr_assert_geq(sd_bus_start(bus), 0);
        for (;;) {
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        break;
                if (r > 0)
                        continue;
                char c;
                if (recv(srv->stop_fd, &c, 1, MSG_DONTWAIT) >= 0 || errno != EAGAIN)
                        break;
                (void) sd_bus_wait(bus, 20000);
        }
        sd_bus_flush_close_unref(bus);
        return NULL;
}

/* A listening unix socket at path (made unique by the pid), that no one accepts on yet. */
static int listen_at(char path[108], const char *name) {
        snprintf(path, 108, "/tmp/test-ctl-bus-%s-%d.sock", name, (int) getpid());
        (void) unlink(path);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, path);
        cr_assert_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        cr_assert_eq(listen(l, 4), 0);
        return l;
}

/* A server thread on a unix socket of its own. */
static char sock_path[108];
static pthread_t server_thread;
static int stop_pair[2];
static Server srv;

static void start_server(void) {
        int l = listen_at(sock_path, "sd-bus");
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stop_pair), 0);
        /* accept in the thread's stead once the client connects: the test connects first */
        srv.stop_fd = stop_pair[1];
        srv.fd = l; /* replaced by the accepted socket in connect_client() */
}

static CtlBus *connect_client(void) {
        CtlBus *b = NULL;
        cr_assert_eq(ctl_bus_connect(sock_path, &b), 0);
        int c = accept4(srv.fd, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(c, 0);
        close(srv.fd);
        unlink(sock_path);
        srv.fd = c;
        cr_assert_eq(pthread_create(&server_thread, NULL, serve, &srv), 0);
        return b;
}

static void stop_server(void) {
        cr_assert_eq(send(stop_pair[0], "x", 1, 0), 1);
        pthread_join(server_thread, NULL);
        close(stop_pair[0]);
        close(stop_pair[1]);
}

Test(ctl_bus, a_call_and_its_reply_through_sd_bus) {
        start_server();
        CtlBus *b = connect_client();

        for (int round = 0; round < 3; round++) { /* one connection, several calls */
                _cleanup_(ctl_msg_freep) CtlMsg *m = NULL, *reply = NULL;
                CtlBusError e = {};
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Echo", &m), 0);
                cr_assert_eq(ctl_msg_append(m, "stuqb", "n\xc3\xa4me", UINT64_C(0x1122334455667788),
                                            (uint32_t) 4000000000u, 65535, round == 1),
                             0);
                cr_assert_eq(ctl_msg_open_container(m, 'a', "s"), 0);
                for (int i = 0; i < round; i++)
                        cr_assert_eq(ctl_msg_append(m, "s", i ? "/disk/b" : "/disk/a"), 0);
                cr_assert_eq(ctl_msg_close_container(m), 0);
                cr_assert_eq(ctl_msg_open_container(m, 'a', "(sqq)"), 0);
                cr_assert_eq(ctl_msg_append(m, "(sqq)", "tcp", 8080, 80), 0);
                cr_assert_eq(ctl_msg_append(m, "(sqq)", "udp", 53, 5353), 0);
                cr_assert_eq(ctl_msg_append(m, "s", "x"), -EINVAL, "not the array's element type");
                cr_assert_eq(ctl_msg_close_container(m), 0);

                cr_assert_eq(ctl_bus_call(b, m, 5000000, &e, &reply), 0, "round %d", round);
                cr_assert_null(e.name);
                cr_assert_str_eq(ctl_msg_signature(reply), "(stuqbasa(sqq))s");

                const char *s, *proto, *end;
                uint64_t t;
                uint32_t u;
                uint16_t q, host, guest;
                int bo;
                char **strv = NULL;
                cr_assert_eq(ctl_msg_read(reply, "s", &s), -ENXIO, "a struct comes first");
                cr_assert_eq(ctl_msg_enter_container(reply, 'r', "stuqbasa(sqq)"), 1);
                cr_assert_eq(ctl_msg_read(reply, "stuqb", &s, &t, &u, &q, &bo), 1);
                cr_assert_str_eq(s, "n\xc3\xa4me");
                cr_assert_eq(t, UINT64_C(0x1122334455667788));
                cr_assert_eq(u, 4000000000u);
                cr_assert_eq(q, 65535);
                cr_assert_eq(bo, round == 1);
                cr_assert_eq(ctl_msg_read_strv(reply, &strv), 0);
                size_t n = 0;
                while (strv[n])
                        n++;
                cr_assert_eq(n, (size_t) round);
                if (round == 2)
                        cr_assert_str_eq(strv[1], "/disk/b");
                for (size_t i = 0; i < n; i++)
                        free(strv[i]);
                free(strv);
                cr_assert_eq(ctl_msg_enter_container(reply, 'a', "(sqq)"), 1);
                cr_assert_eq(ctl_msg_read(reply, "(sqq)", &proto, &host, &guest), 1);
                cr_assert(strcmp(proto, "tcp") == 0 && host == 8080 && guest == 80);
                if (round == 0) {
                        /* left early: the exit skips the rest of the array */
                        cr_assert_eq(ctl_msg_exit_container(reply), 1);
                } else {
                        cr_assert_eq(ctl_msg_read(reply, "(sqq)", &proto, &host, &guest), 1);
                        cr_assert(strcmp(proto, "udp") == 0 && host == 53 && guest == 5353);
                        cr_assert_eq(ctl_msg_read(reply, "(sqq)", &proto, &host, &guest), 0, "the end");
                        cr_assert_eq(ctl_msg_exit_container(reply), 1);
                }
                cr_assert_eq(ctl_msg_exit_container(reply), 1);
                cr_assert_eq(ctl_msg_read(reply, "u", &u), -ENXIO, "a string is next");
                cr_assert_eq(ctl_msg_read(reply, "s", &end), 1);
                cr_assert_str_eq(end, "end");
                cr_assert_eq(ctl_msg_read(reply, "s", &end), 0, "the end of the message");
        }

        /* an error reply: its name and message; AccessDenied as -EACCES */
        {
                _cleanup_(ctl_msg_freep) CtlMsg *m = NULL;
                CtlMsg *reply = NULL;
                CtlBusError e = {};
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Fail", &m), 0);
                cr_assert_eq(ctl_bus_call(b, m, 5000000, &e, &reply), -EREMOTEIO);
                cr_assert_str_eq(e.name, "org.chvm.Test1.Error.Bad");
                cr_assert_str_eq(e.message, "VM web: it went wrong");
                cr_assert_null(reply);
                ctl_bus_error_free(&e);
                ctl_msg_free(m);
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Deny", &m), 0);
                cr_assert_eq(ctl_bus_call(b, m, 5000000, &e, &reply), -EACCES);
                cr_assert_str_eq(e.name, CTL_BUS_ERROR_ACCESS_DENIED);
                ctl_bus_error_free(&e);
                ctl_msg_free(m);
                /* sd-bus's own refusal of an unknown method, and of a call with the wrong signature */
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Nope", &m), 0);
                cr_assert_eq(ctl_bus_call(b, m, 5000000, &e, &reply), -EREMOTEIO);
                cr_assert_str_eq(e.name, "org.freedesktop.DBus.Error.UnknownMethod");
                ctl_bus_error_free(&e);
                ctl_msg_free(m);
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Echo", &m), 0);
                cr_assert_eq(ctl_msg_append(m, "s", "only"), 0);
                cr_assert_eq(ctl_bus_call(b, m, 5000000, &e, &reply), -EREMOTEIO);
                cr_assert_str_eq(e.name, "org.freedesktop.DBus.Error.InvalidArgs");
                ctl_bus_error_free(&e);
                ctl_msg_free(reply);
        }

        stop_server();
        /* the server is gone: the call fails, it does not hang */
        {
                _cleanup_(ctl_msg_freep) CtlMsg *m = NULL;
                CtlMsg *reply = NULL;
                CtlBusError e = {};
                cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Fail", &m), 0);
                int r = ctl_bus_call(b, m, 5000000, &e, &reply);
                cr_assert(r == -ECONNRESET || r == -EPIPE, "%s", strerror(-r));
        }
        ctl_bus_close(b);
}

Test(ctl_bus, a_silent_server_times_out) {
        char path[108];
        int l = listen_at(path, "silent");
        CtlBus *b = NULL;
        cr_assert_eq(ctl_bus_connect(path, &b), 0);
        unlink(path);
        _cleanup_(ctl_msg_freep) CtlMsg *m = NULL;
        CtlMsg *reply = NULL;
        CtlBusError e = {};
        cr_assert_eq(ctl_msg_new_call(PATH, IFACE, "Fail", &m), 0);
        cr_assert_eq(ctl_bus_call(b, m, 200000, &e, &reply), -ETIMEDOUT);
        ctl_bus_close(b);
        close(l);
        cr_assert_eq(ctl_bus_connect(path, &b), -ENOENT, "no socket there any more");
}

/* The wire form of a call, parsed back. */
static CtlMsg *round_trip(CtlMsg *m) {
        void *wire;
        size_t size;
        CtlMsg *back = NULL;
        cr_assert_eq(ctl_msg_serialize(m, 7, &wire, &size), 0);
        cr_assert_eq(ctl_msg_parse(wire, size, &back), 0);
        free(wire);
        return back;
}

Test(ctl_bus, what_it_builds_parses_back) {
        _cleanup_(ctl_msg_freep) CtlMsg *m = NULL, *back = NULL;
        cr_assert_eq(ctl_msg_new_call("/a", "a.b", "C", &m), 0);
        cr_assert_eq(ctl_msg_append(m, "ysotub", 9, "s", "/o/p", UINT64_C(5), 6u, 1), 0);
        cr_assert_eq(ctl_msg_append(m, "v", 1), -EINVAL, "a variant is not built");
        cr_assert_eq(ctl_msg_append(m, "as", NULL), -EINVAL, "arrays through open_container");
        cr_assert_eq(ctl_msg_open_container(m, 'r', "s"), -EINVAL);
        cr_assert_eq(ctl_msg_append(m, "s", "\xff"), -EINVAL, "not UTF-8");
        back = round_trip(m);
        cr_assert_eq(ctl_msg_type(back), 1);
        cr_assert_str_eq(ctl_msg_signature(back), "ysotub");
        uint8_t y;
        const char *s, *o;
        uint64_t t;
        uint32_t u;
        int b;
        cr_assert_eq(ctl_msg_read(back, "ysotub", &y, &s, &o, &t, &u, &b), 1);
        cr_assert(y == 9 && strcmp(s, "s") == 0 && strcmp(o, "/o/p") == 0 && t == 5 && u == 6 && b == 1);
        cr_assert_eq(ctl_msg_read(back, "s", &s), 0);
        cr_assert_eq(ctl_msg_append(back, "s", "x"), -EINVAL, "a received message is read only");
}

/* A received reply (type 2) built by hand: header fields REPLY_SERIAL and SIGNATURE, then body. */
static size_t reply_bytes(uint8_t *buf, const char *sig, const uint8_t *body, size_t body_len) {
        size_t n = 0;
        memset(buf, 0, 512);
        buf[0] = 'l';
        buf[1] = 2;
        buf[3] = 1;
        uint32_t bl = (uint32_t) body_len, serial = 3;
        memcpy(buf + 4, &bl, 4);
        memcpy(buf + 8, &serial, 4);
        n = 16;
        buf[n++] = 5; /* REPLY_SERIAL */
        buf[n++] = 1;
        buf[n++] = 'u';
        buf[n++] = 0;
        uint32_t rs = 1;
        memcpy(buf + n, &rs, 4);
        n += 4;
        buf[n++] = 8; /* SIGNATURE: at 24, aligned */
        buf[n++] = 1;
        buf[n++] = 'g';
        buf[n++] = 0;
        buf[n++] = (uint8_t) strlen(sig);
        memcpy(buf + n, sig, strlen(sig) + 1);
        n += strlen(sig) + 1;
        uint32_t fl = (uint32_t) (n - 16);
        memcpy(buf + 12, &fl, 4);
        n = (n + 7) & ~(size_t) 7;
        memcpy(buf + n, body, body_len);
        return n + body_len;
}

static int parse_and_read_string(const char *sig, const uint8_t *body, size_t len) {
        uint8_t buf[512];
        size_t n = reply_bytes(buf, sig, body, len);
        CtlMsg *m = NULL;
        int r = ctl_msg_parse(buf, n, &m);
        if (r < 0)
                return r;
        const char *s;
        uint32_t u;
        int b;
        if (sig[0] == 's')
                r = ctl_msg_read(m, "s", &s);
        else if (sig[0] == 'b')
                r = ctl_msg_read(m, "b", &b);
        else if (sig[0] == 'a') {
                r = ctl_msg_enter_container(m, 'a', "u");
                while (r > 0)
                        r = ctl_msg_read(m, "u", &u);
                if (r == 0)
                        r = ctl_msg_exit_container(m);
        }
        ctl_msg_free(m);
        return r;
}

Test(ctl_bus, malformed_messages_are_refused) {
        static const uint8_t good[] = { 2, 0, 0, 0, 'o', 'k', 0 };
        cr_assert_eq(parse_and_read_string("s", good, sizeof(good)), 1);
        static const uint8_t no_nul[] = { 2, 0, 0, 0, 'o', 'k', 'x' };
        cr_assert_eq(parse_and_read_string("s", no_nul, sizeof(no_nul)), -EBADMSG);
        static const uint8_t too_long[] = { 200, 0, 0, 0, 'o', 'k', 0 };
        cr_assert_eq(parse_and_read_string("s", too_long, sizeof(too_long)), -EBADMSG);
        static const uint8_t inner_nul[] = { 2, 0, 0, 0, 0, 'k', 0 };
        cr_assert_eq(parse_and_read_string("s", inner_nul, sizeof(inner_nul)), -EBADMSG);
        static const uint8_t bad_utf8[] = { 2, 0, 0, 0, 0xc3, 0x28, 0 };
        cr_assert_eq(parse_and_read_string("s", bad_utf8, sizeof(bad_utf8)), -EBADMSG);
        static const uint8_t bool2[] = { 2, 0, 0, 0 };
        cr_assert_eq(parse_and_read_string("b", bool2, sizeof(bool2)), -EBADMSG);
        static const uint8_t arr[] = { 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0 };
        cr_assert_eq(parse_and_read_string("au", arr, sizeof(arr)), 1);
        static const uint8_t arr_past[] = { 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0 };
        cr_assert_eq(parse_and_read_string("au", arr_past, sizeof(arr_past)), -EBADMSG);
        static const uint8_t arr_huge[] = { 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0 };
        cr_assert_eq(parse_and_read_string("au", arr_huge, sizeof(arr_huge)), -EBADMSG);
        static const uint8_t arr_split[] = { 6, 0, 0, 0, 1, 0, 0, 0, 2, 0 };
        cr_assert_eq(parse_and_read_string("au", arr_split, sizeof(arr_split)), -EBADMSG,
                     "an element cut by the array's end");

        /* a bad signature, truncation, a body length past the end, padding that is not zero */
        uint8_t buf[512];
        size_t n = reply_bytes(buf, "a", good, sizeof(good));
        CtlMsg *m = NULL;
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG, "\"a\" is no complete type");
        n = reply_bytes(buf, "(s", good, sizeof(good));
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG);
        n = reply_bytes(buf, "a{sv}", good, sizeof(good));
        cr_assert_eq(ctl_msg_parse(buf, n, &m), 0, "a dict is a type (of signals chvmctl skips)");
        ctl_msg_free(m);
        n = reply_bytes(buf, "{sv}", good, sizeof(good));
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG, "a dict entry outside an array");
        n = reply_bytes(buf, "s", good, sizeof(good));
        for (size_t cut = 0; cut < n; cut++)
                cr_assert_eq(ctl_msg_parse(buf, cut, &m), -EBADMSG, "cut at %zu", cut);
        buf[n - sizeof(good) - 1] = 1; /* the padding after the header fields */
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG);
        n = reply_bytes(buf, "s", good, sizeof(good));
        buf[0] = 'x';
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG, "no endianness");
        n = reply_bytes(buf, "s", good, sizeof(good));
        buf[3] = 2;
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG, "protocol version 2");
        n = reply_bytes(buf, "s", good, sizeof(good));
        buf[17] = 0; /* REPLY_SERIAL's variant signature: empty */
        cr_assert_eq(ctl_msg_parse(buf, n, &m), -EBADMSG);
}

Test(ctl_bus, big_endian_messages_read_too) {
        /* a reply of signature "u" with 0x01020304, written big-endian */
        static const uint8_t msg[] = { 'B', 2, 0, 1, 0, 0, 0, 4, 0,   0, 0, 9,   0, 0, 0, 15, 5, 1,
                                       'u', 0, 0, 0, 0, 1, 8, 1, 'g', 0, 1, 'u', 0, 0, 1, 2,  3, 4 };
        CtlMsg *m = NULL;
        uint32_t u;
        cr_assert_eq(ctl_msg_parse(msg, sizeof(msg), &m), 0);
        cr_assert_eq(ctl_msg_read(m, "u", &u), 1);
        cr_assert_eq(u, 0x01020304u);
        ctl_msg_free(m);
}
