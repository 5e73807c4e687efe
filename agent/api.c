/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "agent/api.h"
#include "agent/gc.h"
#include "backends/backend.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/utf8.h"
#include "vmm/argv.h"

#define VM_RECORD "(stssusssssa(sqq))"
#define VM_SPEC "(ssssutas)"
#define VM_OBJECTS "a(ssts)"
#define STATUS_RECORD "(ssssuuassu)"

typedef struct Conn Conn;

typedef enum PendingOp {
        PENDING_STOP,
        PENDING_KILL,
        PENDING_REMOVE,
        PENDING_START, /* answered when the hypervisor's API answers (api_start_done()) */
        PENDING_RUN,
} PendingOp;

/* A Stop/Kill/Remove call that is answered once its VM is down, a Start/Run call once it is up. */
typedef struct Pending {
        sd_bus_message *call;
        Conn *conn; /* whose call; NULL once that connection is gone */
        uint64_t vm_id;
        char name[33];
        PendingOp op;
        struct Pending *next;
} Pending;

/* What a connection may still do. */
typedef enum ConnState {
        CONN_OK,
        CONN_REFUSED, /* over a limit: its first call is answered with why, then it is closed */
        CONN_CLOSING, /* shut down by us; the messages already read are dropped unanswered */
} ConnState;

struct Conn {
        Api *api;
        sd_bus *bus;
        int fd;
        uint64_t serial; /* for the unique name Hello hands out */
        uid_t uid;
        bool privileged;
        ConnState state;
        char refusal[160]; /* CONN_REFUSED: the error text */
        uint64_t last_active; /* CLOCK_MONOTONIC usec of its last message */
        unsigned n_pending;
        sd_event_source *auth_post; /* until the handshake is over: see on_auth_post() */
        Conn *prev, *next;
};

struct Api {
        Agent *agent;
        sd_event *event;
        int listen_fd;
        bool own_socket; /* made (and so removed) by us, not passed by systemd */
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        sd_event_source *listen_source;
        /* Out of fds on accept (EMFILE, ENFILE): the listener rests for a moment instead of waking the loop
         * at once again, and the warning comes once per rest with how many accepts failed. */
        sd_event_source *rest_source;
        uint64_t accept_failures;
        gid_t control_gid;
        bool has_control_group;
        sd_id128_t server_id;
        uint64_t n_accepted;
        Conn *conns;
        size_t n_conns; /* all, the refused ones too */
        size_t n_refused;
        Pending *pending;
        sd_event_source *idle_source; /* closes idle connections ([agent] idle_timeout) */
        uint64_t last_refusal_log; /* usec: refusals are logged at most once a second */
        uint64_t n_refusals_unlogged;
        bool trim_pending; /* a connection with a big queue went away: give the memory back */
};

static const sd_bus_vtable api_vtable[];
static const sd_bus_vtable hello_vtable[];

/* --- errors ---------------------------------------------------------------------------------------- */

/* Every error text goes through here. sd-bus refuses to build an error reply whose text is not UTF-8,
 * and then the call gets no answer at all; a text cut short ("%.40s" of a client's string, a full
 * buffer) can end in half a character. */
_printf_(3, 4) static int set_error(sd_bus_error *error, const char *name, const char *fmt, ...) {
        char buf[2048];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        return sd_bus_error_set(error, name, utf8_sanitize(buf));
}

/* The one place where an error's kind becomes a D-Bus error name (and so chvmctl's exit code). */
static const char *const error_names[_ERROR_KIND_MAX] = {
        [ERROR_FAILED] = API_ERROR_FAILED,       [ERROR_INVALID] = API_ERROR_INVALID,
        [ERROR_NOT_FOUND] = API_ERROR_NOT_FOUND, [ERROR_EXISTS] = API_ERROR_EXISTS,
        [ERROR_BUSY] = API_ERROR_BUSY,           [ERROR_DENIED] = SD_BUS_ERROR_ACCESS_DENIED,
};

/* The failure r of a call, as the agent described it (e: its last error, when that is r's). */
static int reply_error(sd_bus_error *error, int r, const Error *e) {
        bool described = e && e->code == r && r < 0;
        ErrorKind k = described ? e->kind : error_kind_from_errno(r);
        return set_error(error, error_names[k >= 0 && k < _ERROR_KIND_MAX ? k : ERROR_FAILED], "%s",
                         described ? error_message(e) : strerror(-r));
}

static int reply_agent_error(sd_bus_error *error, int r, const Agent *a) {
        return reply_error(error, r, agent_last_error(a));
}

static int require_privileged(Conn *c, const char *what, sd_bus_error *error) {
        if (c->privileged)
                return 0;
        log_notice("access denied: uid %u may not %s (needs root or the control group)", (unsigned) c->uid,
                   what);
        return set_error(error, SD_BUS_ERROR_ACCESS_DENIED,
                         "access denied: %s needs root or membership in group %s", what,
                         agent_config(c->api->agent)->control_group);
}

/* --- connections ------------------------------------------------------------------------------------ */

static Conn *conn_free(Conn *c) {
        if (!c)
                return NULL;
        Api *api = c->api;
        /* Its calls still waiting for a VM: nobody is left to answer, and each holds the message (and so
         * the connection's memory). */
        for (Pending **pp = &api->pending; *pp;) {
                Pending *p = *pp;
                if (p->conn == c) {
                        *pp = p->next;
                        sd_bus_message_unref(p->call);
                        free(p);
                } else
                        pp = &p->next;
        }
        if (c->state == CONN_REFUSED)
                api->n_refused--;
        if (c->prev)
                c->prev->next = c->next;
        else
                api->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        api->n_conns--;
        c->auth_post = sd_event_source_disable_unref(c->auth_post);
        if (c->bus) {
                uint64_t q = 0;
                if (sd_bus_get_n_queued_write(c->bus, &q) >= 0 && q > 0)
                        api->trim_pending = true;
                sd_bus_detach_event(c->bus);
                sd_bus_close_unref(c->bus);
        }
        free(c);
        return NULL;
}

