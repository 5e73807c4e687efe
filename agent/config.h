/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* /etc/chvm/agent.conf (INI, parsed with inih). Every key has a default; an unknown section or key, a
 * key given twice or a value that does not parse makes the whole file invalid, and the error names
 * FILE:LINE and the cause. Keys (defaults in brackets):
 *
 *   [agent]  state_dir [/var/lib/chvm]  runtime_dir [/run/chvm]  socket [<runtime_dir>/agent.sock]
 *            backend_dir [$(pkglibdir)/backends]  default_backend [local]  control_group [chvm]
 *            backends [local bridge mosnet]   (the modules loaded at start)
 *            journal_compact_size [8M]   (compact the ownership journal when it grows past this; K, M, G)
 *            connections_per_uid [64]  idle_timeout [60]   (seconds; 0: never)
 *   [vmm]    hypervisor [cloud-hypervisor]  binary [per kind]  stop_timeout [10]  start_timeout [30]
 *            accel [auto]
 *            allow_block_devices [no]  image_dirs []   (absolute folders; empty: anywhere)
 *            environment []  pass_environment []   (the hypervisors' environment besides PATH)
 *
 * Any other section belongs to the backend of its name, which must be among [agent] backends: the agent
 * keeps its lines (config_backend_settings()) and the backend parses them when it is loaded (its configure
 * hook), with the same FILE:LINE errors. The local and bridge backends' keys: chvm-agent.conf(5).
 */

#include <ini.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define CONFIG_MAX_BACKENDS 8
#define CONFIG_MAX_IMAGE_DIRS 8
#define CONFIG_MAX_ENV 16
#define CONFIG_MAX_SETTINGS 64 /* lines of the backends' sections, all together */

/* A line of a backend's section, kept for the backend. */
typedef struct ConfigSetting {
        char section[33];
        char key[33];
        char value[INI_MAX_LINE];
        unsigned line;
} ConfigSetting;

typedef struct AgentConfig {
        char state_dir[PATH_MAX];
        char runtime_dir[PATH_MAX];
        char socket[108]; /* sun_path */
        char backend_dir[PATH_MAX];
        char default_backend[33];
        char control_group[33];
        char backends[CONFIG_MAX_BACKENDS][33];
        unsigned n_backends;
        uint64_t journal_compact_size; /* bytes */
        unsigned connections_per_uid; /* a uid other than 0 holds at most this many connections */
        unsigned
                idle_timeout; /* seconds; a connection with no call in flight is closed after it; 0: never */

        char hypervisor[32]; /* "cloud-hypervisor" or "qemu" */
        char vmm_binary[PATH_MAX]; /* "" = the kind's default */
        unsigned stop_timeout; /* seconds */
        unsigned
                start_timeout; /* seconds: a hypervisor whose API has not answered by then failed to start */
        char accel[8]; /* "auto", "kvm", "tcg" */
        bool allow_block_devices; /* a disk may be a block device */
        char image_dirs[CONFIG_MAX_IMAGE_DIRS]
                       [256]; /* kernels, initrds, firmware and disks only below these */
        unsigned n_image_dirs;
        char vmm_environment[CONFIG_MAX_ENV][256]; /* "NAME=VALUE" */
        unsigned n_vmm_environment;
        char vmm_pass_environment[CONFIG_MAX_ENV][64]; /* NAME or PREFIX* */
        unsigned n_vmm_pass_environment;

        ConfigSetting settings[CONFIG_MAX_SETTINGS];
        unsigned n_settings;
        char source[PATH_MAX]; /* the file the settings came from, for the backends' messages */
} AgentConfig;

/* The defaults, with backend_dir as given (the build's pkglibdir). */
void config_defaults(AgentConfig *c, const char *backend_dir);

/* Parses path over the defaults already in *c ([vmm] binary must exist and be executable). 0, or -errno
 * with *e = "PATH:LINE: cause" (a line longer than INI_MAX_LINE - 2 bytes is one), or "PATH: cause" when
 * the file cannot be read, is larger than 1 MiB or holds a NUL byte. On failure *c is unchanged. */
int config_load(AgentConfig *c, const char *path, Error *e);

/* Same from a string (for tests and the fuzzer); `name` stands in for the path in messages. */
int config_load_string(AgentConfig *c, const char *name, const char *text, Error *e);

struct BackendSetting;
/* The lines of backend `name`'s section, pointing into *c, in file order: how many (at most max). */
size_t config_backend_settings(const AgentConfig *c, const char *name, struct BackendSetting *ret,
                               size_t max);
struct BackendConfig;
/* A BackendConfig for backend `name` with its section (up to max lines, in settings) and the file's name
 * for its messages; the rest zero, for the caller to fill. */
void config_backend_config(const AgentConfig *c, const char *name, struct BackendSetting *settings,
                           size_t max, struct BackendConfig *ret);
