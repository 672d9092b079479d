/*
 * tokio_php's SAPI: a real sapi_module_struct driven from a pool of ZTS worker threads.
 *
 * PHP parses $_GET/$_POST/$_COOKIE/$_FILES itself from SG(request_info) and the body read through
 * read_post, exactly as under php-fpm. All zend_try/zend_catch live here, so a longjmp never
 * crosses a Rust frame: the host callbacks return before PHP acts on their result.
 */
#include "tokio_php_sapi.h"
#include "tokio_php_sapi_private.h"
#include "tokio_php_stack_guard.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>

#include "php.h"
#include "php_main.h"
#include "php_variables.h"
#include "SAPI.h"
#include "ext/standard/head.h"
#include "ext/standard/info.h"
#include "zend_exceptions.h"
#include "zend_ini.h"
#include "zend_ini_scanner.h"

#if !defined(ZTS)
#error "tokio_php needs a thread-safe (ZTS) PHP build"
#endif
#if defined(ZEND_SIGNALS)
#error "tokio_php needs PHP built with --disable-zend-signals (Zend signals are process-wide and unsafe on worker threads)"
#endif

tp_host_callbacks tp_host;
static char *ini_entries_copy;

/* The request running on this worker thread, NULL between requests. In worker mode, between two
 * requests it is the worker script's own, without a client (ctx NULL). */
TSRM_TLS const tp_request *tp_current_request;
ZEND_TLS zend_long current_worker_id = -1;
ZEND_TLS tp_thread *current_thread;
/* tokio_finish_request() was called in the current request. */
TSRM_TLS bool tp_current_finished;

/* The pool this worker thread serves (each pool's threads know their own). */
ZEND_TLS tp_pool_info current_pool;
/* The error callback PHP had before tp_error_cb wrapped it (php_error_cb, or an extension's). */
static void (*previous_error_cb)(int type, zend_string *error_filename, const uint32_t error_lineno, zend_string *message);

/* Set once at startup, read-only afterwards. */
static struct {
    char *version;
    char *build;
} server_info;

/* Breaks blocking system calls (sleep, reads) of a thread being interrupted. Never SIGRTMIN
 * itself: PHP's per-thread execution timers use it, and a foreign SIGRTMIN makes its handler
 * chain to itself forever. */
#define TP_INTERRUPT_SIGNAL (SIGRTMIN + 3)

struct tp_thread {
    pthread_mutex_t lock;      /* guards everything below */
    pthread_t tid;
    uint64_t running_seq;      /* the request running now, 0 between requests */
    zend_atomic_bool *vm_interrupt;
    zend_atomic_bool *timed_out;
};

static void *current_ctx(void)
{
    return tp_current_request ? tp_current_request->ctx : NULL;
}

/* ---- Calls into the host ------------------------------------------------------------------
 * Every call into Rust goes through these, so the stack guard knows when Rust runs on this
 * thread: it must never longjmp over Rust frames. A NULL `ctx` is a request without a client (a
 * worker script's own, see tokio_php_worker.c): its output goes nowhere and it has no body. */

bool tp_host_write(void *ctx, const char *buf, size_t len)
{
    if (!ctx) {
        return true;
    }
    tp_stack_guard_enter_host();
    bool delivered = tp_host.write(ctx, buf, len);
    tp_stack_guard_leave_host();
    return delivered;
}

bool tp_host_flush(void *ctx)
{
    if (!ctx) {
        return true;
    }
    tp_stack_guard_enter_host();
    bool delivered = tp_host.flush(ctx);
    tp_stack_guard_leave_host();
    return delivered;
}

void tp_host_send_headers(void *ctx, int status, const tp_str *lines, size_t count)
{
    if (!ctx) {
        return;
    }
    tp_stack_guard_enter_host();
    tp_host.send_headers(ctx, status, lines, count);
    tp_stack_guard_leave_host();
}

size_t tp_host_read_body(void *ctx, char *buf, size_t len)
{
    if (!ctx) {
        return 0;
    }
    tp_stack_guard_enter_host();
    size_t read = tp_host.read_body(ctx, buf, len);
    tp_stack_guard_leave_host();
    return read;
}

