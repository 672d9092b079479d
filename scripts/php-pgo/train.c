/* Runs PHP scripts through libphp as requests, over and over: the training run of a
 * profile-guided (PGO) build of PHP (scripts/build-php.sh).
 *
 *   train ROUNDS script.php...
 *
 * It goes through libphp (the embed SAPI) and not the CLI because the CLI is linked from other
 * object files than libphp.so, and the profile is recorded per object file. It presents itself
 * as "cli-server", as tokio_php does, so OPcache caches the scripts as it does in the server;
 * PHP_INI_SCAN_DIR points it at an ini that loads OPcache from the build tree. */
#include <stdio.h>
#include <stdlib.h>

#include <sapi/embed/php_embed.h>

static int run_script(const char *path)
{
    zend_file_handle file;
    zend_stream_init_filename(&file, path);
    int ok = php_execute_script(&file);
    zend_destroy_file_handle(&file);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ROUNDS script.php...\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[1]);
    int failed = 0;
    php_embed_module.name = "cli-server";
    PHP_EMBED_START_BLOCK(argc, argv)
    for (int round = 0; round < rounds && !failed; round++) {
        for (int i = 2; i < argc; i++) {
            if (!run_script(argv[i])) {
                fprintf(stderr, "train: %s failed\n", argv[i]);
                failed = 1;
                break;
            }
            php_output_discard_all();
            php_request_shutdown(NULL);
            php_request_startup();
        }
    }
    PHP_EMBED_END_BLOCK()
    return failed;
}
