/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* VM definitions: one file per VM, state_dir/vms/NAME.vm, written by the agent and readable (and editable)
 * by an admin. INI-like, parsed here rather than with inih, which cuts lines at 200 bytes:
 *
 *     # Written by chvm-agentd. ...       comment lines start with '#' or ';' (no comments after a value)
 *     [vm]                                exactly one section
 *     name = web                          required, ^[a-z][a-z0-9-]{0,31}$, equal to NAME of NAME.vm
 *     id = 00000000000004d2               required, 16 lowercase hex digits, not all zero
 *     backend = local                     required, 1..32 of [a-z0-9_-]
 *     hypervisor = qemu                   cloud-hypervisor or qemu; empty or absent: the agent's default
 *     cpus = 2                            1..VM_SPEC_CPUS_MAX [1]
 *     memory = 512                        MiB, VM_SPEC_MEMORY_MIB_MIN..VM_SPEC_MEMORY_MIB_MAX [256]
 *     disk = /srv/vm/web.img              repeatable (guest order), absolute, at most VM_DEF_MAX_DISKS
 *     port = 8080:80/tcp                  repeatable, HOSTPORT:GUESTPORT[/tcp|/udp], at most
 * VM_DEF_MAX_PORTS
 *     initrd = /boot/initrd.img           absolute; empty or absent: none (needs a kernel)
 *     cmdline = quiet panic=-1            the rest of the line, at most VM_KERNEL_CMDLINE_MAX bytes (needs a
 *                                         kernel)
 *     firmware = /usr/share/ovmf/OVMF.fd  absolute; empty or absent: the hypervisor's default
 *     kernel = /boot/vmlinuz              required key, absolute; empty: no kernel, the VM boots its first
 *                                         disk through its firmware (then it needs a disk or a firmware)
 *
 * A value is everything after the first '=', white space (spaces, tabs) around it trimmed. Lines have no
 * length limit; a file has at most VM_DEF_FILE_MAX bytes, UTF-8 without control characters other than
 * tabs (a CR before the newline is allowed), and every line ends in a newline, so a file cut short in
 * the middle of a line is refused instead of read as a shorter value. The agent writes `kernel` last:
 * since it is required, any prefix of a file the agent wrote is refused too.
 *
 * An unknown section or key, a key given twice (other than disk and port), a missing required key or a
 * value that does not parse makes the whole file invalid: nothing partial is returned, and the error
 * reads "FILE:LINE: cause", e.g. `web.vm:7: cpus: "0" is not a number in 1..512`. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/fsops.h"
#include "util/macro.h"
#include "util/portfwd.h"

#define VM_DEF_MAX_DISKS 16
#define VM_DEF_MAX_PORTS 64
#define VM_DEF_SUFFIX ".vm"
#define VM_DEF_FILE_MAX (1024U * 1024U) /* bytes */
#define VM_DEF_PATH_MAX 4095U /* bytes of kernel, initrd and disk paths: PATH_MAX without the NUL */
#define VM_DEF_BACKEND_MAX 32U
#define VM_DEF_CPUS_DEFAULT 1U
#define VM_DEF_MEMORY_MIB_DEFAULT UINT64_C(256)

/* "65535:65535/udp" and the NUL */
#define PORT_FORWARD_STRING_MAX 16

typedef struct VmDef {
        char name[33];
        uint64_t id;
        char backend[33];
        char hypervisor[32]; /* "" = the agent's default kind */
        char *kernel; /* malloc'ed, absolute; NULL: boot the first disk through the firmware */
        char *firmware; /* NULL: the hypervisor's default (QEMU: SeaBIOS) */
        char *initrd; /* NULL: none */
        char *cmdline; /* NULL: none */
        unsigned cpus;
        uint64_t memory_mib;
        char *disks[VM_DEF_MAX_DISKS]; /* malloc'ed; slots from n_disks on NULL (vm_def_free() frees all) */
        size_t n_disks;
        PortForward ports[VM_DEF_MAX_PORTS];
        size_t n_ports;
} VmDef;