/* After each loop iteration while a connection authenticates. sd-bus (252) keeps what came in the same read
 * as BEGIN — a client's first call sent right behind it — in its buffer when the handshake ends, and looks
 * at it only when the socket turns readable again, which it does not: such a call was never answered (the
 * connection closed as idle after 60 s). Once the bus is running, it is processed until nothing is left. */
static int on_auth_post(sd_event_source *s, void *userdata) {
        Conn *c = userdata;
        (void) s;
        if (sd_bus_is_ready(c->bus) <= 0)
                return 0; /* still authenticating, or refused (the bus ends it) */
        c->auth_post = sd_event_source_disable_unref(c->auth_post);
        /* The calls it dispatches may end the connection and free c: the bus is held, c not touched. */
        sd_bus *bus = sd_bus_ref(c->bus);
        for (unsigned i = 0; i < 1024 && sd_bus_process(bus, NULL) > 0; i++)
                ; /* bounded: a client that keeps sending is served by its socket's events from here on */
        sd_bus_unref(bus);
        return 0;
}

/* Ends a connection from within the loop: shutdown() makes its bus see the end at the next read or write
 * and dispatch Disconnected, which frees it (conn_free() cannot run inside the bus's own callbacks). */
static void conn_close(Conn *c) {
        if (c->state == CONN_CLOSING)
                return;
        if (c->state == CONN_REFUSED)
                c->api->n_refused--;
        c->state = CONN_CLOSING;
        (void) shutdown(c->fd, SHUT_RDWR);
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        Api *api = c->api;
        (void) m;
        (void) error;
        conn_free(c);
        if (api->trim_pending) {
                /* its queue was freed in pieces malloc keeps for itself; a client that never read must
                 * not leave the agent big */
                api->trim_pending = false;
                (void) malloc_trim(0);
        }
        return 0;
}

/* Replies a connection may have waiting to be written when it sends another call: a client that does not
 * read its answers is dropped, not buffered for (3,000 unread InspectVM replies were 200 MB). chvmctl and
 * busctl have one call in flight. */
#define CONN_MAX_QUEUED_AT_CALL 8
#define API_CONN_SNDBUF (128 * 1024) /* the kernel doubles it */
/* Messages waiting for a client (replies and signals) beyond which it is dropped when a signal is sent:
 * a subscriber that does not read is disconnected, never let to hold the agent's memory. */
#define CONN_MAX_QUEUED 1024
/* Calls of one connection waiting for a VM to go down (StopVM, KillVM, RemoveVM). */
#define CONN_MAX_PENDING 16

/* Every message a client sends passes here first. */
static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        (void) error;
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected"))
                return 0;
        if (c->state == CONN_CLOSING)
                return 1; /* read before the shutdown: dropped */
        c->last_active = monotonic_usec();
        uint8_t type = 0;
        (void) sd_bus_message_get_type(m, &type);
        if (c->state == CONN_REFUSED) {
                /* written at once when the socket has room; a client that does not read loses it */
                if (type == SD_BUS_MESSAGE_METHOD_CALL && sd_bus_message_get_expect_reply(m))
                        (void) sd_bus_reply_method_errorf(m, API_ERROR_BUSY, "%s", c->refusal);
                conn_close(c);
                return 1;
        }
        uint64_t queued = 0;
        if (type == SD_BUS_MESSAGE_METHOD_CALL && sd_bus_get_n_queued_write(c->bus, &queued) >= 0 &&
            queued >= CONN_MAX_QUEUED_AT_CALL) {
                log_warning("control socket: a client of uid %u sends calls without reading the answers "
                            "(%" PRIu64 " waiting): disconnected",
                            (unsigned) c->uid, queued);
                conn_close(c);
                return 1;
        }
        return 0;
}

static bool peer_in_group(int fd, gid_t primary, gid_t want) {
        gid_t groups[256];
        socklen_t len = sizeof(groups);
        if (primary == want)
                return true;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
                return false;
        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                if (groups[i] == want)
                        return true;
        return false;
}

/* At most API_MAX_CONNECTIONS at once, of which API_ROOT_CONNECTIONS only for uid 0, and
 * [agent] connections_per_uid for any other uid: 512 idle clients of one user locked everyone out. */
#define API_ROOT_CONNECTIONS 16
/* Refused clients are told why on their first call; this many at once, the rest are just closed. */
#define API_MAX_REFUSED 32
#define REFUSED_TIMEOUT_USEC (UINT64_C(2) * 1000000)

/* Why a client of uid may not connect now, in ret (empty: it may). */
static void admission(Api *api, uid_t uid, char *ret, size_t size) {
        size_t used = api->n_conns - api->n_refused, of_uid = 0;
        unsigned per_uid = agent_config(api->agent)->connections_per_uid;
        ret[0] = '\0';
        if (used >= API_MAX_CONNECTIONS) {
                snprintf(ret, size, "too many connections: all %d are in use", API_MAX_CONNECTIONS);
                return;
        }
        if (uid == 0)
                return;
        if (used >= API_MAX_CONNECTIONS - API_ROOT_CONNECTIONS) {
                snprintf(ret, size,
                         "too many connections: %zu of %d are in use, the last %d are kept for root", used,
                         API_MAX_CONNECTIONS, API_ROOT_CONNECTIONS);
                return;
        }
        for (Conn *c = api->conns; c; c = c->next)
                if (c->uid == uid && c->state != CONN_REFUSED)
                        of_uid++;
        if (of_uid >= per_uid)
                snprintf(
                        ret, size,
                        "too many connections from uid %u (at most %u per uid: [agent] connections_per_uid)",
                        (unsigned) uid, per_uid);
}

