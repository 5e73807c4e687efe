/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/vm-manager.h"
#include "backends/backend.h"
#include "util/clock.h"
#include "util/crashpoint.h"
#include "util/hashmap.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/utf8.h"
#include "vmm/argv.h"
#include "vmm/process.h"

typedef enum StopStage {
        STOP_NONE,
        STOP_GRACEFUL, /* asked the hypervisor to power the guest off */
        STOP_TERM, /* sent SIGTERM */
        STOP_KILL, /* sent SIGKILL */
} StopStage;

typedef enum TalkPurpose {
        TALK_READY, /* HypervisorVTable.ready */
        TALK_POWER_OFF, /* HypervisorVTable.power_off */
} TalkPurpose;

typedef struct Vm {
        VmManager *manager;
        uint64_t id;
        char name[33];
        char *api_socket; /* NULL when unknown */
        VmmProcess process;
        sd_event_source *source;
        sd_event_source *timer;
        HypervisorKind kind;
        StopStage stage;
        uint64_t stop_timeout_usec;
        bool adopted; /* not our child: the exit status cannot be read */
        bool sent_kill; /* we sent SIGKILL (kill, or the last step of a stop) */
        bool dying; /* seen on its way out (vm_manager_reap()); its exit event is yet to come */
        bool journaled_start; /* VM_STARTED is in the journal */
        VmNetPending *net; /* during the spawn: the network to make at the gate, emptied once made */
        bool net_made; /* the gate made it: a failure after that takes it down again */
        bool ready; /* its API answered the kind's readiness conversation (adopted: true) */
        TalkPurpose talk_for;
        sd_event_source *ready_timer; /* the next try to reach the API, while not ready */
        uint64_t ready_deadline; /* CLOCK_MONOTONIC usec: not ready by then, it is killed */
        uint64_t ready_begun; /* CLOCK_MONOTONIC usec of the spawn */
        uint64_t ready_delay; /* usec until the next try; doubles up to READY_DELAY_MAX */
        bool ready_timed_out; /* killed for not answering in time */
        /* the readiness or power-button conversation (talk_fd -EBADF when none) */
        int talk_fd;
        sd_event_source *talk_io;
        const char *const *talk_reqs, *const *talk_expects;
        size_t talk_n, talk_step, talk_have;
        char *talk_buf; /* TALK_BUF_SIZE, only while talking: a VM costs ~0.4 KiB the rest of the time */
} Vm;

#define TALK_BUF_SIZE 4096
#define READY_DELAY_FIRST 100U /* usec */
#define READY_FIRST_USEC 2000U /* tries every READY_DELAY_FIRST for this long, */
#define READY_DELAY_FAST 500U /* then every READY_DELAY_FAST */
#define READY_FAST_USEC 10000U /* up to this long, then doubling */
#define READY_DELAY_MAX 50000U
#define START_TIMEOUT_DEFAULT 30U /* seconds */

struct VmManager {
        VmManagerConfig cfg;
        char runtime_dir[4096];
        U64Map *vms; /* running, by id */
        char **environment, **pass_environment; /* copies of the config's */
        Error error;
};

static void ready_begin(Vm *vm);

