/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the control API (agent/api.c) through real sd-bus messages.
 *
 * Set up once: an agent (agent/agent.c) whose state and runtime folders are in a fresh folder on tmpfs,
 * with only the `mosnet` backend (it owns no kernel objects) and a QEMU binary that does not exist
 * (and PATH pointing nowhere, for cloud-hypervisor's default binary), so a StartVM forks a child whose exec
 * fails at once and no hypervisor ever runs; SIGCHLD is blocked as in the daemon. Its Api listens
 * nowhere (api_new_unlistened()) and serves one end of a socketpair (api_add_connection()), the other end
 * being an sd-bus client in the same event loop. As root the harness first moves into a network namespace
 * of its own, so that Doctor and CollectGarbage (which only read) see that namespace and not the machine's.
 *
 * Each input is a program of up to 32 calls, each chosen by a byte and built from the bytes after it:
 * CreateVM (odd and long strings, paths that exist or not, cpus, memory, up to 100,000 disks or ports),
 * StartVM, StopVM (any timeout), KillVM, RemoveVM, ListVMs, InspectVM, Status, CollectGarbage (dry run or
 * not, heuristic or not), Doctor, Hello; a call of any member with a signature and values of the input's
 * choosing (wrong signatures, unknown members, the standard interfaces); a second connection that sends
 * the input's bytes raw (after a valid handshake or not) and hangs up; a client of uid 65534 (a child
 * that became nobody hands its socket back); a client that sends up to 255 calls and reads nothing; a
 * message that carries fds; and, as root, a VM whose hypervisor really runs (tests/fake-vmm found as
 * cloud-hypervisor in PATH for that call only) that powers off at the power button, ignores it and SIGTERM,
 * ends by itself, or ends before its API answers, met by StopVM, KillVM, RemoveVM and waits. Names are often
 * taken from the VMs that exist, so the calls meet real VMs.
 *
 * Checked after every call: it was answered (a reply or an error, within 20 s); errors carry the name the
 * API promises (bad VM name or stop timeout: InvalidArgument; unknown VM: NotFound); a CreateVM that
 * fails changes nothing (VMs, definition files, journal), one that succeeds adds exactly that VM, whose
 * InspectVM agrees; outside the stand-in hypervisor's call StartVM never succeeds and no VM runs; ListVMs
 * and Status count the agent's VMs; the definition folder holds one file per VM and nothing else; a raw
 * connection is gone once it hung up; every call of uid 65534 that changes something is AccessDenied and
 * changes nothing; the silent client is dropped or gets every answer once it reads; a message with fds
 * drops its connection and the agent keeps none of the fds; a stopped or killed VM is down when the
 * answer comes, a removed one is gone, and no child is left once the stand-in's VM is removed.
 * After every input all VMs are removed again. Any violation aborts.
 *
 * CHVM_FUZZ_LOG=1 shows the agent's log. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/api.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/utf8.h"
#include "util/vmname.h"
#include "vmm/argv.h"

#define MAX_CALLS 32
#define REPLY_TIMEOUT_USEC (20ULL * 1000 * 1000)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
        char dir[64]; /* everything of the harness: state/, run/, and files that exist */
        char state_vms[128], run_vms[128];
        char kernel[128], initrd[128], disk[128], missing[128], folder[128];
        sd_event *event;
        Agent *agent;
        Api *api;
        sd_bus *client;
        bool privileged;
        size_t base_conns; /* connections besides the raw ones: the client's */
        uint64_t inputs;
} h;

/* The answer being checked, shown when a check fails. */
static sd_bus_message *current;

static void rm_rf(const char *p);

static void check_(bool ok, const char *what, int line) {
        if (ok)
                return;
        fprintf(stderr, "fuzz-api:%d: violated: %s\n", line, what);
        const sd_bus_error *e = current ? sd_bus_message_get_error(current) : NULL;
        if (e)
                fprintf(stderr, "fuzz-api: the answer was %s: %s\n", e->name, e->message ? e->message : "");
        if (h.dir[0])
                rm_rf(h.dir); /* abort() skips atexit() */
        abort();
}
#define check(x) check_((x), #x, __LINE__)

/* --- the input ---------------------------------------------------------------------------------------- */

typedef struct Reader {
        const uint8_t *p;
        size_t n;
} Reader;

static uint8_t u8(Reader *r) {
        if (r->n == 0)
                return 0;
        r->n--;
        return *r->p++;
}

static uint64_t uint_n(Reader *r, unsigned bytes) {
        uint64_t v = 0;
        for (unsigned i = 0; i < bytes; i++)
                v |= (uint64_t) u8(r) << (8 * i);
        return v;
}

/* A string of the input: a length byte (255: a long one), then that many bytes. */
static char *raw_string(Reader *r, char *buf, size_t size) {
        size_t len = u8(r);
        if (len == 255)
                len = 300 + (size_t) uint_n(r, 2) % 5000;
        if (len >= size)
                len = size - 1;
        for (size_t i = 0; i < len; i++)
                buf[i] = (char) (r->n ? u8(r) : 'a' + i % 26);
        buf[len] = '\0';
        /* what D-Bus strings are: no NULs, UTF-8 (as sd-bus sees it) */
        for (size_t i = 0; i < len; i++)
                if (buf[i] == '\0')
                        buf[i] = '?';
        return utf8_sanitize(buf);
}

/* A VM name: an existing VM's, one with a story, or the input's bytes. */
static const char *vm_name(Reader *r, char **names, char *buf, size_t size) {
        static const char *const pool[] = {
                "web",
                "a",
                "vm-1",
                "db-2",
                "z9",
                "Web",
                "1vm",
                "a_b",
                "a.b",
                "",
                "-",
                "a-",
                "../vms/x",
                "abcdefghijklmnopqrstuvwxyz012345", /* 32: the longest */
                "abcdefghijklmnopqrstuvwxyz0123456", /* 33 */
        };
        uint8_t sel = u8(r);
        size_t n = 0;
        while (names && names[n])
                n++;
        if (sel < 96 && n > 0)
                return names[u8(r) % n];
        if (sel < 192)
                return pool[u8(r) % ELEMENTSOF(pool)];
        return raw_string(r, buf, size);
}