void tp_host_log(void *ctx, const char *msg, size_t len, int syslog_level)
{
    tp_stack_guard_enter_host();
    tp_host.log(ctx, msg, len, syslog_level);
    tp_stack_guard_leave_host();
}

bool tp_host_heartbeat(void *ctx, int64_t seconds)
{
    if (!ctx) {
        return false;
    }
    tp_stack_guard_enter_host();
    bool extended = tp_host.heartbeat(ctx, seconds);
    tp_stack_guard_leave_host();
    return extended;
}

void tp_host_phase(void *ctx, int phase)
{
    if (!ctx) {
        return;
    }
    tp_stack_guard_enter_host();
    tp_host.phase(ctx, phase);
    tp_stack_guard_leave_host();
}

void tp_host_finish(void *ctx)
{
    if (!ctx) {
        return;
    }
    tp_stack_guard_enter_host();
    tp_host.finish(ctx);
    tp_stack_guard_leave_host();
}

/* Not wrapped for the stack guard: called from PHP's error callback and request shutdown, never
 * with Rust frames below PHP's bailout point on this stack that a longjmp could cross. */
void tp_host_script_failed(void *ctx, tp_failure failure)
{
    if (ctx) {
        tp_host.script_failed(ctx, failure);
    }
}

/* ---- PHP functions registered by the binary ---------------------------------------------- */

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_worker_id, 0, 0, IS_LONG, 0)
ZEND_END_ARG_INFO()

/* tokio_worker_id(): the index (0..N-1) of the worker thread running this request. */
PHP_FUNCTION(tokio_worker_id)
{
    ZEND_PARSE_PARAMETERS_NONE();
    RETURN_LONG(current_worker_id);
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_request_heartbeat, 0, 0, _IS_BOOL, 0)
    ZEND_ARG_TYPE_INFO_WITH_DEFAULT_VALUE(0, time, IS_LONG, 0, "10")
ZEND_END_ARG_INFO()

/* tokio_request_heartbeat(int $time = 10): bool — moves the request's deadline to $time seconds
 * from now (bounded by REQUEST_TIMEOUT) and restarts PHP's own execution timer with it. */
PHP_FUNCTION(tokio_request_heartbeat)
{
    zend_long seconds = 10;
    ZEND_PARSE_PARAMETERS_START(0, 1)
        Z_PARAM_OPTIONAL
        Z_PARAM_LONG(seconds)
    ZEND_PARSE_PARAMETERS_END();

    if (!tp_current_request || seconds <= 0 || !tp_host_heartbeat(tp_current_request->ctx, seconds)) {
        RETURN_FALSE;
    }
    if (EG(timeout_seconds) > 0) {
        zend_set_timeout(MAX(EG(timeout_seconds), seconds), 0);
    }
    RETURN_TRUE;
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_request_id, 0, 0, IS_STRING, 0)
ZEND_END_ARG_INFO()