_printf_(3, 4) static int fail(VmManager *m, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = error_setv(&m->error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return r;
}

/* The dispatcher's failure r, passed up as it is. */
static int dispatcher_failed(VmManager *m, int r) {
        const Error *e = dispatcher_last_error(m->cfg.dispatcher);
        if (e->code == r)
                m->error = *e;
        else
                error_errno(&m->error, r, "%s", strerror(-r));
        return r;
}

const char *vm_manager_error(const VmManager *m) {
        return error_message(&m->error);
}

const Error *vm_manager_last_error(const VmManager *m) {
        return &m->error;
}

static bool env_name_matches(const char *pattern, const char *entry) {
        size_t n = strlen(pattern);
        if (n > 0 && pattern[n - 1] == '*')
                return strncmp(entry, pattern, n - 1) == 0 && strchr(entry + n - 1, '=') != NULL;
        return strncmp(entry, pattern, n) == 0 && entry[n] == '=';
}

static char **strv_copy(const char *const *l) {
        ArgvBuilder b = {};
        char **ret = NULL;
        for (size_t i = 0; l && l[i]; i++)
                argv_builder_add(&b, l[i]);
        return argv_builder_finish(&b, &ret) < 0 ? NULL : ret;
}

/* At each start, from the environment the agent has then. */
static int build_environment(const VmManager *m, char ***ret) {
        ArgvBuilder b = {};
        argv_builder_add(&b, VMM_DEFAULT_PATH);
        for (size_t i = 0; m->environment[i]; i++)
                argv_builder_add(&b, m->environment[i]);
        for (char **e = environ; e && *e; e++) {
                if (strncmp(*e, "PATH=", 5) == 0)
                        continue;
                for (size_t i = 0; m->pass_environment[i]; i++)
                        if (env_name_matches(m->pass_environment[i], *e)) {
                                argv_builder_add(&b, *e);
                                break;
                        }
        }
        return argv_builder_finish(&b, ret);
}

int vm_manager_new(const VmManagerConfig *cfg, VmManager **ret) {
        VmManager *m = calloc(1, sizeof(VmManager));
        if (!m)
                return -ENOMEM;
        m->cfg = *cfg;
        if (m->cfg.start_timeout_sec == 0)
                m->cfg.start_timeout_sec = START_TIMEOUT_DEFAULT;
        snprintf(m->runtime_dir, sizeof(m->runtime_dir), "%s", cfg->runtime_dir);
        m->cfg.runtime_dir = m->runtime_dir;
        m->vms = u64map_new();
        m->environment = strv_copy(cfg->environment);
        m->pass_environment = strv_copy(cfg->pass_environment);
        m->cfg.environment = m->cfg.pass_environment = NULL; /* the caller's */
        if (!m->vms || !m->environment || !m->pass_environment) {
                vm_manager_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

static Vm *vm_free(Vm *vm) {
        if (!vm)
                return NULL;
        if (vm->adopted && vm->manager->cfg.taskstats)
                taskstats_listener_unwatch(vm->manager->cfg.taskstats, vm->process.pid);
        sd_event_source_disable_unref(vm->source);
        sd_event_source_disable_unref(vm->timer);
        sd_event_source_disable_unref(vm->ready_timer);
        sd_event_source_disable_unref(vm->talk_io);
        safe_close(vm->talk_fd);
        free(vm->talk_buf);
        free(vm->api_socket);
        safe_close(vm->process.pidfd);
        free(vm);
        return NULL;
}

VmManager *vm_manager_free(VmManager *m) {
        void *v;
        if (!m)
                return NULL;
        for (size_t i = 0; u64map_iterate(m->vms, &i, NULL, &v);)
                vm_free(v);
        u64map_free(m->vms);
        strv_free(m->environment);
        strv_free(m->pass_environment);
        free(m);
        return NULL;
}

/* The exit as journaled: "exited with status N" (stopped when N is 0, else crashed), "killed by signal N"
 * (crashed), or, when it cannot be known (si NULL: an adopted hypervisor is not our child), "exit status
 * unknown" (crashed: nobody asked it to stop). */
static JournalVmState exit_reason(const Vm *vm, const siginfo_t *si, VmExit *rec, char *reason,
                                  size_t size) {
        if (!si) {
                /* Not our child and taskstats did not say: what we did ourselves is all we know. */
                if (vm->sent_kill) {
                        snprintf(reason, size,
                                 "killed by signal %d (sent by the agent; exit status not seen)", SIGKILL);
                        return JOURNAL_VM_CRASHED;
                }
                if (vm->stage != STOP_NONE) {
                        snprintf(reason, size, "exited after a stop request (exit status unknown)");
                        return JOURNAL_VM_STOPPED;
                }
                snprintf(reason, size, "exit status unknown");
                return JOURNAL_VM_CRASHED;
        }
        if (vm->ready_timed_out) {
                snprintf(reason, size,
                         "killed by signal %d (sent by the agent: its API did not answer within %u s)",
                         SIGKILL, vm->manager->cfg.start_timeout_sec);
                rec->exit_signal = SIGKILL;
                return JOURNAL_VM_CRASHED;
        }
        if (si->si_code == CLD_EXITED) {
                snprintf(reason, size, "exited with status %d", si->si_status);
                rec->exit_status = si->si_status;
                return si->si_status == 0 ? JOURNAL_VM_STOPPED : JOURNAL_VM_CRASHED;
        }
        snprintf(reason, size, "killed by signal %d%s", si->si_status,
                 si->si_code == CLD_DUMPED ? " (core dumped)" : "");
        rec->exit_signal = si->si_status;
        return JOURNAL_VM_CRASHED;
}

/* Through the dispatcher, the journal's one writer. sync false: the caller syncs once for several. */
static int journal_exit_full(VmManager *m, uint64_t vm_id, VmExit *rec, JournalVmState state,
                             const char *reason, bool sync) {
        rec->state = state;
        rec->reason = reason;
        int r = dispatcher_vm_exited(m->cfg.dispatcher, vm_id, rec, sync);
        return r < 0 ? dispatcher_failed(m, r) : 0;
}

static int journal_exit(VmManager *m, uint64_t vm_id, JournalVmState state, const char *reason) {
        VmExit x = { .exit_status = -1, .exit_signal = -1 };
        return journal_exit_full(m, vm_id, &x, state, reason, true);
}

static void notify_exit(VmManager *m, uint64_t vm_id, const char *name, JournalVmState state,
                        const char *reason, int error, bool before_ready) {
        if (m->cfg.on_exit)
                m->cfg.on_exit(m, vm_id, name, state, reason, error, before_ready, m->cfg.userdata);
}

/* An adopted hypervisor's exit as taskstats saw it, in waitid()'s terms; false when it was not seen. */
static bool adopted_exit(VmManager *m, Vm *vm, siginfo_t *ret) {
        TaskExit te;
        if (!m->cfg.taskstats || taskstats_listener_take(m->cfg.taskstats, vm->process.pid, &te) <= 0)
                return false;
        *ret = (siginfo_t){ .si_code = !te.signaled     ? CLD_EXITED
                                       : te.core_dumped ? CLD_DUMPED
                                                        : CLD_KILLED,
                            .si_status = te.status };
        return true;
}

/* The hypervisor is gone, whatever the cause: network down at once, then the exit reason. si is NULL for an
 * adopted hypervisor (not our child): taskstats may know. */
static void hypervisor_gone(Vm *vm, const siginfo_t *si) {
        VmManager *m = vm->manager;
        VmExit rec = { .exit_status = -1, .exit_signal = -1 };
        siginfo_t seen;
        char reason[160];

        if (!si && vm->adopted && adopted_exit(m, vm, &seen))
                si = &seen;

        error_clear(&m->error);
        u64map_remove(m->vms, vm->id);
        int r = vm_net_down(m->cfg.dispatcher, vm->id);
        if (r < 0)
                fail(m, r, "VM %s: network teardown after exit failed: %s", vm->name,
                     dispatcher_error(m->cfg.dispatcher));
        JournalVmState state = exit_reason(vm, si, &rec, reason, sizeof(reason));
        if (!vm->ready && !vm->ready_timed_out) {
                /* A start that failed: the reason says so. */
                size_t n = strlen(reason);
                snprintf(reason + n, sizeof(reason) - n, " before its API answered");
        }
        int k = journal_exit_full(m, vm->id, &rec, state, reason, true);
        notify_exit(m, vm->id, vm->name, state, reason, r < 0 ? r : k, !vm->ready);
        vm_free(vm);
}

static bool reap(Vm *vm);

/* The hypervisor's pidfd is readable: it has exited (ours or adopted). Level-triggered, not sd-event's
 * child source: that one is armed once, and a pidfd that turned readable before its exit could be reaped
 * left a zombie nobody handled (fuzz-api found it: a hypervisor exiting by itself as it was killed). */
static int on_pidfd(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s;
        (void) fd;
        (void) revents;
        (void) reap(userdata);
        return 0;
}

static int vm_dir(VmManager *m, uint64_t id, char *buf, size_t size) {
        char vms[4200];
        snprintf(vms, sizeof(vms), "%s/vms", m->runtime_dir);
        if (mkdir(m->runtime_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        /* 0700: the VM ids (and the API sockets) are no one else's business */
        if (mkdir(vms, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        if (chmod(vms, 0700) < 0)
                return negative_errno();
        int n = snprintf(buf, size, "%s/%016" PRIx64, vms, id);
        if (n < 0 || (size_t) n >= size)
                return -ENAMETOOLONG;
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}

/* The spawn's gate: VM_STARTED is durable before the hypervisor runs, so every hypervisor the agent ever
 * ran is named in the journal, whenever the agent dies. Its fdatasync is also the one of the network's
 * intents (and of a RunVM's VM_DEFINE), appended before the fork: then the network is made, while the
 * child waits, and it execs into a TAP that exists. */
static int journal_started(const VmmProcess *p, void *userdata) {
        Vm *vm = userdata;
        VmManager *m = vm->manager;
        int r = CRASH_POINT("vmm-gate-before-started");
        if (r >= 0)
                r = dispatcher_vm_started(m->cfg.dispatcher, vm->id, (uint32_t) p->pid, p->start_time,
                                          p->boot_id);
        if (r < 0)
                return dispatcher_failed(m, r);
        vm->journaled_start = true;
        r = CRASH_POINT("vmm-gate-started-journaled");
        if (r < 0)
                return r;
        r = vm_net_apply(m->cfg.dispatcher, vm->net);
        if (r < 0)
                return dispatcher_failed(m, r);
        vm->net_made = true;
        return 0;
}

/* Right after the gate: the CREATED records synced while the hypervisor execs, so that they are durable
 * before the start is answered (the journal's rule) without the sync holding up the exec. */
static int sync_created(const VmmProcess *p, void *userdata) {
        Vm *vm = userdata;
        (void) p;
        int r = dispatcher_sync(vm->manager->cfg.dispatcher);
        return r < 0 ? dispatcher_failed(vm->manager, r) : 0;
}

/* What the hypervisor of req runs with, on the network net. */
static void fill_spec(const VmManager *m, const VmRequest *req, const VmNetInfo *net, const char *sock,
                      const char *serial, VmSpec *ret) {
        bool ip_arg = net->ip4 && net->kernel_ip_arg;
        *ret = (VmSpec){
                .name = req->name,
                .kernel = req->kernel,
                .firmware = req->firmware,
                .initrd = req->initrd,
                .cmdline = req->cmdline,
                .cpus = req->cpus,
                .memory_mib = req->memory_mib,
                .tap = net->tap[0] ? net->tap : NULL,
                .ip4 = ip_arg ? net->ip4 : 0,
                .gateway4 = ip_arg ? net->gateway : 0,
                .prefixlen = ip_arg ? net->prefixlen : 0,
                .api_socket = sock,
                .serial_log = serial,
                .disks = req->disks,
                .n_disks = req->n_disks,
                .accel = m->cfg.accel,
                .binary = req->binary                            ? req->binary
                          : req->hypervisor == m->cfg.hypervisor ? m->cfg.binary
                                                                 : NULL,
        };
        memcpy(ret->mac, net->mac, 6);
}

int vm_manager_validate(VmManager *m, const VmRequest *req) {
        char sock[4400], serial[4400];
        /* The names a start would use (its id's folder), a TAP and an address of the longest kind. */
        VmNetInfo net = { .tap = "tap-0123456789", .mac = { 0x02, 0, 0, 0, 0, 1 } };
        BackendNetParams p;
        if (dispatcher_backend_params(m->cfg.dispatcher, req->backend, &p) >= 0 && p.gateway &&
            p.prefixlen) {
                uint32_t mask = ~UINT32_C(0) << (32 - p.prefixlen);
                net.ip4 = (p.gateway & mask) | (~mask - 1);
                if (net.ip4 == p.gateway)
                        net.ip4--;
                net.gateway = p.gateway;
                net.prefixlen = p.prefixlen;
                net.kernel_ip_arg = p.kernel_ip_arg;
        }
        snprintf(sock, sizeof(sock), "%s/vms/%016" PRIx64 "/api.sock", m->runtime_dir, req->vm_id);
        snprintf(serial, sizeof(serial), "%s/vms/%016" PRIx64 "/serial.log", m->runtime_dir, req->vm_id);
        VmSpec spec;
        fill_spec(m, req, &net, sock, serial, &spec);
        error_clear(&m->error);
        int r = vm_spec_validate(&spec, req->hypervisor, &m->error);
        return r < 0 ? error_prefix(&m->error, "VM %s", req->name) : 0;
}

int vm_manager_start(VmManager *m, const VmRequest *req, VmStarted *ret) {
        char dir[4300], sock[4400], serial[4400], log[4400];
        _cleanup_(strv_freep) char **argv = NULL, **envp = NULL;
        VmNetInfo net;
        int r;

        error_clear(&m->error);
        if (u64map_get(m->vms, req->vm_id))
                return fail(m, -EBUSY, "VM %s is already running", req->name);
        r = vm_dir(m, req->vm_id, dir, sizeof(dir));
        if (r < 0)
                return fail(m, r, "VM %s: cannot make its runtime folder under %s: %s", req->name,
                            m->runtime_dir, strerror(-r));
        snprintf(sock, sizeof(sock), "%s/api.sock", dir);
        snprintf(serial, sizeof(serial), "%s/serial.log", dir);
        snprintf(log, sizeof(log), "%s/hypervisor.log", dir);
        (void) unlink(sock);

        VmNetRequest nreq = { .vm_id = req->vm_id,
                              .vm_name = req->name,
                              .backend = req->backend,
                              .ports = req->ports,
                              .n_ports = req->n_ports };
        /* Its intents now, synced with VM_STARTED at the gate, where the network is made. */
        _cleanup_(vm_net_pending_clear) VmNetPending pending = {};
        r = vm_net_prepare(m->cfg.dispatcher, &nreq, &pending, &net);
        if (r < 0)
                return dispatcher_failed(m, r);

        VmSpec spec;
        fill_spec(m, req, &net, sock, serial, &spec);
        r = hypervisor_build_argv(req->hypervisor, &spec, &argv, &m->error);
        if (r < 0) {
                error_prefix(&m->error, "VM %s", req->name);
                goto abandon_net;
        }

        Vm *vm = calloc(1, sizeof(Vm));
        if (!vm) {
                r = -ENOMEM;
                goto abandon_net;
        }
        vm->talk_fd = -EBADF;
        vm->manager = m;
        vm->id = req->vm_id;
        vm->kind = req->hypervisor;
        vm->api_socket = strdup(sock);
        if (!vm->api_socket) {
                free(vm);
                r = -ENOMEM;
                goto abandon_net;
        }
        snprintf(vm->name, sizeof(vm->name), "%s", req->name);
        vm->net = &pending;
        Error se = {};
        r = build_environment(m, &envp);
        if (r < 0)
                error_errno(&se, r, "cannot make its environment: %s", strerror(-r));
        else
                r = vmm_spawn_gated(argv, envp, log, journal_started, sync_created, vm, &vm->process, &se);
        vm->net = NULL;
        if (r < 0) {
                if (error_message(&m->error)[0])
                        se = m->error; /* the gate's own failure (the journal, the network), not "not
                                          started: ..." */
                m->error = se;
                char own[VM_NAME_MAX + 8];
                snprintf(own, sizeof(own), "VM %s: ", req->name);
                if (strncmp(error_message(&m->error), own, strlen(own)) != 0) /* the network's names it */
                        error_prefix(&m->error, "VM %s", req->name);
                if (vm->journaled_start) {
                        /* Journaled as started, then its network or its exec failed: over before it
                         * began. Stopped, not crashed, when it never got as far as its network. */
                        (void) journal_exit(m, vm->id,
                                            vm->net_made ? JOURNAL_VM_CRASHED : JOURNAL_VM_STOPPED,
                                            error_message(&se));
                }
                bool made = vm->net_made;
                free(vm->api_socket);
                free(vm);
                if (made)
                        goto undo_net;
                /* A failed apply undid itself; a spawn that never reached the gate made nothing. */
                (void) vm_net_abandon(m->cfg.dispatcher, &pending);
                return r;
        }

        r = sd_event_add_io(m->cfg.event, &vm->source, vm->process.pidfd, EPOLLIN, on_pidfd, vm);
        if (r >= 0)
                r = u64map_put(m->vms, vm->id, vm);
        if (r < 0) {
                fail(m, r, "VM %s: cannot watch its hypervisor: %s", req->name, strerror(-r));
                (void) vmm_signal(vm->process.pidfd, SIGKILL);
                (void) waitid(P_PIDFD, (id_t) vm->process.pidfd, &(siginfo_t){}, WEXITED);
                (void) journal_exit(m, vm->id, JOURNAL_VM_CRASHED, "killed: the agent could not watch it");
                vm_free(vm);
                goto undo_net;
        }
        ready_begin(vm);
        if (ret)
                *ret = (VmStarted){ .net = net, .pid = vm->process.pid, .ready = vm->ready };
        return 0;

undo_net:
        (void) vm_net_down(m->cfg.dispatcher, req->vm_id);
        return r;

abandon_net:
        (void) vm_net_abandon(m->cfg.dispatcher, &pending);
        return r;
}

/* Not running (or never started here): make sure nothing of its network is left. */
static int net_down(VmManager *m, uint64_t vm_id) {
        int r = vm_net_down(m->cfg.dispatcher, vm_id);
        return r < 0 ? dispatcher_failed(m, r) : 0;
}

int vm_manager_kill(VmManager *m, uint64_t vm_id) {
        Vm *vm = u64map_get(m->vms, vm_id);
        if (!vm)
                return net_down(m, vm_id);
        /* ESRCH counts as success; the exit event tears the network down. If the signal cannot be sent at
         * all, the network goes now, and the exit event (whenever it comes) finds nothing left. */
        int r = vmm_signal(vm->process.pidfd, SIGKILL);
        if (r >= 0)
                vm->sent_kill = true; /* only once sent: a failed kill is not "killed by the agent" */
        if (r < 0) {
                fail(m, r, "VM %s: cannot kill its hypervisor (pid %d): %s", vm->name, (int) vm->process.pid,
                     strerror(-r));
                (void) vm_net_down(m->cfg.dispatcher, vm_id);
        }
        return r;
}

/* The pidfd is readable: the hypervisor has exited. For our child that is true only once waitid() has it:
 * the pidfd can turn readable a moment before the exit can be reaped, and then this is called again (the
 * pidfd stays readable). Whether it was handled. */
static bool reap(Vm *vm) {
        siginfo_t si = {};
        if (vm->adopted) { /* not our child: the reason is taskstats' or unknown */
                hypervisor_gone(vm, NULL);
                return true;
        }
        if (waitid(P_PIDFD, (id_t) vm->process.pidfd, &si, WEXITED | WNOHANG) < 0) {
                hypervisor_gone(vm, NULL); /* cannot happen for our child: reason unknown */
                return true;
        }
        if (si.si_pid == 0)
                return false;
        hypervisor_gone(vm, &si);
        return true;
}

/* Whether the VM's hypervisor has exited (to be reaped now); else marks it dying when it is on its way. */
static bool look_at(Vm *vm) {
        struct pollfd p = { .fd = vm->process.pidfd, .events = POLLIN };
        if (poll(&p, 1, 0) > 0)
                return true;
        if (!vm->dying)
                /* killed a moment ago, or slow to exit: stopping, not running; no wait here */
                vm->dying = process_dying(vm->process.pid);
        return false;
}

bool vm_manager_reap_vm(VmManager *m, uint64_t vm_id) {
        Vm *vm = u64map_get(m->vms, vm_id);
        return vm && look_at(vm) && reap(vm);
}

size_t vm_manager_reap(VmManager *m) {
        size_t n = 0, k = 0;
        void *v;
        Vm **gone = calloc(u64map_size(m->vms) + 1, sizeof(Vm *));
        if (!gone)
                return 0;
        for (size_t i = 0; u64map_iterate(m->vms, &i, NULL, &v);)
                if (look_at(v))
                        gone[n++] = v;
        size_t reaped = 0;
        for (; k < n; k++)
                reaped += reap(gone[k]);
        free(gone);
        return reaped;
}

size_t vm_manager_reap_exits(VmManager *m) {
        size_t n = u64map_size(m->vms), k = 0, reaped = 0;
        _cleanup_free_ struct pollfd *fds = calloc(n + 1, sizeof(struct pollfd));
        _cleanup_free_ Vm **vms = calloc(n + 1, sizeof(Vm *));
        void *v;
        if (!fds || !vms)
                return 0;
        for (size_t i = 0; u64map_iterate(m->vms, &i, NULL, &v) && k < n; k++) {
                vms[k] = v;
                fds[k] = (struct pollfd){ .fd = vms[k]->process.pidfd, .events = POLLIN };
        }
        /* One poll() for all of them: the exits the loop has not dispatched yet. */
        if (poll(fds, k, 0) <= 0)
                return 0;
        for (size_t i = 0; i < k; i++)
                if (fds[i].revents)
                        reaped += reap(vms[i]);
        return reaped;
}

pid_t vm_manager_pid(const VmManager *m, uint64_t vm_id) {
        const Vm *vm = u64map_get(m->vms, vm_id);
        return vm ? vm->process.pid : 0;
}

bool vm_manager_stopping(const VmManager *m, uint64_t vm_id) {
        const Vm *vm = u64map_get(m->vms, vm_id);
        return vm && (vm->stage != STOP_NONE || vm->dying);
}

size_t vm_manager_n_running(const VmManager *m) {
        return u64map_size(m->vms);
}

/* The conversations on the API socket, as the VM's kind describes them (HypervisorVTable.ready and
 * .power_off), driven by the event loop: a hypervisor that does not answer holds up nothing but itself. */
static void talk_close(Vm *vm) {
        vm->talk_io = sd_event_source_disable_unref(vm->talk_io);
        vm->talk_fd = safe_close(vm->talk_fd);
        free(vm->talk_buf);
        vm->talk_buf = NULL;
}

static int talk_send(Vm *vm) {
        const char *req = vm->talk_reqs[vm->talk_step];
        if (!req)
                return 0;
        ssize_t n = send(vm->talk_fd, req, strlen(req), MSG_NOSIGNAL | MSG_DONTWAIT);
        return n == (ssize_t) strlen(req) ? 0 : n < 0 ? negative_errno() : -EIO;
}

static void ready_retry(Vm *vm);
static void became_ready(Vm *vm);

/* The conversation broke off (closed, refused, an answer too long). */
static void talk_failed(Vm *vm) {
        talk_close(vm);
        if (vm->talk_for == TALK_READY) {
                ready_retry(vm); /* still starting: its API may close a first client */
                return;
        }
        /* The hypervisor did not take the power button: SIGTERM at once, and the timer starts over. */
        if (vm->stage != STOP_GRACEFUL)
                return;
        vm->stage = STOP_TERM;
        (void) vmm_signal(vm->process.pidfd, SIGTERM);
        if (vm->timer)
                (void) sd_event_source_set_time_relative(vm->timer, vm->stop_timeout_usec);
}

static void talk_done(Vm *vm) {
        talk_close(vm);
        if (vm->talk_for == TALK_READY)
                became_ready(vm);
        /* power off: asked; now the guest powers off, or the timer escalates */
}

static int on_talk(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Vm *vm = userdata;
        (void) s;
        (void) revents;

        if (vm->talk_have + 1 >= TALK_BUF_SIZE) {
                talk_failed(vm);
                return 0;
        }
        ssize_t n = recv(fd, vm->talk_buf + vm->talk_have, TALK_BUF_SIZE - 1 - vm->talk_have, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                talk_failed(vm);
                return 0;
        }
        vm->talk_have += (size_t) n;
        vm->talk_buf[vm->talk_have] = '\0';
        for (;;) {
                char *hit = strstr(vm->talk_buf, vm->talk_expects[vm->talk_step]);
                if (!hit)
                        return 0;
                /* keep what follows the match for the next step */
                size_t off = (size_t) (hit - vm->talk_buf) + strlen(vm->talk_expects[vm->talk_step]);
                memmove(vm->talk_buf, vm->talk_buf + off, vm->talk_have - off + 1);
                vm->talk_have -= off;
                if (++vm->talk_step == vm->talk_n) {
                        talk_done(vm);
                        return 0;
                }
                if (talk_send(vm) < 0) {
                        talk_failed(vm);
                        return 0;
                }
        }
}

/* Connects to the API socket and sends the first request of talk. -errno when the socket cannot be
 * reached (ENOENT, ECONNREFUSED: not there or not listening yet). */
static int talk_start(Vm *vm, const HypervisorTalk *talk, TalkPurpose purpose) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        if (!vm->api_socket || !talk || talk->n == 0)
                return -ENOENT;
        if (strlen(vm->api_socket) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, vm->api_socket, strlen(vm->api_socket) + 1);
        if (!vm->talk_buf && !(vm->talk_buf = malloc(TALK_BUF_SIZE)))
                return -ENOMEM;
        vm->talk_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (vm->talk_fd < 0) {
                r = negative_errno();
                talk_close(vm);
                return r;
        }
        if (connect(vm->talk_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = negative_errno();
                talk_close(vm);
                return r;
        }
        vm->talk_for = purpose;
        vm->talk_reqs = talk->requests;
        vm->talk_expects = talk->expects;
        vm->talk_n = talk->n;
        vm->talk_step = 0;
        vm->talk_have = 0;
        r = talk_send(vm);
        if (r >= 0)
                r = sd_event_add_io(vm->manager->cfg.event, &vm->talk_io, vm->talk_fd, EPOLLIN, on_talk, vm);
        if (r < 0)
                talk_close(vm);
        return r;
}

static int start_power_off(VmManager *m, Vm *vm) {
        const HypervisorVTable *vt = hypervisor_vtable(vm->kind);
        (void) m;
        return talk_start(vm, vt ? vt->power_off : NULL, TALK_POWER_OFF);
}

/* --- readiness: from the spawn until the kind's ready conversation completes --------------------------- */

static void became_ready(Vm *vm) {
        VmManager *m = vm->manager;
        vm->ready = true;
        vm->ready_timer = sd_event_source_disable_unref(vm->ready_timer);
        if (m->cfg.on_ready)
                m->cfg.on_ready(m, vm->id, vm->name, m->cfg.userdata);
}

static void ready_try(Vm *vm) {
        const HypervisorVTable *vt = hypervisor_vtable(vm->kind);
        if (vm->ready || vm->stage != STOP_NONE || vm->talk_fd >= 0)
                return;
        if (talk_start(vm, vt->ready, TALK_READY) < 0)
                ready_retry(vm);
}

static int on_ready_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Vm *vm = userdata;
        (void) s;
        if (usec >= vm->ready_deadline) {
                /* Not up in time: a start that failed. The exit event says so and tears down. */
                talk_close(vm);
                vm->ready_timer = sd_event_source_disable_unref(vm->ready_timer);
                vm->ready_timed_out = true;
                if (vmm_signal(vm->process.pidfd, SIGKILL) >= 0)
                        vm->sent_kill = true;
                else
                        (void) vm_net_down(vm->manager->cfg.dispatcher, vm->id);
                return 0;
        }
        ready_try(vm);
        return 0;
}

/* Tries again a little later (0.1 ms for 2 ms, 0.5 ms up to 10 ms, then doubling up to 50 ms), or at the
 * deadline. A refused connect() costs a few microseconds: 20 of them in the first 2 ms, where a small
 * hypervisor's API comes up (fake-vmm in about 1 ms after its exec), take 0.2 ms off the average start. */
static void ready_retry(Vm *vm) {
        VmManager *m = vm->manager;
        uint64_t now = monotonic_usec(), at;
        if (vm->ready || vm->stage != STOP_NONE)
                return;
        at = now + vm->ready_delay;
        if (at > vm->ready_deadline)
                at = vm->ready_deadline;
        if (now >= vm->ready_begun + READY_FAST_USEC)
                vm->ready_delay =
                        vm->ready_delay * 2 > READY_DELAY_MAX ? READY_DELAY_MAX : vm->ready_delay * 2;
        else if (now >= vm->ready_begun + READY_FIRST_USEC)
                vm->ready_delay = READY_DELAY_FAST;
        int r = vm->ready_timer ? sd_event_source_set_time(vm->ready_timer, at)
                                : sd_event_add_time(m->cfg.event, &vm->ready_timer, CLOCK_MONOTONIC, at,
                                                    1 /* usec; 0 would mean sd-event's default, 250 ms */,
                                                    on_ready_timer, vm);
        if (r >= 0)
                r = sd_event_source_set_enabled(vm->ready_timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                /* Without a timer nothing would ever decide: take it as up rather than hang the start. */
                log_warning("VM %s: cannot arm the timer for its start (%s): taken as started", vm->name,
                            strerror(-r));
                became_ready(vm);
        }
}

/* Right after the spawn: up at once when the kind has no readiness conversation. */
static void ready_begin(Vm *vm) {
        VmManager *m = vm->manager;
        const HypervisorVTable *vt = hypervisor_vtable(vm->kind);
        uint64_t now = monotonic_usec();
        if (!vt || !vt->ready || !vt->ready->n || !vm->api_socket) {
                vm->ready = true;
                return;
        }
        vm->ready_begun = now;
        vm->ready_deadline = now + (uint64_t) m->cfg.start_timeout_sec * UINT64_C(1000000);
        vm->ready_delay = READY_DELAY_FIRST;
        ready_try(vm);
}

int vm_manager_last_words(const VmManager *m, uint64_t vm_id, char *buf, size_t size) {
        char path[4400], tail[4096];
        if (size == 0)
                return -EINVAL;
        buf[0] = '\0';
        snprintf(path, sizeof(path), "%s/vms/%016" PRIx64 "/hypervisor.log", m->runtime_dir, vm_id);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return -EINVAL;
        off_t from = st.st_size > (off_t) sizeof(tail) - 1 ? st.st_size - (off_t) sizeof(tail) + 1 : 0;
        ssize_t n = pread(fd, tail, sizeof(tail) - 1, from);
        if (n <= 0)
                return n < 0 ? negative_errno() : 0;
        /* the last line that has something in it */
        while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
                n--;
        tail[n] = '\0';
        char *line = memrchr(tail, '\n', (size_t) n);
        line = line ? line + 1 : tail;
        size_t k = 0;
        for (; *line && k + 1 < size; line++)
                buf[k++] = (unsigned char) *line < 0x20 || *line == 0x7f ? ' ' : *line;
        buf[k] = '\0';
        utf8_sanitize(buf);
        return (int) k;
}

bool vm_manager_ready(const VmManager *m, uint64_t vm_id) {
        const Vm *vm = u64map_get(m->vms, vm_id);
        return vm && vm->ready;
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Vm *vm = userdata;
        (void) s;
        (void) usec;

        /* Still running: the next, harder step. */
        talk_close(vm);
        if (vm->stage < STOP_TERM) {
                vm->stage = STOP_TERM;
                (void) vmm_signal(vm->process.pidfd, SIGTERM);
        } else {
                vm->stage = STOP_KILL;
                if (vmm_signal(vm->process.pidfd, SIGKILL) < 0)
                        /* The network goes even when the hypervisor cannot be killed. */
                        (void) vm_net_down(vm->manager->cfg.dispatcher, vm->id);
                else
                        vm->sent_kill = true;
                return 0;
        }
        return sd_event_source_set_time_relative(vm->timer, vm->stop_timeout_usec) < 0 ||
                               sd_event_source_set_enabled(vm->timer, SD_EVENT_ONESHOT) < 0
                       ? -EIO
                       : 0;
}

int vm_manager_stop(VmManager *m, uint64_t vm_id, unsigned timeout_sec) {
        Vm *vm = u64map_get(m->vms, vm_id);
        int r;

        if (!vm)
                return net_down(m, vm_id);
        if (vm->stage != STOP_NONE)
                return 0; /* already on its way down */
        if (!vm->ready) {
                /* Still starting: no more tries; the exit fails the start. */
                talk_close(vm);
                vm->ready_timer = sd_event_source_disable_unref(vm->ready_timer);
        }
        vm->stop_timeout_usec = (uint64_t) (timeout_sec ? timeout_sec : 1) * UINT64_C(1000000);

        r = start_power_off(m, vm);
        if (r >= 0)
                vm->stage = STOP_GRACEFUL;
        else {
                /* The hypervisor does not answer: go on with SIGTERM right away. */
                vm->stage = STOP_TERM;
                (void) vmm_signal(vm->process.pidfd, SIGTERM);
        }
        r = sd_event_add_time_relative(m->cfg.event, &vm->timer, CLOCK_MONOTONIC, vm->stop_timeout_usec, 0,
                                       on_stop_timer, vm);
        if (r < 0) {
                /* Without a timer there is no escalation: kill now rather than hang. */
                if (vmm_signal(vm->process.pidfd, SIGKILL) >= 0)
                        vm->sent_kill = true;
                return fail(m, r, "VM %s: cannot arm the stop timer: %s", vm->name, strerror(-r));
        }
        return 0;
}

/* Watches a hypervisor that is not our child (its pidfd taken, identity checked). */
static int watch_adopted(VmManager *m, uint64_t vm_id, const char *name, pid_t pid, uint64_t start_time,
                         const uint8_t boot_id[16], int pidfd) {
        Vm *vm = calloc(1, sizeof(Vm));
        if (!vm) {
                safe_close(pidfd);
                return -ENOMEM;
        }
        vm->talk_fd = -EBADF;
        vm->manager = m;
        vm->id = vm_id;
        vm->adopted = true;
        vm->ready = true; /* it ran before the agent restarted */
        vm->kind = m->cfg.kind_of ? m->cfg.kind_of(vm->id, m->cfg.userdata) : m->cfg.hypervisor;
        snprintf(vm->name, sizeof(vm->name), "%s", name);
        char dir[4300];
        if (vm_dir(m, vm->id, dir, sizeof(dir)) >= 0 && asprintf(&vm->api_socket, "%s/api.sock", dir) < 0)
                vm->api_socket = NULL; /* no power button then: a stop goes on to SIGTERM */
        vm->process = (VmmProcess){ .pid = pid, .pidfd = pidfd, .start_time = start_time };
        memcpy(vm->process.boot_id, boot_id, 16);
        int k = sd_event_add_io(m->cfg.event, &vm->source, pidfd, EPOLLIN, on_pidfd, vm);
        if (k >= 0)
                k = u64map_put(m->vms, vm->id, vm);
        if (k < 0) {
                vm_free(vm);
                return fail(m, k, "VM %s: cannot watch its adopted hypervisor: %s", name, strerror(-k));
        }
        return 0;
}

uint64_t vm_manager_vm_id_in(const char *cmdline, const char *needle) {
        const char *p = strstr(cmdline, needle);
        if (!p)
                return 0;
        p += strlen(needle);
        char hex[17];
        for (int i = 0; i < 16; i++) {
                if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
                        return 0;
                hex[i] = p[i];
        }
        hex[16] = '\0';
        return p[16] == '/' ? strtoull(hex, NULL, 16) : 0;
}

/* Whether pid is provably VM vm_id's hypervisor (process_is_hypervisor_of()): our uid, the binary the VM's
 * kind runs, and the VM's TAP or API socket in its hands. 1, 0, or -errno. */
int vm_manager_is_hypervisor(VmManager *m, pid_t pid, uint64_t vm_id) {
        HypervisorKind kind = m->cfg.kind_of ? m->cfg.kind_of(vm_id, m->cfg.userdata) : m->cfg.hypervisor;
        const HypervisorVTable *vt = hypervisor_vtable(kind);
        const char *binary = kind == m->cfg.hypervisor && m->cfg.binary ? m->cfg.binary
                             : vt                                       ? vt->default_binary
                                                                        : NULL;
        char found[PATH_MAX], dir[4300], sock[4400];
        const char *tap = NULL;
        const LiveObject *o;

        if (!binary || vmm_find_binary(binary, found, sizeof(found)) < 0)
                return 0;
        for (size_t i = 0; live_set_iterate_objects(journal_live_set(m->cfg.journal), &i, &o);)
                if (o->vm_id == vm_id && o->kind == RESOURCE_LINK_TAP && o->name)
                        tap = o->name;
        int n = snprintf(dir, sizeof(dir), "%s/vms/%016" PRIx64, m->runtime_dir, vm_id);
        if (n < 0 || (size_t) n >= sizeof(dir))
                return 0;
        snprintf(sock, sizeof(sock), "%s/api.sock", dir);
        return process_is_hypervisor_of(pid, geteuid(), found, tap, sock);
}

/* A hypervisor the journal does not say is running but that runs: started by us for a VM the journal
 * knows (its arguments name our runtime folder's vms/<id>/, and vm_manager_is_hypervisor() proves it), e.g.
 * after the journal was restored from a backup. Adopted, and journaled as started. */
typedef struct OrphanCtx {
        VmManager *m;
        const char *needle; /* "<runtime_dir>/vms/" */
        uint8_t boot[16];
        size_t adopted;
} OrphanCtx;

static int adopt_orphan(pid_t pid, const char *cmdline, void *userdata) {
        OrphanCtx *c = userdata;
        VmManager *m = c->m;
        uint64_t id = vm_manager_vm_id_in(cmdline, c->needle), start_time;
        const LiveVm *lv = id ? live_set_get_vm(journal_live_set(m->cfg.journal), id) : NULL;
        int pidfd = -EBADF, r;

        if (pid <= 1 || !lv || lv->state == JOURNAL_VM_RUNNING || u64map_get(m->vms, id))
                return 0;
        /* Its arguments name the VM's folder, which anyone may write in theirs: not proof enough. */
        if (vm_manager_is_hypervisor(m, pid, id) <= 0)
                return 0;
        if (process_start_time(pid, &start_time) < 0 || vmm_adopt(pid, start_time, c->boot, &pidfd) < 0)
                return 0; /* gone meanwhile */
        r = dispatcher_vm_started(m->cfg.dispatcher, id, (uint32_t) pid, start_time, c->boot);
        if (r < 0) {
                safe_close(pidfd);
                return dispatcher_failed(m, r);
        }
        char name[33];
        snprintf(name, sizeof(name), "%s", lv->name);
        if (m->cfg.taskstats)
                (void) taskstats_listener_watch(m->cfg.taskstats, pid);
        r = watch_adopted(m, id, name, pid, start_time, c->boot, pidfd);
        if (r < 0)
                return r;
        c->adopted++;
        return 0;
}

static int adopt_orphans(VmManager *m, size_t *adopted) {
        char needle[4200];
        OrphanCtx c = { .m = m, .needle = needle };
        int r = boot_id_get(c.boot);
        if (r < 0)
                return r;
        snprintf(needle, sizeof(needle), "%s/vms/", m->runtime_dir);
        r = process_for_each(adopt_orphan, &c);
        *adopted += c.adopted;
        return r;
}

/* A VM whose hypervisor was found gone at adoption, for the teardown after the loop. */
typedef struct DeadVm {
        char name[33];
        bool pid_reused;
} DeadVm;

static const char *dead_reason(const DeadVm *d) {
        return d->pid_reused ? "hypervisor gone while the agent was down (its PID is reused)"
                             : "hypervisor gone while the agent was down";
}

int vm_manager_adopt_all(VmManager *m, size_t *ret_adopted, size_t *ret_gone) {
        const LiveSet *ls = journal_live_set(m->cfg.journal);
        _cleanup_free_ uint64_t *ids = calloc(live_set_n_vms(ls) + 1, sizeof(uint64_t));
        _cleanup_free_ uint64_t *dead_ids = calloc(live_set_n_vms(ls) + 1, sizeof(uint64_t));
        _cleanup_free_ DeadVm *dead = calloc(live_set_n_vms(ls) + 1, sizeof(DeadVm));
        const LiveVm *lv;
        size_t n = 0, n_dead = 0, adopted = 0;
        int r = 0, down = 0;

        if (!ids || !dead_ids || !dead)
                return -ENOMEM;
        for (size_t it = 0; live_set_iterate_vms(ls, &it, &lv);)
                if (lv->state == JOURNAL_VM_RUNNING && !u64map_get(m->vms, lv->vm_id))
                        ids[n++] = lv->vm_id;

        for (size_t i = 0; i < n; i++) {
                lv = live_set_get_vm(ls, ids[i]);
                int pidfd = -EBADF;
                /* Watched before the identity check: an exit right after it cannot go unseen. */
                if (m->cfg.taskstats)
                        (void) taskstats_listener_watch(m->cfg.taskstats, (pid_t) lv->pid);
                int k = vmm_adopt((pid_t) lv->pid, lv->start_time, lv->boot_id, &pidfd);
                if (k >= 0) {
                        k = watch_adopted(m, lv->vm_id, lv->name, (pid_t) lv->pid, lv->start_time,
                                          lv->boot_id, pidfd);
                        if (k < 0)
                                return k;
                        adopted++;
                        continue;
                }
                if (m->cfg.taskstats)
                        taskstats_listener_unwatch(m->cfg.taskstats, (pid_t) lv->pid);
                if (k != -ESRCH && k != -ESTALE)
                        return fail(m, k, "VM %s: cannot check its hypervisor (pid %u): %s", lv->name,
                                    lv->pid, strerror(-k));

                /* Dead, or the PID now belongs to another program (never signalled): torn down below. */
                dead_ids[n_dead] = ids[i];
                snprintf(dead[n_dead].name, sizeof(dead[n_dead].name), "%s", lv->name);
                dead[n_dead++].pid_reused = k == -ESTALE;
        }

        /* All the dead at once: each backend removes its share in one go (one nft batch, one grouped
         * RTM_DELLINK) instead of listing every link and element and waiting out an RCU grace period once
         * per VM, which made 100 dead VMs among 1,000 take seconds. A teardown that fails (say, a backend
         * that is not loaded now) does not keep the agent from starting: the VMs are journaled crashed,
         * their objects stay owned, and doctor --gc deletes them once it can. */
        if (n_dead > 0) {
                down = vm_net_down_many(m->cfg.dispatcher, dead_ids, n_dead);
                if (down < 0)
                        fail(m, down, "VM %s%s: teardown of the network failed: %s", dead[0].name,
                             n_dead > 1 ? " (and others whose hypervisor is gone)" : "",
                             dispatcher_error(m->cfg.dispatcher));
        }
        /* Their exits with one fdatasync (no kernel change waits on these records), then reported; on a
         * journal failure, each VM up to the one that failed is reported with the error. */
        size_t journaled = 0;
        while (journaled < n_dead && r >= 0) {
                VmExit rec = { .exit_status = -1, .exit_signal = -1 };
                r = journal_exit_full(m, dead_ids[journaled], &rec, JOURNAL_VM_CRASHED,
                                      dead_reason(&dead[journaled]), false);
                journaled++;
        }
        if (r >= 0 && n_dead > 0 && (r = dispatcher_sync(m->cfg.dispatcher)) < 0)
                dispatcher_failed(m, r);
        for (size_t i = 0; i < journaled; i++)
                notify_exit(m, dead_ids[i], dead[i].name, JOURNAL_VM_CRASHED, dead_reason(&dead[i]),
                            r < 0 ? r : down, false);
        if (r < 0)
                return r;
        r = adopt_orphans(m, &adopted);
        if (r < 0)
                return r;
        if (ret_adopted)
                *ret_adopted = adopted;
        if (ret_gone)
                *ret_gone = n_dead;
        return 0;
}