static const char *path(Reader *r, char *buf, size_t size) {
        switch (u8(r) % 10) {
        case 0:
        case 1:
                return "";
        case 2:
        case 3:
                return h.kernel;
        case 4:
                return h.disk;
        case 5:
                return h.initrd;
        case 6:
                return h.missing;
        case 7:
                return h.folder;
        case 8:
                return "relative/kernel";
        default:
                return raw_string(r, buf, size);
        }
}

static const char *one_of(Reader *r, const char *const *pool, size_t n, char *buf, size_t size) {
        uint8_t sel = u8(r);
        return sel < 224 ? pool[sel % n] : raw_string(r, buf, size);
}

/* --- calls -------------------------------------------------------------------------------------------- */

typedef struct Reply {
        bool done;
        sd_bus_message *m;
} Reply;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Reply *rep = userdata;
        (void) error;
        rep->done = true;
        rep->m = sd_bus_message_ref(m);
        return 0;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

/* Sends m on bus (attached to the loop) and runs the loop until its answer is in; NULL only if m could not
 * be sent (too big, ...). */
static sd_bus_message *call_on(sd_bus *bus, sd_bus_message *m) {
        Reply rep = {};
        sd_bus_slot *slot = NULL;
        int r = sd_bus_call_async(bus, &slot, m, on_reply, &rep, REPLY_TIMEOUT_USEC);
        sd_bus_message_unref(m);
        if (r < 0) {
                check(r != -ENOTCONN && r != -ECONNRESET);
                return NULL;
        }
        uint64_t start = now_usec();
        while (!rep.done) {
                r = sd_event_run(h.event, 1000000);
                check(r >= 0);
                check(now_usec() - start < REPLY_TIMEOUT_USEC + 1000000);
        }
        sd_bus_slot_unref(slot);
        sd_bus_message_unref(current);
        current = sd_bus_message_ref(rep.m);
        /* The client's own timeout would say "no answer": a method that never answers is a bug. */
        const sd_bus_error *e = sd_bus_message_get_error(rep.m);
        check(!e || !sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY));
        check(!e || !sd_bus_error_has_name(e, SD_BUS_ERROR_TIMEOUT));
        return rep.m;
}

static sd_bus_message *call(sd_bus_message *m) {
        return call_on(h.client, m);
}

static sd_bus_message *new_call_on(sd_bus *bus, const char *member) {
        sd_bus_message *m = NULL;
        check(sd_bus_message_new_method_call(bus, &m, NULL, API_OBJECT_PATH, API_INTERFACE, member) >= 0);
        return m;
}

static sd_bus_message *new_call(const char *member) {
        return new_call_on(h.client, member);
}

static bool is_error(sd_bus_message *m, const char *name) {
        const sd_bus_error *e = sd_bus_message_get_error(m);
        return e && (!name || sd_bus_error_has_name(e, name));
}

/* What the API may answer to a well-formed call: our errors, or access denied. */
static bool api_error(sd_bus_message *m) {
        const sd_bus_error *e = sd_bus_message_get_error(m);
        return e && e->name &&
               (strncmp(e->name, "org.chvm.Agent1.Error.", 22) == 0 ||
                sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED));
}

/* Unprivileged callers get AccessDenied for everything that changes something. */
static bool denied(sd_bus_message *m) {
        return !h.privileged && is_error(m, SD_BUS_ERROR_ACCESS_DENIED);
}

/* --- what the agent holds ----------------------------------------------------------------------------- */