static void log_refusal(Api *api, const char *why) {
        uint64_t now = monotonic_usec();
        if (api->last_refusal_log && now - api->last_refusal_log < 1000000) {
                api->n_refusals_unlogged++;
                return;
        }
        if (api->n_refusals_unlogged)
                log_warning("control socket: client refused: %s (and %" PRIu64
                            " more refused in the last second)",
                            why, api->n_refusals_unlogged);
        else
                log_warning("control socket: client refused: %s", why);
        api->last_refusal_log = now;
        api->n_refusals_unlogged = 0;
}

#define IDLE_CHECK_USEC (UINT64_C(1000000))

/* Once a second while clients are connected: refused ones that said nothing are closed after
 * REFUSED_TIMEOUT_USEC, others after [agent] idle_timeout without a message and without a call waiting
 * for a VM. */
static int on_idle_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Api *api = userdata;
        unsigned idle = agent_config(api->agent)->idle_timeout;
        uint64_t now = monotonic_usec();
        (void) usec;
        for (Conn *c = api->conns; c; c = c->next) {
                if (c->state == CONN_REFUSED && now - c->last_active >= REFUSED_TIMEOUT_USEC)
                        conn_close(c);
                else if (c->state == CONN_OK && idle && !c->n_pending &&
                         now - c->last_active >= (uint64_t) idle * 1000000) {
                        log_info("control socket: closing the connection of uid %u: idle for %u s ([agent] "
                                 "idle_timeout)",
                                 (unsigned) c->uid, idle);
                        conn_close(c);
                }
        }
        if (!api->conns)
                return 0;
        int r = sd_event_source_set_time_relative(s, IDLE_CHECK_USEC);
        return r < 0 ? r : sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void idle_check_arm(Api *api) {
        int enabled = SD_EVENT_OFF;
        if (!api->idle_source || sd_event_source_get_enabled(api->idle_source, &enabled) < 0 || enabled)
                return;
        if (sd_event_source_set_time_relative(api->idle_source, IDLE_CHECK_USEC) >= 0)
                (void) sd_event_source_set_enabled(api->idle_source, SD_EVENT_ONESHOT);
}

static int conn_new(Api *api, int fd) {
        _cleanup_close_ int cfd = fd;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        char why[160];
        int r;

        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return negative_errno();
        admission(api, cred.uid, why, sizeof(why));
        if (why[0]) {
                log_refusal(api, why);
                if (api->n_refused >= API_MAX_REFUSED)
                        return -EBUSY; /* closed without a word: too many to tell */
        }
        Conn *c = calloc(1, sizeof(Conn));
        if (!c)
                return -ENOMEM;
        c->api = api;
        c->fd = cfd;
        c->serial = ++api->n_accepted;
        c->uid = cred.uid;
        c->privileged =
                cred.uid == 0 || (api->has_control_group && peer_in_group(cfd, cred.gid, api->control_gid));
        c->last_active = monotonic_usec();
        if (why[0]) {
                c->state = CONN_REFUSED;
                snprintf(c->refusal, sizeof(c->refusal), "%s", why);
                api->n_refused++;
        }
        c->next = api->conns;
        if (api->conns)
                api->conns->prev = c;
        api->conns = c;
        api->n_conns++;

        r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                TAKE_FD(cfd);
                r = sd_bus_set_server(c->bus, 1, api->server_id);
        }
        if (r >= 0)
                r = sd_bus_set_anonymous(c->bus, false);
        /* No fd passing: no method takes one, and fds a message carried would stay open in the agent as long
         * as the call pends. Refused in the handshake; sd-bus then drops a connection that sends fds anyway.
         */
        if (r >= 0)
                r = sd_bus_negotiate_fds(c->bus, false);
        if (r >= 0)
                r = sd_bus_add_filter(c->bus, NULL, on_message, c);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, API_OBJECT_PATH, API_INTERFACE, api_vtable, c);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                             hello_vtable, c);
        if (r >= 0)
                r = sd_bus_match_signal(c->bus, NULL, "org.freedesktop.DBus.Local",
                                        "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                        "Disconnected", on_disconnected, c);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, api->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r >= 0)
                r = sd_event_add_post(api->event, &c->auth_post, on_auth_post, c);
        if (r < 0) {
                conn_free(c);
                return r;
        }
        /* sd-bus raises the send buffer to 8 MiB (SO_SNDBUFFORCE as root): kernel memory each silent client
         * could fill. Back to a common size, so that what a client does not read stays in the queue that
         * CONN_MAX_QUEUED_AT_CALL bounds. */
        int size = API_CONN_SNDBUF;
        (void) setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        idle_check_arm(api);
        return 0;
}

#define ACCEPT_REST_USEC (UINT64_C(250) * 1000)

static int on_rested(sd_event_source *s, uint64_t usec, void *userdata) {
        Api *api = userdata;
        (void) s;
        (void) usec;
        return sd_event_source_set_enabled(api->listen_source, SD_EVENT_ON);
}

/* No fd for the next client: stop watching the listener for ACCEPT_REST_USEC (the client waits in the
 * backlog), else the loop would spin on a listener that stays readable. */
static void accept_rest(Api *api, int error) {
        int r;
        if (api->accept_failures++ == 0)
                log_warning_errno(error,
                                  "control socket: cannot accept a client: %m; not accepting for %llu ms "
                                  "at a time until fds are free again",
                                  (unsigned long long) (ACCEPT_REST_USEC / 1000));
        r = sd_event_source_set_enabled(api->listen_source, SD_EVENT_OFF);
        if (r >= 0 && api->rest_source)
                r = sd_event_source_set_time_relative(api->rest_source, ACCEPT_REST_USEC);
        else if (r >= 0)
                r = sd_event_add_time_relative(api->event, &api->rest_source, CLOCK_MONOTONIC,
                                               ACCEPT_REST_USEC, 0, on_rested, api);
        if (r >= 0)
                r = sd_event_source_set_enabled(api->rest_source, SD_EVENT_ONESHOT);
        if (r < 0) /* no timer: better a busy listener than a deaf one */
                (void) sd_event_source_set_enabled(api->listen_source, SD_EVENT_ON);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Api *api = userdata;
        (void) s;
        (void) revents;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                accept_rest(api, -errno);
                        else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "control socket: accept failed: %m, ignoring");
                        return 0;
                }
                if (api->accept_failures > 1)
                        log_notice(
                                "control socket: accepting clients again (%llu accepts failed for want of fds)",
                                (unsigned long long) api->accept_failures - 1);
                api->accept_failures = 0;
                int r = conn_new(api, cfd);
                if (r < 0 && r != -EBUSY)
                        log_warning_errno(r,
                                          "control socket: cannot set up a client connection: %m, ignoring");
        }
}