/* An empty definition with the defaults: cpus 1, memory 256 MiB. NULL when out of memory. */
VmDef *vm_def_new(void);
/* NULL is fine; returns NULL. */
VmDef *vm_def_free(VmDef *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(VmDef *, vm_def_free);

/* A deep copy. -ENOMEM. */
int vm_def_copy(const VmDef *d, VmDef **ret);
/* Whether a and b hold the same definition (strings compared by content, NULL only equal to NULL). */
bool vm_def_equal(const VmDef *a, const VmDef *b);

/* The parser's rules applied to a definition built in memory, plus what a .vm file cannot express (a
 * path ending in white space, an empty cmdline instead of NULL). 0, or -EINVAL with a sentence naming
 * the VM and the field in *e (e may be NULL): `VM web: kernel "rel/path" is not an absolute path`. */
int vm_def_validate(const VmDef *d, Error *e);

/* Parses size bytes of text (not necessarily NUL-terminated); file_name stands for the file in messages.
 * 0 and a new definition in *ret; -EINVAL with "FILE:LINE: cause" in *e (e may be NULL); -EFBIG for more
 * than VM_DEF_FILE_MAX bytes; -ENOMEM. */
int vm_def_parse(const char *file_name, const char *text, size_t size, VmDef **ret, Error *e);

/* The file text of a valid definition (-EINVAL otherwise), starting with a comment that says
 * chvm-agentd wrote it. vm_def_parse() of it gives back an equal definition, and formatting that gives
 * the same bytes again. */
int vm_def_format(const VmDef *d, char **ret_text);

/* Writes NAME.vm in dir_fd atomically: NAME.vm.tmp (a stale one is removed first, then created with
 * O_EXCL, mode 0600), write, fdatasync, renameat, fsync of dir_fd. ops NULL: fs_ops_default. -EINVAL for
 * an invalid definition. On a failure up to the rename the old NAME.vm (if any) is unchanged and no tmp
 * file is left; a failed fsync of the directory is returned too, with the new file already in place. */
int vm_def_save(int dir_fd, const VmDef *d, const FsOps *ops);

/* vm_def_save() of a text already formatted, for NAME. With VM_DEF_SAVE_NO_SYNC neither the file nor the
 * folder is synced: for a definition whose text the journal carries (JournalRecord.definition), whose
 * fdatasync makes it durable instead; after a crash vm_def_restore() writes the file again. */
#define VM_DEF_SAVE_NO_SYNC 1U
int vm_def_save_text(int dir_fd, const char *name, const char *text, unsigned flags, const FsOps *ops);

/* At a start, for a VM whose journal record carries its definition text: writes NAME.vm again, synced, if
 * it is missing or is what an unsynced write leaves after a power loss (empty, a part of the text, NUL
 * bytes), and returns 1. A file that is the text, or differs otherwise (an administrator's edit, which
 * takes effect at a restart), or is not a regular file, is left as it is: 0. -errno from reading or
 * writing. */
int vm_def_restore(int dir_fd, const char *name, const char *text, const FsOps *ops);

/* Reads and parses NAME.vm from dir_fd; its name key must be NAME. -ENOENT when there is no such file;
 * -EINVAL for an invalid NAME, a file that does not parse or is not a regular file; -EFBIG; -errno from
 * reading. *e (e may be NULL) gets "NAME.vm:LINE: cause" or "NAME.vm: cause" on every failure. */
int vm_def_load(int dir_fd, const char *name, VmDef **ret, Error *e);

/* Removes NAME.vm (and a stale NAME.vm.tmp) and fsyncs dir_fd. -ENOENT when there is no NAME.vm; -EINVAL
 * for an invalid NAME. ops NULL: fs_ops_default. */
int vm_def_remove(int dir_fd, const char *name, const FsOps *ops);

/* Called for each NAME.vm. def is the callee's to free; NULL when the file could not be loaded, and then
 * error says why ("web.vm:7: ..."); error is NULL when def is not. */
typedef int (*VmDefCallback)(const char *name, VmDef *def, const char *error, void *userdata);

/* Calls cb for every NAME.vm in dir_fd, sorted by name. A file that does not load (does not parse, is not
 * a regular file, cannot be read, has an invalid NAME) is passed with def NULL and never stops the loop;
 * a negative return from cb stops it, and vm_def_load_all() returns that. Other names (other suffixes,
 * NAME.vm.tmp, hidden files) are ignored. 0, or -errno when the directory cannot be read, or -ENOMEM. */
int vm_def_load_all(int dir_fd, VmDefCallback cb, void *userdata);

/* Parses "HOSTPORT:GUESTPORT[/tcp|/udp]" (tcp by default; ports 1..65535), as in a .vm file's port key and
 * in chvmctl -p. -EINVAL with a message naming the input in *e (e may be NULL):
 * `port "8080:0": guest port 0 is not in 1..65535`. */
int port_forward_parse(const char *s, PortForward *ret, Error *e);
/* "8080:80/tcp": what port_forward_parse() reads back. */
void port_forward_format(const PortForward *p, char ret[PORT_FORWARD_STRING_MAX]);