static size_t folder_entries(const char *dir) {
        DIR *d = opendir(dir);
        size_t n = 0;
        check(d != NULL);
        for (struct dirent *e; (e = readdir(d));)
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static bool vm_exists(const char *name) {
        AgentVmInfo info;
        return agent_vm_info(h.agent, name, &info) >= 0;
}

/* No child of ours, running or not reaped, but the sanitizers' symbolizer (libFuzzer starts it to name
 * new functions): a StartVM's child is reaped by the failed start. Scans /proc (no CONFIG_PROC_CHILDREN
 * here), so only after inputs with a StartVM. */
static bool no_children(void) {
        DIR *d = opendir("/proc");
        bool none = true;
        check(d != NULL);
        for (struct dirent *e; none && (e = readdir(d));) {
                char p[64], buf[512];
                if (e->d_name[0] < '1' || e->d_name[0] > '9')
                        continue;
                snprintf(p, sizeof(p), "/proc/%s/stat", e->d_name);
                FILE *f = fopen(p, "re");
                if (!f)
                        continue; /* gone meanwhile */
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = '\0';
                /* "PID (COMM) STATE PPID ...": COMM may hold anything, so from the last ')' */
                const char *close = strrchr(buf, ')'), *open = strchr(buf, '(');
                int ppid;
                if (!close || !open || sscanf(close + 1, " %*c %d", &ppid) != 1 || ppid != getpid())
                        continue;
                if (strncmp(open + 1, "llvm-symbolizer", (size_t) (close - open - 1)) != 0) {
                        fprintf(stderr, "fuzz-api: a child of ours: %s\n", buf);
                        none = false;
                }
        }
        closedir(d);
        return none;
}

static void check_state(void) {
        check(agent_n_running(h.agent) == 0); /* no hypervisor ever runs */
        check(folder_entries(h.state_vms) == agent_n_vms(h.agent)); /* NAME.vm for each VM, no leftovers */
        check(live_set_n_vms(journal_live_set(agent_journal(h.agent))) == agent_n_vms(h.agent));
        check(api_n_connections(h.api) == h.base_conns);
}

/* --- the methods -------------------------------------------------------------------------------------- */

static void do_create(Reader *r, char **names) {
        static const char *const backends[] = { "", "mosnet", "local", "bridge", "Mosnet" };
        static const char *const kinds[] = { "", "qemu", "cloud-hypervisor", "QEMU", "firecracker" };
        char nbuf[6000], bbuf[6000], hbuf[6000], kbuf[6000], ibuf[6000], cbuf[6000], sbuf[6000];
        const char *name = vm_name(r, names, nbuf, sizeof(nbuf));
        bool existed = vm_exists(name);
        size_t n_before = agent_n_vms(h.agent);

        /* read in order: the input means the same to every compiler */
        const char *backend = one_of(r, backends, ELEMENTSOF(backends), bbuf, sizeof(bbuf));
        const char *kind = one_of(r, kinds, ELEMENTSOF(kinds), hbuf, sizeof(hbuf));
        const char *kernel = path(r, kbuf, sizeof(kbuf));
        const char *initrd = path(r, ibuf, sizeof(ibuf));
        const char *cmdline = raw_string(r, cbuf, sizeof(cbuf));
        uint32_t cpus = (uint32_t) uint_n(r, u8(r) % 5);
        uint64_t memory = uint_n(r, u8(r) % 9);
        /* RunVM now and then, from a byte already read (the seeds keep their meaning): the harness has no
         * hypervisor, so every start fails, and a RunVM must then leave nothing behind */
        bool run = cpus % 7 == 6;
        sd_bus_message *m = new_call(run ? "RunVM" : "CreateVM");
        /* firmware "": the seeds' bytes keep their meaning (firmware paths go through the same checks as
         * the kernel's, which this reaches) */
        check(sd_bus_message_append(m, "sssssssut", name, backend, kind, kernel, "", initrd, cmdline, cpus,
                                    memory) >= 0);
        /* disks and ports: a few, or (rarely) very many */
        uint8_t nd = u8(r);
        size_t n_disks = nd < 250 ? nd % 12 : nd == 255 ? 100000 : 1000;
        check(sd_bus_message_open_container(m, 'a', "s") >= 0);
        for (size_t i = 0; i < n_disks; i++)
                check(sd_bus_message_append(m, "s", i < 16 ? path(r, sbuf, sizeof(sbuf)) : h.disk) >= 0);
        check(sd_bus_message_close_container(m) >= 0);
        uint8_t np = u8(r);
        size_t n_ports = np < 250 ? np % 20 : np == 255 ? 100000 : 1000;
        check(sd_bus_message_open_container(m, 'a', "(sqq)") >= 0);
        for (size_t i = 0; i < n_ports; i++) {
                static const char *const protos[] = { "tcp", "udp", "sctp", "TCP", "" };
                const char *proto =
                        i < 32 ? one_of(r, protos, ELEMENTSOF(protos), sbuf, sizeof(sbuf)) : "tcp";
                uint16_t host = i < 32 ? (uint16_t) uint_n(r, 2) : (uint16_t) (i + 1);
                uint16_t guest = (uint16_t) uint_n(r, 2);
                check(sd_bus_message_append(m, "(sqq)", proto, host, guest) >= 0);
        }
        check(sd_bus_message_close_container(m) >= 0);
        /* flags from bytes already read (the seeds keep their meaning): now and then --force-port, or a bit
         * no agent knows */
        uint64_t flags = cpus % 7 == 3 ? API_CREATE_FORCE_PORT : cpus % 7 == 5 ? UINT64_C(1) << 40 : 0;
        check(sd_bus_message_append(m, "t", flags) >= 0);

        char name_copy[6000];
        snprintf(name_copy, sizeof(name_copy), "%s", name); /* name may point into names[] */
        sd_bus_message *rep = call(m);
        if (!rep)
                return;
        if (denied(rep)) {
                check(agent_n_vms(h.agent) == n_before);
        } else if (is_error(rep, NULL)) {
                check(api_error(rep));
                /* a bad request changes nothing; a RunVM whose start failed neither */
                check(agent_n_vms(h.agent) == n_before && vm_exists(name_copy) == existed);
                if (run && vm_name_valid(name_copy) && !existed)
                        check(!is_error(rep, API_ERROR_NOT_FOUND)); /* it cannot start: not "no such VM" */
                if (!vm_name_valid(name_copy))
                        check(is_error(rep, API_ERROR_INVALID));
                else if (existed)
                        check(is_error(rep, API_ERROR_EXISTS) || is_error(rep, API_ERROR_INVALID) ||
                              is_error(rep, API_ERROR_BUSY));
        } else {
                uint64_t id = 0;
                check(sd_bus_message_read(rep, "t", &id) > 0 && id != 0);
                check(!run); /* no hypervisor here: a RunVM cannot succeed */
                check(vm_name_valid(name_copy) && !existed && agent_n_vms(h.agent) == n_before + 1);
                AgentVmInfo info;
                check(agent_vm_info(h.agent, name_copy, &info) >= 0 && info.id == id && info.def);
                check(info.state == VM_STATE_DEFINED && info.vmm_pid == 0);

                /* InspectVM says the same */
                sd_bus_message *q = new_call("InspectVM");
                check(sd_bus_message_append(q, "s", name_copy) >= 0);
                sd_bus_message *irep = call(q);
                const char *iname, *state;
                uint64_t iid;
                check(irep && !is_error(irep, NULL));
                check(sd_bus_message_enter_container(irep, 'r', "stssusssssa(sqq)") > 0);
                check(sd_bus_message_read(irep, "sts", &iname, &iid, &state) > 0);
                check(strcmp(iname, name_copy) == 0 && iid == id && strcmp(state, "defined") == 0);
                sd_bus_message_unref(irep);
        }
        sd_bus_message_unref(rep);
}

/* StartVM, KillVM, InspectVM: a name. */
static void do_name_call(Reader *r, char **names, const char *member) {
        char buf[6000];
        const char *name = vm_name(r, names, buf, sizeof(buf));
        bool existed = vm_exists(name);
        sd_bus_message *m = new_call(member);
        check(sd_bus_message_append(m, "s", name) >= 0);
        bool inspect = strcmp(member, "InspectVM") == 0;
        sd_bus_message *rep = call(m);
        if (!rep)
                return;
        if (!inspect && denied(rep)) {
        } else if (!existed)
                check(is_error(rep, API_ERROR_NOT_FOUND));
        else if (strcmp(member, "StartVM") == 0)
                /* there is no hypervisor to start; and it is there, so NotFound would be a lie */
                check(api_error(rep) && !is_error(rep, API_ERROR_NOT_FOUND));
        else
                check(!is_error(rep, NULL));
        sd_bus_message_unref(rep);
}

static void do_stop(Reader *r, char **names) {
        char buf[6000];
        const char *name = vm_name(r, names, buf, sizeof(buf));
        bool existed = vm_exists(name);
        uint8_t sel = u8(r);
        uint32_t timeout = sel < 64 ? 0 : sel < 128 ? 3600 : sel < 192 ? 3601 : (uint32_t) uint_n(r, 4);
        sd_bus_message *m = new_call("StopVM");
        check(sd_bus_message_append(m, "su", name, timeout) >= 0);
        sd_bus_message *rep = call(m);
        if (!rep || denied(rep)) {
        } else if (timeout > 3600)
                check(is_error(rep, API_ERROR_INVALID));
        else if (!existed)
                check(is_error(rep, API_ERROR_NOT_FOUND));
        else
                check(!is_error(rep, NULL));
        sd_bus_message_unref(rep);
}

static void do_remove(Reader *r, char **names) {
        char buf[6000];
        const char *name = vm_name(r, names, buf, sizeof(buf));
        char copy[6000];
        snprintf(copy, sizeof(copy), "%s", name);
        bool existed = vm_exists(name);
        sd_bus_message *m = new_call("RemoveVM");
        check(sd_bus_message_append(m, "sb", name, (int) (u8(r) & 1)) >= 0);
        sd_bus_message *rep = call(m);
        if (!rep || denied(rep)) {
        } else if (!existed)
                check(is_error(rep, API_ERROR_NOT_FOUND));
        else
                check(!is_error(rep, NULL) && !vm_exists(copy));
        sd_bus_message_unref(rep);
}

static void do_list(void) {
        sd_bus_message *rep = call(new_call("ListVMs"));
        size_t n = 0;
        check(rep && !is_error(rep, NULL));
        check(sd_bus_message_enter_container(rep, 'a', "(stssusssssa(sqq))") > 0);
        while (sd_bus_message_at_end(rep, false) == 0) {
                const char *name;
                check(sd_bus_message_enter_container(rep, 'r', "stssusssssa(sqq)") > 0);
                check(sd_bus_message_read(rep, "s", &name) > 0 && vm_name_valid(name) && vm_exists(name));
                check(sd_bus_message_skip(rep, "tssusssssa(sqq)") >= 0);
                check(sd_bus_message_exit_container(rep) >= 0);
                n++;
        }
        check(n == agent_n_vms(h.agent));
        sd_bus_message_unref(rep);
}

static void do_status(void) {
        sd_bus_message *rep = call(new_call("Status"));
        const char *id, *version, *jstate, *jmsg;
        uint32_t n_vms, n_running;
        check(rep && !is_error(rep, NULL));
        check(sd_bus_message_enter_container(rep, 'r', "ssssuuassu") > 0);
        check(sd_bus_message_read(rep, "ssssuu", &id, &version, &jstate, &jmsg, &n_vms, &n_running) > 0);
        check(n_vms == agent_n_vms(h.agent) && n_running == 0);
        sd_bus_message_unref(rep);
}

static void do_gc(Reader *r) {
        uint8_t sel = u8(r);
        bool dry_run = sel & 1, heuristic = sel & 2;
        size_t n_before = agent_n_vms(h.agent);
        sd_bus_message *m = new_call("CollectGarbage");
        check(sd_bus_message_append(m, "bb", (int) dry_run, (int) heuristic) >= 0);
        sd_bus_message *rep = call(m);
        if (rep && !(denied(rep) && !dry_run)) {
                check(!is_error(rep, NULL));
                int quarantine = -1;
                check(sd_bus_message_skip(rep, "a(ssssssbs)") >= 0 &&
                      sd_bus_message_read(rep, "b", &quarantine) > 0);
                check(quarantine == 0);
        }
        check(agent_n_vms(h.agent) == n_before); /* collecting garbage removes no VM */
        sd_bus_message_unref(rep);
}

static void do_simple(const char *member) {
        sd_bus_message *rep = call(new_call(member));
        check(rep && !is_error(rep, NULL));
        sd_bus_message_unref(rep);
}

static void do_hello(void) {
        sd_bus_message *m = NULL, *rep;
        const char *unique;
        check(sd_bus_message_new_method_call(h.client, &m, NULL, "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "Hello") >= 0);
        rep = call(m);
        check(rep && sd_bus_message_read(rep, "s", &unique) > 0 && strncmp(unique, ":1.", 3) == 0);
        sd_bus_message_unref(rep);
}

/* Any member of any interface with a signature and values of the input's choosing. */
static void do_any(Reader *r, char **names) {
        static const char *const members[] = { "CreateVM",   "RunVM",          "StartVM", "StopVM",
                                               "KillVM",     "RemoveVM",       "ListVMs", "InspectVM",
                                               "Status",     "CollectGarbage", "Doctor",  "Hello",
                                               "Introspect", "Ping",           "GetAll",  "Nope" };
        static const char *const interfaces[] = { API_INTERFACE,
                                                  "org.freedesktop.DBus.Introspectable",
                                                  "org.freedesktop.DBus.Peer",
                                                  "org.freedesktop.DBus.Properties",
                                                  "org.freedesktop.DBus",
                                                  "org.chvm.Agent2" };
        static const char *const paths[] = { API_OBJECT_PATH, "/", "/org/chvm", "/org/freedesktop/DBus",
                                             "/org/chvm/agent/x" };
        static const char types[] = "ybnqiuxtdsogbss";
        char buf[6000];
        sd_bus_message *m = NULL;
        uint8_t sel = u8(r);
        const char *iface = sel & 0x80 ? NULL : interfaces[sel % ELEMENTSOF(interfaces)];
        const char *opath = paths[u8(r) % ELEMENTSOF(paths)];
        const char *member = members[u8(r) % ELEMENTSOF(members)];
        check(sd_bus_message_new_method_call(h.client, &m, NULL, opath, iface, member) >= 0);
        for (unsigned i = 0, n = u8(r) % 14; i < n; i++) {
                uint8_t t = u8(r);
                int k;
                if (t >= 240) { /* an array of strings or of ports */
                        bool ports = t & 1;
                        check(sd_bus_message_open_container(m, 'a', ports ? "(sqq)" : "s") >= 0);
                        for (unsigned j = 0, len = u8(r) % 8; j < len; j++) {
                                if (ports) {
                                        const char *proto = raw_string(r, buf, sizeof(buf));
                                        uint16_t host = (uint16_t) uint_n(r, 2),
                                                 guest = (uint16_t) uint_n(r, 2);
                                        k = sd_bus_message_append(m, "(sqq)", proto, host, guest);
                                } else
                                        k = sd_bus_message_append(m, "s",
                                                                  vm_name(r, names, buf, sizeof(buf)));
                                check(k >= 0);
                        }
                        check(sd_bus_message_close_container(m) >= 0);
                        continue;
                }
                char type = types[t % (sizeof(types) - 1)];
                uint64_t v = uint_n(r, 8);
                switch (type) {
                case 's':
                        k = sd_bus_message_append_basic(m, 's', vm_name(r, names, buf, sizeof(buf)));
                        break;
                case 'o':
                        k = sd_bus_message_append_basic(m, 'o', "/org/chvm/agent");
                        break;
                case 'g':
                        k = sd_bus_message_append_basic(m, 'g', "a(sqq)");
                        break;
                case 'd': {
                        double d = (double) (int64_t) v / 7.0;
                        k = sd_bus_message_append_basic(m, 'd', &d);
                        break;
                }
                case 'b': {
                        int b = (int) (v & 1);
                        k = sd_bus_message_append_basic(m, 'b', &b);
                        break;
                }
                default:
                        k = sd_bus_message_append_basic(m, type, &v); /* little-endian: the low bytes */
                }
                check(k >= 0);
        }
        sd_bus_message *rep = call(m);
        sd_bus_message_unref(rep);
}

/* A second client that sends the input's bytes, after a valid handshake or not, and hangs up. */
/* Lets the server read what a raw client sent (it may hang up by itself), then hangs up: the connection
 * is dropped. */
static void raw_hang_up(int fd) {
        for (int i = 0; i < 1000 && api_n_connections(h.api) > h.base_conns; i++)
                if (sd_event_run(h.event, 0) <= 0)
                        break;
        close(fd);
        uint64_t start = now_usec();
        while (api_n_connections(h.api) > h.base_conns) {
                check(sd_event_run(h.event, 100000) >= 0);
                check(now_usec() - start < 5000000); /* a hung-up client is dropped */
        }
}

static void do_raw(Reader *r) {
        static const char handshake[] = "\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
        int fds[2];
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
        check(api_add_connection(h.api, fds[0]) >= 0);
        if (u8(r) & 1)
                (void) !write(fds[1], handshake, sizeof(handshake) - 1);
        size_t len = r->n < 4096 ? r->n : 4096;
        /* what the server can take without us reading its answers */
        for (size_t off = 0; off < len;) {
                ssize_t k = write(fds[1], r->p + off, len - off);
                if (k <= 0)
                        break;
                off += (size_t) k;
                (void) sd_event_run(h.event, 0);
        }
        r->p += len;
        r->n -= len;
        raw_hang_up(fds[1]);
}

/* --- more clients: another uid, a slow reader, fds, a hypervisor that runs ----------------------------- */

static size_t open_fds(void) {
        return folder_entries("/proc/self/fd");
}

/* A connected pair whose peer credentials are uid/gid 65534: made by a child that became nobody, handed
 * back over a socket. false when not root. */
static bool nobody_pair(int ret[2]) {
        int ch[2];
        if (!h.privileged)
                return false;
        check(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ch) == 0);
        pid_t pid = fork();
        check(pid >= 0);
        if (pid == 0) {
                int p[2];
                if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                    setresuid(65534, 65534, 65534) < 0 ||
                    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p) < 0)
                        _exit(1);
                char cbuf[CMSG_SPACE(2 * sizeof(int))] = {}, byte = 'x';
                struct iovec iov = { &byte, 1 };
                struct msghdr mh = {
                        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)
                };
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(2 * sizeof(int));
                memcpy(CMSG_DATA(c), p, 2 * sizeof(int));
                _exit(sendmsg(ch[1], &mh, 0) == 1 ? 0 : 1);
        }
        int status;
        check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        char cbuf[CMSG_SPACE(2 * sizeof(int))], byte;
        struct iovec iov = { &byte, 1 };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)
        };
        check(recvmsg(ch[0], &mh, MSG_CMSG_CLOEXEC) == 1);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        check(c && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(2 * sizeof(int)));
        memcpy(ret, CMSG_DATA(c), 2 * sizeof(int));
        close(ch[0]);
        close(ch[1]);
        return true;
}