/* --- socket ----------------------------------------------------------------------------------------- */

static int socket_from_systemd(Api *api, Error *e) {
        int n = sd_listen_fds(true);
        if (n <= 0)
                return n;
        if (n > 1) {
                return error_set(e, -EINVAL, ERROR_INVALID,
                                 "systemd passed %d sockets, expected one (chvm-agentd.socket)", n);
        }
        int fd = SD_LISTEN_FDS_START;
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                return error_set(e, -EINVAL, ERROR_INVALID,
                                 "the socket systemd passed is not a listening unix stream socket");
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                return error_errno(e, negative_errno(), "cannot set up the socket systemd passed: %s",
                                   strerror(errno));
        }
        struct sockaddr_un sa = {};
        socklen_t len = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *) &sa, &len) == 0 && sa.sun_path[0])
                snprintf(api->path, sizeof(api->path), "%s", sa.sun_path);
        else
                snprintf(api->path, sizeof(api->path), "(socket from systemd)");
        api->listen_fd = fd;
        return 1;
}

/* Someone listens there already: another agent (the journal lock only covers our state folder). */
static bool socket_in_use(const struct sockaddr_un *sa) {
        /* Non-blocking: a listener that accepts nothing fills its backlog, and a blocking connect would
         * then wait for ever; EAGAIN says someone listens just as well. */
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        return fd >= 0 && (connect(fd, (const struct sockaddr *) sa, sizeof(*sa)) == 0 || errno == EAGAIN);
}

static int socket_own(Api *api, Error *e) {
        const char *path = agent_config(api->agent)->socket;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                return error_set(e, -ENAMETOOLONG, ERROR_INVALID, "%s: path too long for a unix socket",
                                 path);
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        /* Everything below goes by path (bind, chown, unlink): only a folder nobody but root may change
         * keeps the path ours between the steps. */
        char dir[sizeof(sa.sun_path)];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
                slash[slash == dir] = '\0'; /* "/x.sock": "/" */
        if (stat(dir, &st) < 0) {
                r = negative_errno();
                return error_errno(e, r, "socket folder %s: %s", dir, strerror(-r));
        }
        if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
                return error_set(
                        e, -EPERM, ERROR_INVALID,
                        "socket folder %s may be changed by others (owner uid %u, mode %04o): the control socket "
                        "needs a folder only root may write",
                        dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
        }
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode)) {
                        return error_set(e, -EEXIST, ERROR_EXISTS,
                                         "%s exists and is not a socket; refusing to replace it", path);
                }
                /* An agent just killed may still "listen" for a moment: a hypervisor child it forked holds a
                 * copy of the socket until it has closed the agent's fds (or ended at its gate). */
                bool busy = socket_in_use(&sa);
                for (unsigned waited = 0; busy && waited < STALE_HOLDER_WAIT_MS; waited += 20) {
                        usleep(20000);
                        busy = socket_in_use(&sa);
                }
                if (busy) {
                        return error_set(e, -EADDRINUSE, ERROR_INVALID,
                                         "%s: another agent is listening there", path);
                }
                (void) unlink(path); /* stale, from an agent that is gone */
        }
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        /* The final mode at once (0660 for the group, else 0600), group root until the lchown below: no
         * window in which others could connect. */
        mode_t old = umask(api->has_control_group ? 0117 : 0177);
        r = bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? negative_errno() : 0;
        umask(old);
        if (r < 0) {
                return error_errno(e, r, "cannot bind %s: %s", path, strerror(-r));
        }
        api->own_socket = true;
        snprintf(api->path, sizeof(api->path), "%s", path);
        if (api->has_control_group) {
                if (lchown(path, 0, api->control_gid) < 0) {
                        r = negative_errno();
                        return error_errno(e, r, "cannot give %s to group %s: %s", path,
                                           agent_config(api->agent)->control_group, strerror(-r));
                }
        }
        if (listen(fd, SOMAXCONN) < 0) {
                r = negative_errno();
                return error_errno(e, r, "cannot listen on %s: %s", path, strerror(-r));
        }
        api->listen_fd = TAKE_FD(fd);
        return 0;
}

static void on_start_done(Agent *a, uint64_t vm_id, const Error *e, void *userdata) {
        (void) a;
        api_start_done(userdata, vm_id, e);
}

/* Everything an Api is except its socket. */
static int api_alloc(Agent *agent, sd_event *event, Api **ret) {
        Api *api = calloc(1, sizeof(Api));
        int r;

        if (!api)
                return -ENOMEM;
        api->agent = agent;
        api->event = sd_event_ref(event);
        api->listen_fd = -EBADF;
        struct group *g = getgrnam(agent_config(agent)->control_group);
        if (g) {
                api->control_gid = g->gr_gid;
                api->has_control_group = true;
        } else
                log_notice(
                        "control group %s does not exist: only root may change anything, the socket is 0600",
                        agent_config(agent)->control_group);
        r = sd_id128_randomize(&api->server_id);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &api->idle_source, CLOCK_MONOTONIC, IDLE_CHECK_USEC, 0,
                                               on_idle_check, api);
        if (r >= 0)
                r = sd_event_source_set_enabled(api->idle_source, SD_EVENT_OFF);
        if (r < 0) {
                api_free(api);
                return r;
        }
        agent_set_start_callback(agent, on_start_done, api);
        *ret = api;
        return 0;
}

