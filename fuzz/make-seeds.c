/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Writes the seed corpus of fuzz-journal into the directory given: valid journals, a torn one, a
 * corrupt one and a snapshot, each behind the harness's mode byte. `make fuzz-seeds` regenerates
 * fuzz/corpus/fuzz-journal/ with it. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/journal.h"
#include "tests/journal-test-util.h"

static void emit(const char *out, const char *name, unsigned mode, const void *img, size_t size) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", out, name);
        FILE *f = fopen(path, "we");
        if (!f || fputc((int) mode, f) == EOF || fwrite(img, 1, size, f) != size || fclose(f) != 0) {
                fprintf(stderr, "cannot write %s\n", path);
                exit(1);
        }
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s OUTPUT-DIR\n", argv[0]);
                return 2;
        }
        char *dir = test_mkdtemp();
        JournalOptions o = { .directory = dir };
        memcpy(o.agent_id, test_agent_id, JOURNAL_ID_SIZE);
        Journal *j;
        JournalReport rep;
        RecordGen g;

        if (journal_open(&o, &j, &rep) < 0) {
                fprintf(stderr, "%s\n", rep.message);
                return 1;
        }
        record_gen_init(&g, 2024);
        for (int i = 0; i < 24; i++) {
                JournalRecord r;
                record_gen_next(&g, &r);
                if (journal_append(j, &r) < 0 || (i % 3 == 2 && journal_sync(j) < 0))
                        return 1;
                record_gen_commit(&g, &r);
        }
        if (journal_sync(j) < 0)
                return 1;

        void *img;
        size_t size;
        if (test_read_file(dir, JOURNAL_FILE, &img, &size) < 0)
                return 1;
        emit(argv[1], "clean", 0, img, size);
        emit(argv[1], "clean-fixcrc-file", 7, img, size);
        emit(argv[1], "torn", 4, img, size - 13);
        uint8_t *bad = malloc(size);
        memcpy(bad, img, size);
        bad[size / 2] ^= 0x40;
        emit(argv[1], "corrupt-middle", 4, bad, size);
        emit(argv[1], "corrupt-middle-fixcrc", 2, bad, size);

        if (journal_compact(j, 0) < 0)
                return 1;
        journal_close(j);
        free(img);
        if (test_read_file(dir, JOURNAL_SNAPSHOT_FILE, &img, &size) < 0)
                return 1;
        emit(argv[1], "snapshot", 0, img, size);

        free(img);
        free(bad);
        record_gen_done(&g);
        test_rm_rf(dir);
        free(dir);
        return 0;
}