static sd_bus *client_on(int fds[2], bool attach) {
        sd_bus *bus = NULL;
        check(api_add_connection(h.api, fds[0]) >= 0);
        check(sd_bus_new(&bus) >= 0);
        check(sd_bus_set_fd(bus, fds[1], fds[1]) >= 0);
        if (attach)
                check(sd_bus_attach_event(bus, h.event, SD_EVENT_PRIORITY_NORMAL) >= 0);
        check(sd_bus_start(bus) >= 0);
        return bus;
}

static void hang_up(sd_bus *bus) {
        sd_bus_close_unref(bus);
        uint64_t start = now_usec();
        while (api_n_connections(h.api) > h.base_conns) {
                check(sd_event_run(h.event, 100000) >= 0);
                check(now_usec() - start < 5000000);
        }
}

/* A client of uid 65534, not in the control group: every call that changes something is denied and
 * changes nothing; what only reads is answered. */
static void do_nobody(Reader *r, char **names) {
        static const char *const mutating[] = { "StartVM", "StopVM", "KillVM", "RemoveVM",
                                                "CollectGarbage" };
        int fds[2];
        char buf[6000];
        if (!nobody_pair(fds))
                return;
        sd_bus *bus = client_on(fds, true);
        size_t n_before = agent_n_vms(h.agent);
        const char *member = mutating[u8(r) % ELEMENTSOF(mutating)];
        const char *name = vm_name(r, names, buf, sizeof(buf));
        sd_bus_message *m = new_call_on(bus, member);
        int k;
        if (strcmp(member, "StopVM") == 0)
                k = sd_bus_message_append(m, "su", name, (uint32_t) 1);
        else if (strcmp(member, "RemoveVM") == 0)
                k = sd_bus_message_append(m, "sb", name, (int) (u8(r) & 1));
        else if (strcmp(member, "CollectGarbage") == 0)
                k = sd_bus_message_append(m, "bb", 0, (int) (u8(r) & 1));
        else
                k = sd_bus_message_append(m, "s", name);
        check(k >= 0);
        sd_bus_message *rep = call_on(bus, m);
        check(rep && is_error(rep, SD_BUS_ERROR_ACCESS_DENIED));
        sd_bus_message_unref(rep);
        check(agent_n_vms(h.agent) == n_before);
        rep = call_on(bus, new_call_on(bus, "ListVMs"));
        check(rep && !is_error(rep, NULL));
        sd_bus_message_unref(rep);
        hang_up(bus);
}

