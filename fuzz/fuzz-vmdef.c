/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the VM definition parser (state/vmdef.c).
 *
 * The input is the text of a .vm file. Whatever it holds, the parser must neither crash nor leak, and:
 *   - a refusal returns nothing, and its message names the file and a line ("fuzz.vm:N: ...") or, for
 *     an oversized input, the file;
 *   - an accepted definition validates, formats, parses back equal, and formats again to the same bytes;
 *     its copy is equal too.
 * The input's first line, as a C string, is also fed to port_forward_parse(): an accepted forward must
 * format and parse back to itself. Any violation aborts. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/vmdef.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_port(const uint8_t *data, size_t size) {
        char s[64], formatted[PORT_FORWARD_STRING_MAX];
        Error err;
        PortForward p, back;
        size_t n = 0;

        while (n < size && n < sizeof(s) - 1 && data[n] != '\n' && data[n] != '\0')
                n++;
        memcpy(s, data, n);
        s[n] = '\0';

        error_clear(&err);
        if (port_forward_parse(s, &p, &err) < 0) {
                if (strncmp(error_message(&err), "port ", 5) != 0)
                        abort(); /* a message that names the input */
                return;
        }
        port_forward_format(&p, formatted);
        if (port_forward_parse(formatted, &back, NULL) < 0 || back.proto != p.proto ||
            back.host_port != p.host_port || back.guest_port != p.guest_port)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        VmDef *d = (VmDef *) 0x1, *back = NULL, *copy = NULL;
        Error err;
        char *text = NULL, *again = NULL;
        int r;

        check_port(data, size);

        error_clear(&err);
        r = vm_def_parse("fuzz.vm", (const char *) data, size, &d, &err);
        if (r < 0) {
                if (d != (VmDef *) 0x1)
                        abort(); /* nothing partial */
                if (r == -EINVAL && strncmp(error_message(&err), "fuzz.vm:", 8) == 0 &&
                    error_message(&err)[8] >= '1' && error_message(&err)[8] <= '9')
                        return 0;
                if (r == -EFBIG && strncmp(error_message(&err), "fuzz.vm: ", 9) == 0)
                        return 0;
                if (r == -ENOMEM)
                        return 0;
                abort();
        }

        if (vm_def_validate(d, &err) < 0)
                abort();
        if (vm_def_format(d, &text) < 0)
                abort();
        if (vm_def_parse("fuzz.vm", text, strlen(text), &back, &err) < 0)
                abort();
        if (!vm_def_equal(d, back))
                abort();
        if (vm_def_format(back, &again) < 0 || strcmp(text, again) != 0)
                abort();
        if (vm_def_copy(d, &copy) < 0 || !vm_def_equal(d, copy))
                abort();

        free(again);
        free(text);
        vm_def_free(copy);
        vm_def_free(back);
        vm_def_free(d);
        return 0;
}