int api_new(Agent *agent, sd_event *event, Api **ret, Error *e) {
        Api *api = NULL;
        int r;

        error_clear(e);
        r = api_alloc(agent, event, &api);
        if (r < 0)
                goto fail;
        r = socket_from_systemd(api, e);
        if (r == 0)
                r = socket_own(api, e);
        if (r < 0)
                goto fail;
        r = sd_event_add_io(event, &api->listen_source, api->listen_fd, EPOLLIN, on_accept, api);
        if (r < 0) {
                (void) error_errno(e, r, "cannot watch %s: %s", api->path, strerror(-r));
                goto fail;
        }
        *ret = api;
        return 0;
fail:
        if (!e->code)
                (void) error_errno(e, r, "%s", strerror(-r));
        api_free(api);
        return r;
}

int api_new_unlistened(Agent *agent, sd_event *event, Api **ret) {
        return api_alloc(agent, event, ret);
}

int api_add_connection(Api *api, int fd) {
        return conn_new(api, fd);
}

Api *api_free(Api *api) {
        if (!api)
                return NULL;
        agent_set_start_callback(api->agent, NULL, NULL);
        while (api->pending) {
                Pending *p = api->pending;
                api->pending = p->next;
                sd_bus_message_unref(p->call);
                free(p);
        }
        while (api->conns)
                conn_free(api->conns);
        sd_event_source_disable_unref(api->listen_source);
        sd_event_source_disable_unref(api->rest_source);
        sd_event_source_disable_unref(api->idle_source);
        if (api->own_socket)
                (void) unlink(api->path);
        safe_close(api->listen_fd);
        sd_event_unref(api->event);
        free(api);
        return NULL;
}

const char *api_socket_path(const Api *api) {
        return api->path;
}

size_t api_n_connections(const Api *api) {
        return api->n_conns;
}

/* --- replies ---------------------------------------------------------------------------------------- */

static void ip4_string(uint32_t ip, char ret[16]) {
        if (!ip) {
                ret[0] = '\0';
                return;
        }
        struct in_addr a = { .s_addr = htonl(ip) };
        inet_ntop(AF_INET, &a, ret, 16);
}