static int count_reply(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        (void) m;
        (void) e;
        (*(unsigned *) userdata)++;
        return 0;
}

/* A client that sends up to 255 calls and reads nothing until the agent is done: it is disconnected (its
 * answers piled up), or, still connected, gets every answer once it reads. */
static void do_slow_reader(Reader *r) {
        int fds[2];
        unsigned n = u8(r), answered = 0;
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
        sd_bus *bus = client_on(fds, false);
        unsigned sent = 0;
        for (unsigned i = 0; i < n; i++) {
                sd_bus_message *m = new_call_on(bus, i & 1 ? "ListVMs" : "Status");
                if (sd_bus_call_async(bus, NULL, m, count_reply, &answered, 0) >= 0)
                        sent++;
                sd_bus_message_unref(m);
                (void) sd_event_run(h.event, 0);
        }
        for (int i = 0; i < 100000 && sd_event_run(h.event, 0) > 0; i++)
                ;
        if (api_n_connections(h.api) > h.base_conns) {
                uint64_t start = now_usec();
                while (answered < sent && sd_bus_is_open(bus) > 0) {
                        int k = sd_bus_process(bus, NULL);
                        (void) sd_event_run(h.event, 0);
                        if (k == 0)
                                (void) sd_bus_wait(bus, 10000);
                        check(now_usec() - start < REPLY_TIMEOUT_USEC);
                }
                /* dropped meanwhile (it was still over budget), or everything answered */
                check(answered == sent || sd_bus_is_open(bus) <= 0);
        }
        hang_up(bus);
}

