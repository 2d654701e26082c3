/*
 * Runs a libFuzzer target over files without libFuzzer, so that the seed
 * corpus is a regression test in every build: fuzz-TARGET FILE|DIR...
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    gchar *buf;
    gsize len;
    GError *err = NULL;
    if (!g_file_get_contents(path, &buf, &len, &err)) {
        fprintf(stderr, "%s\n", err->message);
        g_error_free(err);
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
    g_free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 0;
    for (int i = 1; i < argc; i++) {
        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            GDir *dir = g_dir_open(argv[i], 0, NULL);
            const char *name;
            while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *path = g_build_filename(argv[i], name, NULL);
                if (run_file(path)) {
                    return 1;
                }
                runs++;
            }
            if (dir) {
                g_dir_close(dir);
            }
        } else {
            if (run_file(argv[i])) {
                return 1;
            }
            runs++;
        }
    }
    printf("%d inputs ran\n", runs);
    return runs ? 0 : 77;
}