static int append_vm(sd_bus_message *reply, const AgentVmInfo *info) {
        char ip[16], mac[18];
        int r;

        ip4_string(info->ip4, ip);
        vm_mac_to_string(info->mac, mac);
        r = sd_bus_message_open_container(reply, 'r', "stssusssssa(sqq)");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "stssusssss", info->name, info->id, vm_state_to_string(info->state),
                                  info->exit_reason, (uint32_t) info->vmm_pid, info->backend,
                                  hypervisor_kind_to_string(info->hypervisor), info->tap, ip, mac);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sqq)");
        if (r < 0)
                return r;
        for (size_t i = 0; info->def && i < info->def->n_ports; i++) {
                const PortForward *p = &info->def->ports[i];
                r = sd_bus_message_append(reply, "(sqq)", p->proto == IPPROTO_UDP ? "udp" : "tcp",
                                          p->host_port, p->guest_port);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

/* --- methods ---------------------------------------------------------------------------------------- */

static int read_strv(sd_bus_message *m, size_t max, char ***ret) {
        ArgvBuilder b = {};
        const char *s;
        int r = sd_bus_message_enter_container(m, 'a', "s");
        if (r < 0)
                return r;
        size_t n = 0;
        while ((r = sd_bus_message_read(m, "s", &s)) > 0) {
                if (++n > max) { /* checked as read: a call may carry thousands */
                        r = -E2BIG;
                        break;
                }
                argv_builder_add(&b, s);
        }
        if (r < 0) {
                char **l = NULL;
                (void) argv_builder_finish(&b, &l);
                strv_free(l);
                return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0) {
                char **l = NULL;
                (void) argv_builder_finish(&b, &l);
                strv_free(l);
                return r;
        }
        return argv_builder_finish(&b, ret);
}

/* The arguments of CreateVM and RunVM, as a definition for the agent: 0 with *ret_def and *ret_flags, or
 * a refusal (error set, or a negative sd-bus result). */
static int read_create(Conn *c, sd_bus_message *m, sd_bus_error *error, VmDef **ret_def,
                       unsigned *ret_flags) {
        const char *name, *backend, *hypervisor, *kernel, *firmware, *initrd, *cmdline;
        uint32_t cpus;
        uint64_t memory;
        _cleanup_(strv_freep) char **disks = NULL;
        _cleanup_(vm_def_freep) VmDef *def = NULL;
        int r;

        r = require_privileged(c, "create a VM", error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "sssssssut", &name, &backend, &hypervisor, &kernel, &firmware, &initrd,
                                &cmdline, &cpus, &memory);
        if (r < 0)
                return r;
        r = read_strv(m, VM_DEF_MAX_DISKS, &disks);
        if (r == -E2BIG)
                return set_error(error, API_ERROR_INVALID, "VM %s: more than %d disks", name,
                                 VM_DEF_MAX_DISKS);
        if (r < 0)
                return r;
        def = vm_def_new();
        if (!def)
                return -ENOMEM;
        if (strlen(name) >= sizeof(def->name))
                return set_error(error, API_ERROR_INVALID,
                                 "invalid VM name \"%.40s...\" (want ^[a-z][a-z0-9-]{0,31}$)", name);
        snprintf(def->name, sizeof(def->name), "%s", name);
        if (strlen(backend) >= sizeof(def->backend))
                return set_error(error, API_ERROR_INVALID, "VM %s: unknown backend \"%.40s...\"", name,
                                 backend);
        snprintf(def->backend, sizeof(def->backend), "%s", backend);
        if (hypervisor[0] && hypervisor_kind_from_string(hypervisor) < 0)
                return set_error(error, API_ERROR_INVALID,
                                 "VM %s: hypervisor \"%.40s\": expected cloud-hypervisor or qemu", name,
                                 hypervisor);
        snprintf(def->hypervisor, sizeof(def->hypervisor), "%s", hypervisor);
        def->kernel = kernel[0] ? strdup(kernel) : NULL;
        def->firmware = firmware[0] ? strdup(firmware) : NULL;
        def->initrd = initrd[0] ? strdup(initrd) : NULL;
        def->cmdline = cmdline[0] ? strdup(cmdline) : NULL;
        if ((kernel[0] && !def->kernel) || (firmware[0] && !def->firmware) || (initrd[0] && !def->initrd) ||
            (cmdline[0] && !def->cmdline))
                return -ENOMEM;
        if (cpus)
                def->cpus = cpus;
        if (memory)
                def->memory_mib = memory;
        size_t n = strv_length(disks);
        for (size_t i = 0; i < n; i++)
                def->disks[def->n_disks++] = TAKE_PTR(disks[i]);

        r = sd_bus_message_enter_container(m, 'a', "(sqq)");
        if (r < 0)
                return r;
        const char *proto;
        uint16_t host, guest;
        while ((r = sd_bus_message_read(m, "(sqq)", &proto, &host, &guest)) > 0) {
                if (def->n_ports == VM_DEF_MAX_PORTS)
                        return set_error(error, API_ERROR_INVALID, "VM %s: more than %d ports", name,
                                         VM_DEF_MAX_PORTS);
                PortForward *p = &def->ports[def->n_ports++];
                if (strcmp(proto, "tcp") == 0)
                        p->proto = IPPROTO_TCP;
                else if (strcmp(proto, "udp") == 0)
                        p->proto = IPPROTO_UDP;
                else
                        return set_error(error, API_ERROR_INVALID,
                                         "VM %s: port protocol \"%.16s\": expected tcp or udp", name, proto);
                p->host_port = host;
                p->guest_port = guest;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        uint64_t flags;
        r = sd_bus_message_read(m, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~(uint64_t) API_CREATE_FORCE_PORT)
                return set_error(error, API_ERROR_INVALID, "VM %s: unknown flags 0x%" PRIx64, name,
                                 flags & ~(uint64_t) API_CREATE_FORCE_PORT);
        /* A reserved port is the host's (its ssh, its DNS): only root gives it to a guest. */
        if ((flags & API_CREATE_FORCE_PORT) && c->uid != 0) {
                log_notice("access denied: uid %u may not force a reserved port", (unsigned) c->uid);
                return set_error(
                        error, SD_BUS_ERROR_ACCESS_DENIED,
                        "access denied: VM %s: --force-port (a port reserved for the host) needs root",
                        name);
        }

        *ret_flags = (flags & API_CREATE_FORCE_PORT) ? AGENT_CREATE_FORCE_PORT : 0;
        *ret_def = TAKE_PTR(def);
        return 0;
}

static int pending_room(Conn *c, sd_bus_error *error);
static int add_pending(Conn *c, sd_bus_message *m, const char *name, uint64_t id, PendingOp op);

/* CreateVM, or RunVM: CreateVM and StartVM in one call, all or nothing (a VM that does not start is removed
 * again). Both need the same privilege. */
static int create_or_run(sd_bus_message *m, Conn *c, sd_bus_error *error, bool run) {
        _cleanup_(vm_def_freep) VmDef *def = NULL;
        unsigned flags = 0;
        uint64_t id;
        int r = read_create(c, m, error, &def, &flags);
        if (r < 0)
                return r;
        if (run && (r = pending_room(c, error)) < 0)
                return r;
        r = run ? agent_vm_run(c->api->agent, def, flags, &id)
                : agent_vm_create(c->api->agent, def, flags, &id);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        if (r > 0)
                return add_pending(c, m, def->name, id, PENDING_RUN);
        return sd_bus_reply_method_return(m, "t", id);
}

static int method_create(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return create_or_run(m, userdata, error, false);
}

static int method_run(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return create_or_run(m, userdata, error, true);
}

static int read_name(sd_bus_message *m, const char **ret) {
        return sd_bus_message_read(m, "s", ret);
}

static int method_start(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        const char *name;
        int r = require_privileged(c, "start a VM", error);
        if (r < 0)
                return r;
        r = pending_room(c, error);
        if (r < 0)
                return r;
        r = read_name(m, &name);
        if (r < 0)
                return r;
        r = agent_vm_start(c->api->agent, name);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        AgentVmInfo info;
        if (r > 0 && agent_vm_info(c->api->agent, name, &info) >= 0)
                return add_pending(c, m, name, info.id, PENDING_START);
        return sd_bus_reply_method_return(m, NULL);
}

static bool vm_up(Agent *a, const char *name, uint64_t *ret_id) {
        AgentVmInfo info;
        if (agent_vm_info(a, name, &info) < 0)
                return false;
        *ret_id = info.id;
        return info.vmm_pid != 0;
}

/* Checked before a Start/Run/Stop/Kill/Remove does anything: one that could not wait would act unanswered.
 */
static int pending_room(Conn *c, sd_bus_error *error) {
        if (c->n_pending < CONN_MAX_PENDING)
                return 0;
        return set_error(error, API_ERROR_BUSY,
                         "this connection has %d calls waiting for VMs to come up or go down already",
                         CONN_MAX_PENDING);
}

static int add_pending(Conn *c, sd_bus_message *m, const char *name, uint64_t id, PendingOp op) {
        Pending *p = calloc(1, sizeof(Pending));
        if (!p)
                return -ENOMEM;
        p->call = sd_bus_message_ref(m);
        p->conn = c;
        p->vm_id = id;
        p->op = op;
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->next = c->api->pending;
        c->api->pending = p;
        c->n_pending++;
        return 1; /* answered later */
}

static int method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        const char *name;
        uint32_t timeout;
        uint64_t id;
        int r = require_privileged(c, "stop a VM", error);
        if (r < 0)
                return r;
        r = pending_room(c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "su", &name, &timeout);
        if (r < 0)
                return r;
        if (timeout > 3600)
                return set_error(error, API_ERROR_INVALID, "stop timeout %u s: at most 3600", timeout);
        r = agent_vm_stop(c->api->agent, name, timeout);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        if (vm_up(c->api->agent, name, &id))
                return add_pending(c, m, name, id, PENDING_STOP);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_kill(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        const char *name;
        uint64_t id;
        int r = require_privileged(c, "kill a VM", error);
        if (r < 0)
                return r;
        r = pending_room(c, error);
        if (r < 0)
                return r;
        r = read_name(m, &name);
        if (r < 0)
                return r;
        r = agent_vm_kill(c->api->agent, name);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        if (vm_up(c->api->agent, name, &id))
                return add_pending(c, m, name, id, PENDING_KILL);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        const char *name;
        int force;
        uint64_t id;
        int r = require_privileged(c, "remove a VM", error);
        if (r < 0)
                return r;
        r = pending_room(c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "sb", &name, &force);
        if (r < 0)
                return r;
        if (vm_up(c->api->agent, name, &id)) {
                if (!force)
                        return set_error(error, API_ERROR_BUSY,
                                         "VM %s is running: stop it first (or remove it with -f)", name);
                r = agent_vm_kill(c->api->agent, name);
                if (r < 0)
                        return reply_agent_error(error, r, c->api->agent);
                if (vm_up(c->api->agent, name, &id))
                        return add_pending(c, m, name, id, PENDING_REMOVE);
        }
        r = agent_vm_remove(c->api->agent, name);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_list(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ AgentVmInfo *vms = NULL;
        size_t n;
        (void) error;
        agent_refresh(c->api->agent);
        int r = agent_vm_list(c->api->agent, &vms, &n);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', VM_RECORD);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = append_vm(reply, &vms[i]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int append_object(const LiveObject *o, void *userdata) {
        sd_bus_message *reply = userdata;
        const char *kind = resource_kind_to_string((ResourceKind) o->kind);
        return sd_bus_message_append(reply, "(ssts)", kind ? kind : "unknown", o->name ? o->name : "",
                                     o->handle, o->tag ? o->tag : "");
}

static int method_inspect(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name;
        AgentVmInfo info;
        int r = read_name(m, &name);
        if (r < 0)
                return r;
        agent_refresh_vm(c->api->agent, name);
        if (agent_vm_info(c->api->agent, name, &info) < 0)
                return set_error(error, API_ERROR_NOT_FOUND, "no VM named \"%.40s\"", name);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = append_vm(reply, &info);
        if (r < 0)
                return r;
        const VmDef *d = info.def;
        r = sd_bus_message_open_container(reply, 'r', "ssssutas");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssssut", d && d->kernel ? d->kernel : "",
                                          d && d->firmware ? d->firmware : "",
                                          d && d->initrd ? d->initrd : "", d && d->cmdline ? d->cmdline : "",
                                          d ? d->cpus : 0, d ? d->memory_mib : 0);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && d && i < d->n_disks; i++)
                r = sd_bus_message_append(reply, "s", d->disks[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssts)");
        if (r >= 0)
                r = agent_vm_objects(c->api->agent, info.id, append_object, reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", info.def_error);
        char lease[16];
        ip4_string(info.lease_address, lease);
        if (r >= 0)
                r = sd_bus_message_append(reply, "(sts)", lease, info.lease_acked_usec,
                                          info.lease_client_hostname);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_status(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        Agent *a = c->api->agent;
        const AgentConfig *cfg = agent_config(a);
        Journal *j = agent_journal(a);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        (void) error;
        agent_refresh_exits(a); /* its counts need no look at each running VM's /proc entry */
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        const JournalReport *rep = journal_report(j);
        r = sd_bus_message_open_container(reply, 'r', "ssssuuassu");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssssuu", agent_id_string(a), PACKAGE_VERSION,
                                          journal_state_to_string(journal_state(j)),
                                          journal_state(j) == JOURNAL_STATE_FAILED ? journal_error_message(j)
                                                                                   : rep->message,
                                          (uint32_t) agent_n_vms(a), (uint32_t) agent_n_running(a));
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "s");
        for (unsigned i = 0; r >= 0 && i < cfg->n_backends; i++)
                r = sd_bus_message_append(reply, "s", cfg->backends[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "su", c->api->path, (uint32_t) c->api->n_conns);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_gc(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int dry_run, heuristic, r;
        GcPlan p;

        r = sd_bus_message_read(m, "bb", &dry_run, &heuristic);
        if (r < 0)
                return r;
        if (!dry_run) {
                r = require_privileged(c, "collect garbage", error);
                if (r < 0)
                        return r;
        }
        GcOptions o = { .dry_run = dry_run, .heuristic = heuristic };
        r = agent_gc(c->api->agent, &o, &p);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        log_info("garbage collection%s%s by uid %u: %zu delete, %zu forget, %zu skip, %zu failed",
                 dry_run ? " (dry run)" : "", heuristic ? " (heuristic)" : "", (unsigned) c->uid,
                 p.count[GC_DELETE], p.count[GC_FORGET], p.count[GC_SKIP], p.n_failed);
        for (size_t i = 0; !dry_run && i < p.n; i++)
                if (p.items[i].failed)
                        log_warning("garbage collection: cannot delete %s %s: %s",
                                    resource_kind_to_string(p.items[i].kind), p.items[i].name,
                                    p.items[i].error);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssssssbs)");
        for (size_t i = 0; r >= 0 && i < p.n; i++) {
                const GcDecision *d = &p.items[i];
                const char *kind = resource_kind_to_string(d->kind);
                r = sd_bus_message_append(reply, "(ssssssbs)", gc_action_to_string(d->action),
                                          kind ? kind : "unknown", d->name, d->vm,
                                          gc_reason_to_string(d->reason), d->detail, d->failed, d->error);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "b", p.quarantine);
        gc_plan_clear(&p);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_doctor(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        DoctorReport rep;
        int r = agent_doctor(c->api->agent, &rep);
        if (r < 0)
                return reply_agent_error(error, r, c->api->agent);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sss)");
        for (size_t i = 0; r >= 0 && i < rep.n; i++)
                r = sd_bus_message_append(reply, "(sss)", doctor_severity_to_string(rep.items[i].severity),
                                          rep.items[i].topic, rep.items[i].message);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        doctor_report_clear(&rep);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static const sd_bus_vtable api_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("CreateVM",
                                SD_BUS_ARGS("s", name, "s", backend, "s", hypervisor, "s", kernel, "s",
                                            firmware, "s", initrd, "s", cmdline, "u", cpus, "t", memory_mib,
                                            "as", disks, "a(sqq)", ports, "t", flags),
                                SD_BUS_RESULT("t", id), method_create, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RunVM",
                                SD_BUS_ARGS("s", name, "s", backend, "s", hypervisor, "s", kernel, "s",
                                            firmware, "s", initrd, "s", cmdline, "u", cpus, "t", memory_mib,
                                            "as", disks, "a(sqq)", ports, "t", flags),
                                SD_BUS_RESULT("t", id), method_run, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_start,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopVM", SD_BUS_ARGS("s", name, "u", timeout_sec), SD_BUS_NO_RESULT,
                                method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_kill,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveVM", SD_BUS_ARGS("s", name, "b", force), SD_BUS_NO_RESULT,
                                method_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListVMs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a" VM_RECORD, vms), method_list,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("InspectVM", SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT(VM_RECORD, vm, VM_SPEC, spec, VM_OBJECTS, objects, "s",
                                              definition_error, "(sts)", lease),
                                method_inspect, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Status", SD_BUS_NO_ARGS, SD_BUS_RESULT(STATUS_RECORD, status),
                                method_status, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CollectGarbage", SD_BUS_ARGS("b", dry_run, "b", heuristic),
                                SD_BUS_RESULT("a(ssssssbs)", decisions, "b", quarantine), method_gc,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Doctor", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sss)", findings), method_doctor,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("VMStateChanged", SD_BUS_ARGS("s", name, "t", id, "s", state, "s", reason),
                                0),
        SD_BUS_VTABLE_END,
};

/* Clients that take the socket for a bus (busctl --address=...) say Hello first; a peer-to-peer server has
 * no bus names, so each connection just gets a unique one. */
static int method_hello(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Conn *c = userdata;
        char name[32];
        (void) error;
        snprintf(name, sizeof(name), ":1.%" PRIu64, c->serial);
        return sd_bus_reply_method_return(m, "s", name);
}

static const sd_bus_vtable hello_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Hello", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", unique_name), method_hello,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* --- state changes ---------------------------------------------------------------------------------- */

/* Takes the calls waiting for VM vm_id off the list, as a list of their own: its starts (StartVM, RunVM)
 * or the rest (Stop, Kill, Remove). Their connections stop counting them. */
static Pending *take_pending(Api *api, uint64_t vm_id, bool starts) {
        Pending *taken = NULL, **pp = &api->pending;
        while (*pp) {
                Pending *p = *pp;
                bool start = p->op == PENDING_START || p->op == PENDING_RUN;
                if (p->vm_id != vm_id || start != starts) {
                        pp = &p->next;
                        continue;
                }
                *pp = p->next;
                p->next = taken;
                taken = p;
                if (p->conn)
                        p->conn->n_pending--;
        }
        return taken;
}

void api_emit_state_changed(Api *api, const char *name, uint64_t vm_id, VmState state, const char *reason) {
        const char *s = state == _VM_STATE_INVALID ? "removed" : vm_state_to_string(state);
        char why[2048];
        /* the reason may be an error text cut short (see set_error()): a signal sd-bus cannot build is lost
         */
        snprintf(why, sizeof(why), "%s", reason ? reason : "");
        utf8_sanitize(why);
        for (Conn *c = api->conns; c; c = c->next) {
                uint64_t queued = 0;
                if (c->state != CONN_OK)
                        continue;
                (void) sd_bus_emit_signal(c->bus, API_OBJECT_PATH, API_INTERFACE, "VMStateChanged", "stss",
                                          name, vm_id, s, why);
                if (sd_bus_get_n_queued_write(c->bus, &queued) >= 0 && queued > CONN_MAX_QUEUED) {
                        log_warning("control socket: a client of uid %u does not read (%" PRIu64
                                    " messages waiting): disconnected",
                                    (unsigned) c->uid, queued);
                        conn_close(c);
                }
        }
        if (state != VM_STATE_STOPPED && state != VM_STATE_CRASHED)
                return;

        /* Answer the calls that waited for this VM to be down. Taken off the list first: a removal below
         * emits its own state change and comes back here. */
        for (Pending *done = take_pending(api, vm_id, false), *p; (p = done);) {
                done = p->next;
                int r = p->op == PENDING_REMOVE ? agent_vm_remove(api->agent, p->name) : 0;
                if (r < 0) {
                        sd_bus_error e = SD_BUS_ERROR_NULL;
                        (void) reply_agent_error(&e, r, api->agent);
                        (void) sd_bus_reply_method_error(p->call, &e);
                        sd_bus_error_free(&e);
                } else
                        (void) sd_bus_reply_method_return(p->call, NULL);
                sd_bus_message_unref(p->call);
                free(p);
        }
}

void api_start_done(Api *api, uint64_t vm_id, const Error *e) {
        for (Pending *done = take_pending(api, vm_id, true), *p; (p = done);) {
                done = p->next;
                if (e) {
                        sd_bus_error be = SD_BUS_ERROR_NULL;
                        (void) reply_error(&be, e->code, e);
                        (void) sd_bus_reply_method_error(p->call, &be);
                        sd_bus_error_free(&be);
                } else if (p->op == PENDING_RUN)
                        (void) sd_bus_reply_method_return(p->call, "t", vm_id);
                else
                        (void) sd_bus_reply_method_return(p->call, NULL);
                sd_bus_message_unref(p->call);
                free(p);
        }
}