/* A raw client that sends a message carrying an fd: the agent never agreed to fds, so it drops the
 * connection, and keeps none of the fds. */
static void do_fds(Reader *r) {
        static const char handshake[] = "\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
        int fds[2], null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        check(null >= 0);
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
        size_t before = open_fds(); /* with our end and the agent's end */
        check(api_add_connection(h.api, fds[0]) >= 0);
        (void) !write(fds[1], handshake, sizeof(handshake) - 1);
        (void) sd_event_run(h.event, 0);
        char payload[512];
        size_t len = r->n < sizeof(payload) ? r->n : sizeof(payload);
        memcpy(payload, r->p, len);
        r->p += len;
        r->n -= len;
        if (len == 0)
                payload[len++] = 'l';
        unsigned n_fds = 1 + (len % 8);
        int sent[8];
        for (unsigned i = 0; i < n_fds; i++)
                sent[i] = null;
        char cbuf[CMSG_SPACE(8 * sizeof(int))] = {};
        struct iovec iov = { payload, len };
        struct msghdr mh = { .msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = cbuf,
                             .msg_controllen = CMSG_SPACE(n_fds * sizeof(int)) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
        memcpy(CMSG_DATA(c), sent, n_fds * sizeof(int));
        (void) sendmsg(fds[1], &mh, MSG_NOSIGNAL);
        raw_hang_up(fds[1]);
        close(null);
        /* our two ends and /dev/null are closed: two fewer than before (the agent's end went with it) */
        check(open_fds() <= before - 2);
}

/* The stand-in hypervisor for do_hypervisor(): exits on SIGTERM, ignores it, or ends by itself. */
/* The stand-in's behaviour, through fake-vmm's environment (the agent passes FAKE_VMM_* on): it serves
 * and powers off at the power button; ignores the power button and SIGTERM (killed at the end of the stop);
 * ends by itself with 0 after 50 ms, or with 3 after 20 ms; or ends before its API answers (a failed
 * start). */
static const char *const stand_in_env[][3] = {
        { NULL },
        { "FAKE_VMM_IGNORE_POWER=1", "FAKE_VMM_IGNORE_TERM=1", NULL },
        { "FAKE_VMM_EXIT_AFTER_MS=50", NULL },
        { "FAKE_VMM_EXIT_AFTER_MS=20", "FAKE_VMM_EXIT_CODE=3", NULL },
        { "FAKE_VMM_LISTEN_AFTER_MS=200", "FAKE_VMM_EXIT_AFTER_MS=20", "FAKE_VMM_EXIT_CODE=3" },
};

static void stand_in_setenv(uint8_t how, bool set) {
        const char *const *env = stand_in_env[how % ELEMENTSOF(stand_in_env)];
        for (size_t i = 0; i < 3 && env[i]; i++) {
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int) strcspn(env[i], "="), env[i]);
                check((set ? setenv(name, env[i] + strlen(name) + 1, 1) : unsetenv(name)) == 0);
        }
}

static bool vm_running(const char *name) {
        AgentVmInfo info;
        return agent_vm_info(h.agent, name, &info) >= 0 && info.vmm_pid != 0;
}

/* A VM whose hypervisor runs (a script standing in for QEMU, found in PATH for this call only), then a
 * few of StopVM, KillVM, RemoveVM (with and without force), InspectVM, ListVMs and waits: the pending
 * answers come once it is down, a stopped or killed VM does not run, a removed one is gone, and at the
 * end no VM runs and no child is left. */
