/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* util/utf8: what sd-bus takes in a string, and the repair of text that is cut short. */

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "util/utf8.h"

static void sanitized(const char *in, const char *want) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", in);
        cr_assert_str_eq(utf8_sanitize(buf), want, "utf8_sanitize(\"%s\")", in);
}

Test(utf8, character_lengths) {
        cr_assert_eq(utf8_char_length("a", 1), 1);
        cr_assert_eq(utf8_char_length("", 1), 0);
        cr_assert_eq(utf8_char_length("\xc3\xa4", 2), 2);
        cr_assert_eq(utf8_char_length("\xc3\xa4", 1), 0, "cut short");
        cr_assert_eq(utf8_char_length("\xe2\x82\xac", 3), 3);
        cr_assert_eq(utf8_char_length("\xf0\x9f\x98\x80", 4), 4);
        cr_assert_eq(utf8_char_length("\xc0\x80", 2), 0, "overlong NUL");
        cr_assert_eq(utf8_char_length("\xe0\x80\xaf", 3), 0, "overlong");
        cr_assert_eq(utf8_char_length("\xed\xa0\x80", 3), 0, "surrogate");
        cr_assert_eq(utf8_char_length("\xef\xbf\xbe", 3), 0, "U+FFFE");
        cr_assert_eq(utf8_char_length("\xef\xb7\x90", 3), 0, "U+FDD0");
        cr_assert_eq(utf8_char_length("\xf4\x90\x80\x80", 4), 0, "above U+10FFFF");
        cr_assert_eq(utf8_char_length("\x80", 1), 0, "continuation byte");
        cr_assert_eq(utf8_char_length("\xff", 1), 0);
}

Test(utf8, sanitize) {
        sanitized("plain", "plain");
        sanitized("t\xc3\xa4p", "t\xc3\xa4p");
        sanitized("cut \xe2\x82", "cut ??");
        sanitized("\xff\xfe", "??");
        sanitized("a\xed\xa0\x80z", "a???z");
        sanitized("\xc3\xa4\xc3", "\xc3\xa4?");
}

/* The rule is sd-bus's: every byte string of up to 2 bytes (and a sample of 3 and 4) is a string sd-bus
 * appends exactly when utf8_sanitize() leaves it alone. */
Test(utf8, same_rule_as_sd_bus) {
        sd_bus *bus = NULL;
        int fds[2];
        /* messages need a bus that is started; nothing is sent */
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        cr_assert_geq(sd_bus_new(&bus), 0);
        cr_assert_geq(sd_bus_set_fd(bus, fds[0], fds[0]), 0);
        cr_assert_geq(sd_bus_start(bus), 0);
        unsigned char s[5];
        for (unsigned long i = 0; i < 256UL * 256 + 256 + 4 * 300000; i++) {
                size_t len;
                if (i < 256)
                        len = 1, s[0] = (unsigned char) i;
                else if (i < 256 + 65536)
                        len = 2, s[0] = (unsigned char) ((i - 256) >> 8), s[1] = (unsigned char) (i - 256);
                else {
                        unsigned long x = (i * 2654435761UL) ^ (i >> 3);
                        len = 3 + (i & 1);
                        s[0] = (unsigned char) (0xe0 + (x & 0x1f));
                        for (size_t k = 1; k < len; k++)
                                s[k] = (unsigned char) (0x80 + ((x >> (5 + 6 * k)) & 0x3f));
                }
                s[len] = '\0';
                if (memchr(s, 0, len))
                        continue;
                char copy[5];
                memcpy(copy, s, len + 1);
                bool ours = strcmp(utf8_sanitize(copy), (const char *) s) == 0;
                sd_bus_message *m = NULL;
                cr_assert_geq(sd_bus_message_new_method_call(bus, &m, "a.b", "/a", "a.b", "C"), 0);
                bool theirs = sd_bus_message_append_basic(m, 's', s) >= 0;
                sd_bus_message_unref(m);
                cr_assert_eq(ours, theirs, "%02x %02x %02x %02x (%zu bytes): ours %d, sd-bus %d", s[0], s[1],
                             s[2], s[3], len, ours, theirs);
        }
        sd_bus_close_unref(bus);
        close(fds[1]);
}