/* tokio_request_id(): the request's id, as in its X-Request-ID response header and log lines. */
PHP_FUNCTION(tokio_request_id)
{
    ZEND_PARSE_PARAMETERS_NONE();
    RETURN_STRING(tp_current_request && tp_current_request->request_id ? tp_current_request->request_id : "");
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_server_info, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()

/* tokio_server_info(): what is running this script. */
PHP_FUNCTION(tokio_server_info)
{
    ZEND_PARSE_PARAMETERS_NONE();
    array_init(return_value);
    add_assoc_string(return_value, "server", "tokio_php");
    add_assoc_string(return_value, "version", server_info.version ? server_info.version : "");
    add_assoc_string(return_value, "sapi", (char *)sapi_module.name);
    add_assoc_bool(return_value, "zts", true);
    add_assoc_long(return_value, "workers", (zend_long)current_pool.workers);
    add_assoc_long(return_value, "queue_capacity", (zend_long)current_pool.queue_capacity);
    add_assoc_string(return_value, "php_version", PHP_VERSION);
    add_assoc_string(return_value, "build", server_info.build ? server_info.build : "");
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_finish_request, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()

/* tokio_finish_request() / fastcgi_finish_request(): send the output and headers so far and
 * complete the response now; the script keeps running, its later output is discarded. Like
 * php-fpm, a second call returns false. */
PHP_FUNCTION(tokio_finish_request)
{
    ZEND_PARSE_PARAMETERS_NONE();
    if (!tp_current_request || tp_current_finished) {
        RETURN_FALSE;
    }
    php_output_end_all();
    php_header();
    tp_current_finished = true;
    tp_host_finish(tp_current_request->ctx);
    RETURN_TRUE;
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_tokio_handle_request, 0, 1, _IS_BOOL, 0)
    ZEND_ARG_TYPE_INFO(0, handler, IS_CALLABLE, 0)
ZEND_END_ARG_INFO()

/* Replaces opcache_reset(): in one multi-threaded process a reset frees cached scripts other
 * threads are running (OPcache's restart guard only sees other processes), corrupting memory. */
PHP_FUNCTION(tp_opcache_reset_disabled)
{
    ZEND_PARSE_PARAMETERS_NONE();
    php_error_docref(NULL, E_WARNING,
        "opcache_reset() is disabled under tokio_php: it is unsafe in a multi-threaded process; restart the server to clear the cache");
    RETURN_FALSE;
}

static const zend_function_entry tokio_php_functions[] = {
    PHP_FE(tokio_worker_id, arginfo_tokio_worker_id)
    PHP_FE(tokio_request_heartbeat, arginfo_tokio_request_heartbeat)
    PHP_FE(tokio_request_id, arginfo_tokio_request_id)
    PHP_FE(tokio_server_info, arginfo_tokio_server_info)
    PHP_FE(tokio_finish_request, arginfo_tokio_finish_request)
    PHP_FALIAS(fastcgi_finish_request, tokio_finish_request, arginfo_tokio_finish_request)
    PHP_FE(tokio_handle_request, arginfo_tokio_handle_request)
    PHP_FE_END
};

static PHP_MINFO_FUNCTION(tokio_php)
{
    php_info_print_table_start();
    php_info_print_table_row(2, "tokio_php SAPI", "enabled");
    php_info_print_table_end();
}

/* Under ZTS the main thread's executor globals come from malloc() and zend_startup() leaves
 * EG(function_table) and EG(class_table) unset until the first request's init_executor().
 * OPcache reads them in the parent process after preloading (preload_load(), when running as
 * root it forks the preloading child): with a heap that is not all zeros there, it dereferences
 * garbage. Clear them so it sees "no tables yet", as it does in php-cli by luck. */
static PHP_MINIT_FUNCTION(tokio_php)
{
    (void)type;
    (void)module_number;
    EG(function_table) = NULL;
    EG(class_table) = NULL;
    return SUCCESS;
}

static zend_module_entry tokio_php_module = {
    STANDARD_MODULE_HEADER,
    "tokio_php",
    tokio_php_functions,
    PHP_MINIT(tokio_php),
    NULL, /* MSHUTDOWN */
    NULL, /* RINIT */
    NULL, /* RSHUTDOWN */
    PHP_MINFO(tokio_php),
    "0.1.0",
    STANDARD_MODULE_PROPERTIES
};

/* ---- SAPI callbacks ------------------------------------------------------------------------ */

static int tp_sapi_startup(sapi_module_struct *module)
{
    return php_module_startup(module, &tokio_php_module);
}

/* One directive of a request's php.ini text, set for this request at the per-directory level
 * (as .user.ini or php_value would): scripts can still ini_set() it, system-only directives
 * are refused. */
static void request_ini_entry(zval *name, zval *value, zval *unused, int callback_type, void *arg)
{
    (void)unused;
    (void)arg;
    if (callback_type != ZEND_INI_PARSER_ENTRY || !name || !value || Z_TYPE_P(value) != IS_STRING) {
        return;
    }
    if (zend_alter_ini_entry_chars(Z_STR_P(name), Z_STRVAL_P(value), Z_STRLEN_P(value), PHP_INI_PERDIR, PHP_INI_STAGE_ACTIVATE) == FAILURE) {
        char message[512];
        snprintf(message, sizeof(message), "tokio_php: cannot set ini directive %s for this request", Z_STRVAL_P(name));
        tp_host_log(current_ctx(), message, strlen(message), 4 /* LOG_WARNING */);
    }
}

/* Per-request php.ini text, applied as php-fpm applies PHP_VALUE: parsed by PHP's ini parser
 * (constants and expressions work) before request startup, so it also governs how the request
 * itself is read (post_max_size, enable_post_data_reading, variables_order, ...). The engine
 * records every change and restores it when the request ends. */
void tp_apply_request_ini(const tp_request *request)
{
    if (request->ini && request->ini[0]) {
        zend_parse_ini_string(request->ini, 1, ZEND_INI_SCANNER_NORMAL, request_ini_entry, NULL);
    }
}

/* sapi_activate() resets proto_num to 1000 before calling this; set the real protocol here so
 * PHP applies HTTP/1.1 semantics (e.g. 303 for a Location after POST). */
static int tp_sapi_activate(void)
{
    if (tp_current_request) {
        SG(request_info).proto_num = tp_current_request->proto_num;
    }
    return SUCCESS;
}

static int tp_sapi_deactivate(void)
{
    return SUCCESS;
}

/* The client stopped receiving the response. A script ends there unless it ignores user aborts,
 * as under php-fpm; a worker's request handler runs on with its output discarded
 * (connection_aborted() tells it), since ending it would end the whole worker script. */
static void client_gone(void)
{
    if (tp_worker_in_request()) {
        PG(connection_status) |= PHP_CONNECTION_ABORTED;
        return;
    }
    php_handle_aborted_connection();
}

static size_t tp_sapi_ub_write(const char *str, size_t len)
{
    if (!tp_current_request || tp_current_finished) {
        return len; /* after tokio_finish_request() output goes nowhere, as under php-fpm */
    }
    if (!tp_host_write(tp_current_request->ctx, str, len)) {
        /* Marks the connection aborted and, unless ignore_user_abort, ends the script. */
        client_gone();
    }
    return len;
}

static void tp_sapi_flush(void *server_context)
{
    (void)server_context;
    if (!tp_current_request || tp_current_finished) {
        return;
    }
    /* flush() with no output yet must still put the status and headers on the wire. */
    if (!SG(headers_sent)) {
        sapi_send_headers();
    }
    if (!tp_host_flush(tp_current_request->ctx)) {
        client_gone();
    }
}

static int tp_sapi_send_headers(sapi_headers_struct *sapi_headers)
{
    if (!tp_current_request || tp_current_finished || SG(request_info).no_headers == 1) {
        return SAPI_HEADER_SENT_SUCCESSFULLY;
    }
    /* http_response_code is the source of truth: http_status_line can be stale after
     * http_response_code() and is unsafe to parse for short lines such as header("HTTP/"). */
    int status = sapi_headers->http_response_code ? sapi_headers->http_response_code : 200;
    size_t count = zend_llist_count(&sapi_headers->headers);
    tp_str *lines = count ? emalloc(count * sizeof(tp_str)) : NULL;
    size_t n = 0;
    zend_llist_position pos;
    for (sapi_header_struct *h = zend_llist_get_first_ex(&sapi_headers->headers, &pos); h;
         h = zend_llist_get_next_ex(&sapi_headers->headers, &pos)) {
        lines[n].ptr = h->header;
        lines[n].len = h->header_len;
        n++;
    }
    tp_host_send_headers(tp_current_request->ctx, status, lines, n);
    if (lines) {
        efree(lines);
    }
    return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t tp_sapi_read_post(char *buffer, size_t count)
{
    if (!tp_current_request || count == 0) {
        return 0;
    }
    return tp_host_read_body(tp_current_request->ctx, buffer, count);
}

static char *tp_sapi_read_cookies(void)
{
    return tp_current_request ? tp_current_request->cookie : NULL;
}

static void tp_sapi_register_variables(zval *track_vars_array)
{
    if (!tp_current_request) {
        return;
    }
    /* nginx's $remote_user: the Basic-auth user PHP parsed from Authorization, else empty. */
    const char *remote_user = SG(request_info).auth_user ? SG(request_info).auth_user : "";
    char *user = (char *)remote_user;
    size_t user_len = strlen(remote_user);
    if (sapi_module.input_filter(PARSE_SERVER, "REMOTE_USER", &user, user_len, &user_len)) {
        php_register_variable_safe("REMOTE_USER", user, user_len, track_vars_array);
    }
    for (size_t i = 0; i < tp_current_request->server_vars_len; i++) {
        const tp_server_var *var = &tp_current_request->server_vars[i];
        char *value = (char *)var->value.ptr;
        size_t new_len = var->value.len;
        /* Through input_filter as php-fpm does, so ext/filter sees $_SERVER
         * (filter_input(INPUT_SERVER, ...)); it registers the value itself and returns 0. */
        if (sapi_module.input_filter(PARSE_SERVER, (char *)var->key.ptr, &value, var->value.len, &new_len)) {
            php_register_variable_safe((char *)var->key.ptr, value, new_len, track_vars_array);
        }
    }
}

static void tp_sapi_log_message(const char *message, int syslog_level)
{
    tp_host_log(current_ctx(), message, strlen(message), syslog_level);
}

static zend_result tp_sapi_get_request_time(double *request_time)
{
    if (!tp_current_request) {
        return FAILURE;
    }
    *request_time = tp_current_request->request_time;
    return SUCCESS;
}

#define TP_INI_DEFAULT(name, value)                                              \
    do {                                                                         \
        zval tmp;                                                                \
        ZVAL_NEW_STR(&tmp, zend_string_init(value, sizeof(value) - 1, 1));       \
        zend_hash_str_update(configuration_hash, name, sizeof(name) - 1, &tmp);  \
    } while (0)

/* Production defaults for what PHP's compiled-in values get wrong for a server; php.ini and
 * ini_entries still override them. */
static void tp_sapi_ini_defaults(HashTable *configuration_hash)
{
    TP_INI_DEFAULT("display_errors", "0");
    TP_INI_DEFAULT("display_startup_errors", "0");
    TP_INI_DEFAULT("html_errors", "0");
    TP_INI_DEFAULT("log_errors", "1");
    TP_INI_DEFAULT("expose_php", "0");
    TP_INI_DEFAULT("register_argc_argv", "0");
    TP_INI_DEFAULT("variables_order", "GPCS");
    TP_INI_DEFAULT("request_order", "GP");
    TP_INI_DEFAULT("output_buffering", "0");
    /* One process serves every request: a script must not signal it, change its user, session or
     * limits, or fork it (docs/security.md). php.ini's disable_functions replaces this list. */
    TP_INI_DEFAULT("disable_functions",
                   "posix_kill,posix_setuid,posix_setgid,posix_seteuid,posix_setegid,posix_setsid,"
                   "posix_setpgid,posix_setrlimit,posix_initgroups,proc_nice,pcntl_fork,pcntl_exec,"
                   "pcntl_signal,pcntl_alarm,pcntl_async_signals,pcntl_sigprocmask,pcntl_unshare,"
                   "pcntl_setpriority");
    TP_INI_DEFAULT("implicit_flush", "0");
    /* OPcache's tracing JIT (docs/benchmarks.md: bench/www/cpu.php runs 2.7x faster, WordPress's
     * front page about 6 %). opcache.jit=off (PHP_INI_OPCACHE__JIT=off) turns it off. */
    TP_INI_DEFAULT("opcache.jit", "tracing");
    TP_INI_DEFAULT("opcache.jit_buffer_size", "64M");
#ifdef ZEND_CHECK_STACK_LIMIT
    /* PHP 8.3+'s own recursion limit must trigger before the stack guard's zone is reached. */
    TP_INI_DEFAULT("zend.reserved_stack_size", TP_STACK_GUARD_PHP_RESERVED_STACK_SIZE);
#endif
}

/* The name "cli-server" is on OPcache's SAPI allow-list (see docs/php.md for its side effects).
 * Designated initializers, not positional ones: the struct gains fields across PHP versions. */
static sapi_module_struct tp_sapi_module = {
    .name = "cli-server",
    .pretty_name = "tokio_php",
    .startup = tp_sapi_startup,
    .shutdown = php_module_shutdown_wrapper,
    .activate = tp_sapi_activate,
    .deactivate = tp_sapi_deactivate,
    .ub_write = tp_sapi_ub_write,
    .flush = tp_sapi_flush,
    .sapi_error = php_error,
    .send_headers = tp_sapi_send_headers,
    .read_post = tp_sapi_read_post,
    .read_cookies = tp_sapi_read_cookies,
    .register_server_variables = tp_sapi_register_variables,
    .log_message = tp_sapi_log_message,
    .get_request_time = tp_sapi_get_request_time,
};

/* ---- Process lifecycle --------------------------------------------------------------------- */

/* zend_timeout()'s message: max_execution_time, or tp_interrupt (which raises the same flag). */
#define TP_TIMEOUT_MESSAGE "Maximum execution time of "

static tp_failure failure_of(zend_string *message)
{
    bool timed_out = ZSTR_LEN(message) >= sizeof(TP_TIMEOUT_MESSAGE) - 1
        && memcmp(ZSTR_VAL(message), TP_TIMEOUT_MESSAGE, sizeof(TP_TIMEOUT_MESSAGE) - 1) == 0;
    return timed_out ? TP_FAILURE_TIMED_OUT : TP_FAILURE_FATAL_ERROR;
}

/* Sees every error PHP reports that no user error handler took, before PHP acts on it: each of
 * E_FATAL_ERRORS ends the script (php_error_cb bails out, or an uncaught exception unwinds), so
 * the host learns that a response already under way will not be completed, and why. */
static void tp_error_cb(int type, zend_string *error_filename, const uint32_t error_lineno, zend_string *message)
{
    if (tp_current_request && (type & E_FATAL_ERRORS)) {
        tp_failure failure = failure_of(message);
        tp_worker_note_fatal_error(failure, error_filename, error_lineno, message);
        tp_host_script_failed(tp_current_request->ctx, failure);
    }
    previous_error_cb(type, error_filename, error_lineno, message);
}

static void tp_interrupt_signal_handler(int signo)
{
    (void)signo; /* only here to make blocking calls return EINTR */
}

static int install_interrupt_signal(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = tp_interrupt_signal_handler;
    action.sa_flags = SA_ONSTACK; /* no SA_RESTART: interrupted sleeps must return */
    sigemptyset(&action.sa_mask);
    return sigaction(TP_INTERRUPT_SIGNAL, &action, NULL);
}

/* Swaps opcache_reset()'s handler in this thread's function table. Under ZTS every thread gets
 * its own copy of the internal functions (function_copy_ctor), so each worker does this for
 * itself right after allocating its globals. */
static void disable_opcache_reset(void)
{
    zend_function *reset = zend_hash_str_find_ptr(CG(function_table), "opcache_reset", sizeof("opcache_reset") - 1);
    if (reset && reset->type == ZEND_INTERNAL_FUNCTION) {
        reset->internal_function.handler = ZEND_FN(tp_opcache_reset_disabled);
    }
}

int tp_startup(const tp_startup_options *options)
{
    tp_host = options->callbacks;
    if (install_interrupt_signal() != 0) {
        return -1;
    }

#if PHP_VERSION_ID >= 80300
    php_tsrm_startup_ex(options->thread_hint > 0 ? options->thread_hint : 1);
#else
    (void)options->thread_hint;
    php_tsrm_startup();
#endif

    sapi_startup(&tp_sapi_module);

    /* sapi_startup() clears ini_entries and php_module_startup() copies the struct again, so these
     * are set here, between the two. */
    server_info.version = strdup(options->server_version ? options->server_version : "");
    server_info.build = strdup(options->server_build ? options->server_build : "");
    tp_sapi_module.ini_defaults = tp_sapi_ini_defaults;
    tp_sapi_module.php_ini_ignore = options->php_ini_ignore ? 1 : 0;
    tp_sapi_module.php_ini_path_override = options->php_ini_path ? strdup(options->php_ini_path) : NULL;
    if (options->ini_entries) {
        ini_entries_copy = strdup(options->ini_entries);
        tp_sapi_module.ini_entries = ini_entries_copy;
    }

    if (tp_sapi_module.startup(&tp_sapi_module) == FAILURE) {
        return -1;
    }
    /* After module startup, which installs php_error_cb (and extensions theirs). */
    previous_error_cb = zend_error_cb;
    zend_error_cb = tp_error_cb;
    /* After module startup, so no extension installs a SIGSEGV handler over ours. */
    if (!tp_stack_guard_install()) {
        return -1;
    }
    return 0;
}

void tp_shutdown(void)
{
    tp_stack_guard_uninstall();
    if (tp_sapi_module.shutdown) {
        tp_sapi_module.shutdown(&tp_sapi_module);
    }
    sapi_shutdown();
    tsrm_shutdown();
    free(ini_entries_copy);
    ini_entries_copy = NULL;
    free(tp_sapi_module.php_ini_path_override);
    tp_sapi_module.php_ini_path_override = NULL;
}

tp_thread *tp_thread_start(int worker_id, tp_pool_info pool)
{
    /* Allocates this thread's executor, compiler, SAPI and extension globals. */
    (void)ts_resource(0);
    current_worker_id = worker_id;
    current_pool = pool;
    disable_opcache_reset();
    tp_stack_guard_thread_start();

    tp_thread *thread = calloc(1, sizeof(*thread));
    if (!thread) {
        return NULL;
    }
    pthread_mutex_init(&thread->lock, NULL);
    thread->tid = pthread_self();
    thread->vm_interrupt = &EG(vm_interrupt);
    thread->timed_out = &EG(timed_out);
    current_thread = thread;

    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, TP_INTERRUPT_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
    return thread;
}

void tp_thread_stop(tp_thread *thread)
{
    if (thread) {
        pthread_mutex_lock(&thread->lock);
        thread->running_seq = 0;
        thread->vm_interrupt = NULL;
        thread->timed_out = NULL;
        pthread_mutex_unlock(&thread->lock);
    }
    current_thread = NULL;
    tp_current_request = NULL;
    tp_stack_guard_thread_stop();
    ts_free_thread();
}

void tp_thread_free(tp_thread *thread)
{
    if (thread) {
        pthread_mutex_destroy(&thread->lock);
        free(thread);
    }
}

bool tp_interrupt(tp_thread *thread, uint64_t request_seq)
{
    bool interrupted = false;
    pthread_mutex_lock(&thread->lock);
    if (request_seq != 0 && thread->running_seq == request_seq && thread->vm_interrupt) {
        /* What PHP's own timer handler does: the VM checks these at its next opcode. */
        zend_atomic_bool_store(thread->timed_out, true);
        zend_atomic_bool_store(thread->vm_interrupt, true);
        pthread_kill(thread->tid, TP_INTERRUPT_SIGNAL);
        interrupted = true;
    }
    pthread_mutex_unlock(&thread->lock);
    return interrupted;
}

void tp_set_running_request(uint64_t request_seq)
{
    if (current_thread) {
        pthread_mutex_lock(&current_thread->lock);
        current_thread->running_seq = request_seq;
        pthread_mutex_unlock(&current_thread->lock);
    }
}

bool tp_stack_overflowed(void)
{
    return tp_stack_guard_tripped();
}

const char *tp_php_version(void)
{
    return PHP_VERSION;
}

bool tp_has_thread_timers(void)
{
#ifdef ZEND_MAX_EXECUTION_TIMERS
    return true;
#else
    return false;
#endif
}

/* ---- One request --------------------------------------------------------------------------- */

void tp_fill_request_info(const tp_request *request)
{
    SG(server_context) = (void *)request; /* must be non-NULL or PHP skips POST and cookies */
    SG(sapi_headers).http_response_code = 200; /* the engine does not reset it between requests */
    SG(request_info).request_method = request->method;
    SG(request_info).request_uri = request->request_uri;
    SG(request_info).query_string = request->query_string;
    SG(request_info).path_translated = request->script_filename;
    SG(request_info).content_type = request->content_type;
    SG(request_info).content_length = request->content_length;
    SG(request_info).proto_num = request->proto_num;
    SG(request_info).auth_user = NULL;
    SG(request_info).auth_password = NULL;
    SG(request_info).auth_digest = NULL;
}

void tp_clear_request_info(void)
{
    SG(server_context) = NULL;
    SG(request_info).request_method = NULL;
    SG(request_info).request_uri = NULL;
    SG(request_info).query_string = NULL;
    SG(request_info).path_translated = NULL;
    SG(request_info).content_type = NULL;
    SG(request_info).cookie_data = NULL;
}

void tp_execute_primary_script(const char *filename)
{
    zend_file_handle file_handle;
    zend_stream_init_filename(&file_handle, filename);
    file_handle.primary_script = 1;
    /* Fatal errors, uncaught exceptions, exit() and memory_limit are all caught in here. */
    php_execute_script(&file_handle);
    zend_destroy_file_handle(&file_handle);
}

/* PHP 8.3's wording for the same event (zend.max_allowed_stack_size), so one search finds both. */
#define STACK_OVERFLOW_MESSAGE "Maximum call stack size of %zu bytes reached. Infinite recursion?"

/* An overflow ended the script: report it the way PHP reports a fatal error (its log line, the
 * fatal-error count, error_get_last() for shutdown functions), now that the stack is shallow. */
void tp_report_stack_overflow_as_fatal_error(void)
{
    tp_stack_overflow overflow;
    if (!tp_stack_guard_take_unreported(&overflow)) {
        return;
    }
    /* The overflow may have cut a log call short, which would leave this flag set and mute us. */
    PG(in_error_log) = 0;
    zend_string *filename = overflow.filename[0]
        ? zend_string_init(overflow.filename, strlen(overflow.filename), 0)
        : NULL;
    zend_try {
        zend_error_at(E_ERROR, filename, overflow.lineno, STACK_OVERFLOW_MESSAGE, overflow.stack_size);
    } zend_end_try();
    if (filename) {
        zend_string_release(filename);
    }
}

/* An overflow during request shutdown (a shutdown function, a destructor, freeing a deeply nested
 * array): PHP's error machinery is gone by now, so the line PHP would have logged goes straight
 * to the host's log. */
void tp_log_stack_overflow_in_shutdown(const tp_request *request)
{
    tp_stack_overflow overflow;
    if (!tp_stack_guard_take_unreported(&overflow)) {
        return;
    }
    char message[sizeof(overflow.filename) + 256];
    if (overflow.filename[0]) {
        snprintf(message, sizeof(message), "PHP Fatal error:  " STACK_OVERFLOW_MESSAGE " in %s on line %u",
            overflow.stack_size, overflow.filename, overflow.lineno);
    } else {
        snprintf(message, sizeof(message), "PHP Fatal error:  " STACK_OVERFLOW_MESSAGE " during the shutdown of %s",
            overflow.stack_size, request->script_filename);
    }
    tp_host_log(request->ctx, message, strlen(message), 3 /* LOG_ERR */);
    /* Counted as the fatal error it is, as tp_error_cb does for those PHP reports. */
    tp_host_script_failed(request->ctx, TP_FAILURE_FATAL_ERROR);
}

tp_outcome tp_end_request(const tp_request *request, tp_outcome outcome)
{
    zend_try {
        php_request_shutdown(NULL);
    } zend_catch {
        outcome = TP_OUTCOME_THREAD_UNUSABLE;
        /* core_globals_dtor asserts these are gone when the thread is freed. */
        PG(last_error_message) = NULL;
        PG(last_error_file) = NULL;
    } zend_end_try();

    tp_stack_guard_disarm();
    tp_log_stack_overflow_in_shutdown(request);

    tp_set_running_request(0);
    tp_clear_request_info();
    tp_current_request = NULL;
    return outcome;
}

tp_outcome tp_execute(const tp_request *request)
{
    /* volatile: assigned between a zend_try's setjmp and a possible longjmp back to it. */
    volatile tp_outcome outcome = TP_OUTCOME_OK;

    tp_current_request = request;
    tp_current_finished = false;
    tp_fill_request_info(request);
    tp_set_running_request(request->request_seq);
    tp_stack_guard_arm();

    zend_try {
        tp_apply_request_ini(request);
        if (request->authorization) {
            /* Allocates, so it may bail out (memory): inside zend_try like everything else. */
            php_handle_auth_data(request->authorization);
        }
        if (php_request_startup() == SUCCESS) {
            tp_host_phase(request->ctx, TP_PHASE_STARTED);
            tp_execute_primary_script(request->script_filename);
            tp_report_stack_overflow_as_fatal_error();
            tp_host_phase(request->ctx, TP_PHASE_SCRIPT_DONE);
        } else {
            /* php-fpm exits the process here; we retire just this thread. */
            outcome = TP_OUTCOME_THREAD_UNUSABLE;
        }
    } zend_catch {
        /* A bailout outside the script itself (request startup). */
        outcome = TP_OUTCOME_THREAD_UNUSABLE;
    } zend_end_try();

    return tp_end_request(request, outcome);
}