static void do_hypervisor(Reader *r) {
        static const char name[] = "hv-stand-in";
        if (!h.privileged || vm_exists(name))
                return;
        uint8_t how = u8(r);
        char path[200];
        snprintf(path, sizeof(path), "%s/bin", h.dir);
        check(setenv("PATH", path, 1) == 0);
        sd_bus_message *m = new_call("CreateVM");
        check(sd_bus_message_append(m, "sssssssutas", name, "", "cloud-hypervisor", h.kernel, "", "", "",
                                    (uint32_t) 1, (uint64_t) 64, 0) >= 0);
        check(sd_bus_message_append(m, "a(sqq)t", 0, UINT64_C(0)) >= 0);
        sd_bus_message *rep = call(m);
        if (!rep || is_error(rep, NULL)) { /* no backend (not root): nothing to run */
                sd_bus_message_unref(rep);
                check(setenv("PATH", "/nonexistent/chvm-fuzz-api", 1) == 0);
                return;
        }
        sd_bus_message_unref(rep);
        m = new_call("StartVM");
        check(sd_bus_message_append(m, "s", name) >= 0);
        stand_in_setenv(how, true);
        rep = call(m);
        stand_in_setenv(how, false);
        /* answered once its API answered, or failed with the VM down (it ended first) */
        check(rep && (!is_error(rep, NULL) || (is_error(rep, API_ERROR_FAILED) && !vm_running(name))));
        if (how % ELEMENTSOF(stand_in_env) == 4)
                check(is_error(rep, API_ERROR_FAILED)); /* gone 180 ms before its API */
        sd_bus_message_unref(rep);
        check(setenv("PATH", "/nonexistent/chvm-fuzz-api", 1) == 0);

        for (unsigned i = 0, n = 1 + u8(r) % 4; i < n && vm_exists(name); i++) {
                uint8_t op = u8(r) % 7;
                if (op == 6) {
                        uint64_t until = now_usec() + 30000;
                        while (now_usec() < until)
                                (void) sd_event_run(h.event, 10000);
                        continue;
                }
                static const char *const members[] = { "StopVM",   "KillVM",    "RemoveVM",
                                                       "RemoveVM", "InspectVM", "ListVMs" };
                m = new_call(members[op]);
                if (op == 0)
                        check(sd_bus_message_append(m, "su", name, (uint32_t) 1) >= 0);
                else if (op == 2 || op == 3)
                        check(sd_bus_message_append(m, "sb", name, op == 2) >= 0);
                else if (op != 5)
                        check(sd_bus_message_append(m, "s", name) >= 0);
                bool was_running = vm_running(name);
                rep = call(m);
                check(rep != NULL);
                if (op == 0 || op == 1) {
                        check(!is_error(rep, NULL));
                        check(!vm_running(name)); /* answered once it is down */
                } else if (op == 2) {
                        check(!is_error(rep, NULL) && !vm_exists(name));
                } else if (op == 3) {
                        check(was_running ? is_error(rep, API_ERROR_BUSY) || !vm_running(name)
                                          : !is_error(rep, NULL) && !vm_exists(name));
                } else
                        check(!is_error(rep, NULL));
                sd_bus_message_unref(rep);
        }
        if (vm_exists(name)) {
                m = new_call("RemoveVM");
                check(sd_bus_message_append(m, "sb", name, 1) >= 0);
                rep = call(m);
                check(rep && !is_error(rep, NULL));
                sd_bus_message_unref(rep);
        }
        check(!vm_exists(name) && agent_n_running(h.agent) == 0);
        uint64_t start = now_usec();
        while (!no_children()) { /* reaped from the loop */
                (void) sd_event_run(h.event, 10000);
                check(now_usec() - start < 5000000);
        }
}

/* --- set-up and the run ------------------------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        (void) remove(p);
        return 0;
}

static void rm_rf(const char *p) {
        (void) nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup(void) {
        current = sd_bus_message_unref(current);
        h.api = api_free(h.api);
        if (h.client)
                h.client = sd_bus_close_unref(h.client);
        h.agent = agent_free(h.agent);
        h.event = sd_event_unref(h.event);
        if (h.dir[0])
                rm_rf(h.dir);
}

static void on_state(Agent *a, const char *name, uint64_t vm_id, VmState state, const char *reason,
                     void *userdata) {
        (void) a;
        (void) userdata;
        if (h.api)
                api_emit_state_changed(h.api, name, vm_id, state, reason);
}

static void connect_client(void) {
        int fds[2];
        if (h.client)
                h.client = sd_bus_close_unref(h.client);
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
        check(api_add_connection(h.api, fds[0]) >= 0);
        check(sd_bus_new(&h.client) >= 0);
        check(sd_bus_set_fd(h.client, fds[1], fds[1]) >= 0);
        check(sd_bus_attach_event(h.client, h.event, SD_EVENT_PRIORITY_NORMAL) >= 0);
        check(sd_bus_start(h.client) >= 0);
        h.base_conns = api_n_connections(h.api);
}

static void touch(const char *p) {
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        check(fd >= 0);
        close(fd);
}

static void new_agent(void) {
        AgentConfig cfg;
        Error err;
        config_defaults(&cfg, BUILD_BACKEND_DIR);
        snprintf(cfg.state_dir, sizeof(cfg.state_dir), "%s/state", h.dir);
        snprintf(cfg.runtime_dir, sizeof(cfg.runtime_dir), "%s/run", h.dir);
        snprintf(cfg.socket, sizeof(cfg.socket), "%s/run/agent.sock", h.dir);
        snprintf(cfg.default_backend, sizeof(cfg.default_backend), "mosnet");
        snprintf(cfg.backends[0], sizeof(cfg.backends[0]), "mosnet");
        cfg.n_backends = 1;
        /* does not exist: a StartVM forks, the exec fails, the start fails; nothing ever runs. The other
         * kind (cloud-hypervisor) is looked up in PATH, which leads nowhere but in the stand-in's call. */
        snprintf(cfg.hypervisor, sizeof(cfg.hypervisor), "qemu");
        snprintf(cfg.vmm_binary, sizeof(cfg.vmm_binary), "%s/no-such-hypervisor", h.dir);
        static const char *const pass[] = { "FAKE_VMM_*" };
        cfg.n_vmm_pass_environment = 1;
        snprintf(cfg.vmm_pass_environment[0], sizeof(cfg.vmm_pass_environment[0]), "%s", pass[0]);
        snprintf(cfg.accel, sizeof(cfg.accel), "tcg");
        AgentOptions o = { .config_path = "fuzz.conf" };
        int r = agent_new(&cfg, &o, h.event, &h.agent, &err);
        if (r < 0) {
                /* e.g. not root: the loader refuses a module not owned by root */
                fprintf(stderr,
                        "fuzz-api: no agent with the mosnet backend (%s); running with no backend, "
                        "so no VM can be created\n",
                        error_message(&err));
                cfg.n_backends = 0;
                r = agent_new(&cfg, &o, h.event, &h.agent, &err);
        }
        if (r < 0) {
                fprintf(stderr, "fuzz-api: cannot make the agent: %s\n", error_message(&err));
                exit(1);
        }
        agent_set_state_callback(h.agent, on_state, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void) argc;
        (void) argv;
        log_setup("fuzz-api", LOG_TARGET_STDERR, getenv("CHVM_FUZZ_LOG") ? LOG_DEBUG : LOG_CRIT);
        if (geteuid() == 0 && unshare(CLONE_NEWNET) < 0) {
                fprintf(stderr, "fuzz-api: unshare(CLONE_NEWNET): %s\n", strerror(errno));
                exit(1);
        }
        h.privileged = geteuid() == 0;
        /* As the daemon: sd-event's child sources want SIGCHLD blocked. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        check(sigprocmask(SIG_BLOCK, &ss, NULL) == 0);
        /* The kinds' default binaries (a VM may ask for qemu) are looked up in PATH: none is found. */
        check(setenv("PATH", "/nonexistent/chvm-fuzz-api", 1) == 0);
        snprintf(h.dir, sizeof(h.dir), "/dev/shm/chvm-fuzz-api.XXXXXX");
        if (!mkdtemp(h.dir)) {
                snprintf(h.dir, sizeof(h.dir), "/tmp/chvm-fuzz-api.XXXXXX");
                check(mkdtemp(h.dir) != NULL);
        }
        atexit(cleanup);
        snprintf(h.state_vms, sizeof(h.state_vms), "%s/state/vms", h.dir);
        snprintf(h.run_vms, sizeof(h.run_vms), "%s/run/vms", h.dir);
        snprintf(h.kernel, sizeof(h.kernel), "%s/vmlinuz", h.dir);
        snprintf(h.initrd, sizeof(h.initrd), "%s/initrd.img", h.dir);
        snprintf(h.disk, sizeof(h.disk), "%s/disk.img", h.dir);
        snprintf(h.missing, sizeof(h.missing), "%s/missing", h.dir);
        snprintf(h.folder, sizeof(h.folder), "%s/state", h.dir);
        touch(h.kernel);
        touch(h.initrd);
        char bin[160];
        snprintf(bin, sizeof(bin), "%s/bin", h.dir);
        check(mkdir(bin, 0755) == 0);
        /* the stand-in hypervisor: fake-vmm, found as cloud-hypervisor in PATH in do_hypervisor() only */
        char stand_in[200];
        snprintf(stand_in, sizeof(stand_in), "%s/cloud-hypervisor", bin);
        check(symlink(FAKE_VMM_PATH, stand_in) == 0);
        touch(h.disk);

        check(sd_event_new(&h.event) >= 0);
        new_agent();
        check(api_new_unlistened(h.agent, h.event, &h.api) >= 0);
        connect_client();
        return 0;
}

static char **vm_names(void) {
        AgentVmInfo *infos = NULL;
        size_t n = 0;
        check(agent_vm_list(h.agent, &infos, &n) >= 0);
        char **names = calloc(n + 1, sizeof(char *));
        check(names != NULL);
        for (size_t i = 0; i < n; i++) {
                names[i] = strdup(infos[i].name);
                check(names[i] != NULL);
        }
        free(infos);
        return names;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Reader r = { data, size };
        bool started = false;

        if (!h.client || sd_bus_is_open(h.client) <= 0)
                connect_client();
        for (unsigned i = 0; i < MAX_CALLS && r.n > 0; i++) {
                _cleanup_(strv_freep) char **names = vm_names();
                switch (u8(&r) % 20) {
                case 0:
                case 1:
                case 2:
                        do_create(&r, names);
                        break;
                case 3:
                        do_name_call(&r, names, "StartVM");
                        started = true;
                        break;
                case 4:
                        do_stop(&r, names);
                        break;
                case 5:
                        do_name_call(&r, names, "KillVM");
                        break;
                case 6:
                        do_remove(&r, names);
                        break;
                case 7:
                        do_list();
                        break;
                case 8:
                        do_name_call(&r, names, "InspectVM");
                        break;
                case 9:
                        do_status();
                        break;
                case 10:
                        do_gc(&r);
                        break;
                case 11:
                        do_simple("Doctor");
                        break;
                case 12:
                        do_hello();
                        break;
                case 13:
                case 14:
                        do_any(&r, names);
                        break;
                case 15:
                        do_raw(&r);
                        break;
                case 16:
                        do_nobody(&r, names);
                        break;
                case 17:
                        do_slow_reader(&r);
                        break;
                case 18:
                        do_fds(&r);
                        break;
                default:
                        do_hypervisor(&r);
                        started = true;
                }
                check(sd_bus_is_open(h.client) > 0); /* well-formed calls never cost the connection */
                check_state();
        }

        /* The next input starts from nothing. */
        _cleanup_(strv_freep) char **names = vm_names();
        for (char **n = names; *n; n++) {
                if (vm_running(*n)) { /* killed, and removed once its exit came through the loop */
                        check(agent_vm_kill(h.agent, *n) >= 0);
                        uint64_t start = now_usec();
                        while (vm_running(*n)) {
                                (void) sd_event_run(h.event, 10000);
                                check(now_usec() - start < 5000000);
                        }
                }
                int k = agent_vm_remove(h.agent, *n);
                if (k < 0)
                        fprintf(stderr, "fuzz-api: cannot remove VM %s: %s\n", *n, agent_error(h.agent));
                check(k >= 0);
        }
        check(agent_n_vms(h.agent) == 0);
        check_state();
        if (started) {
                check(no_children());
                rm_rf(h.run_vms);
        }
        if (++h.inputs % 4096 == 0)
                check(journal_compact(agent_journal(h.agent), 0) >= 0);
        return 0;
}
