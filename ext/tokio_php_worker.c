/*
 * Worker mode: one long-running script per worker thread serves many requests.
 *
 * tp_run_worker() runs the worker script as a request of its own, without a client (ctx NULL):
 * the script boots its application once, then loops on tokio_handle_request($handler). Each call
 * takes the next request from the host, turns this thread's PHP state into that request's (SAPI
 * request info, output layer, superglobals, session and filter modules, php.ini, time limit),
 * calls $handler, and turns the state back into the script's own, so nothing of one request
 * reaches the next through PHP's request globals. What the application keeps in its own objects,
 * static properties and global variables is its business (docs/worker-mode.md).
 *
 * Faults end the script, never just the handler: a fatal error, memory_limit or a timeout bails
 * out to php_execute_script(); an uncaught exception is reported as PHP reports it, then bails
 * out too; exit() unwinds the script as it would anywhere. The request under way stays current
 * until the script's request shutdown ran (its shutdown functions and destructors, its output
 * flushed), so its response ends as a classic script's would; the host then starts the script
 * again.
 */
#include "tokio_php_sapi.h"
#include "tokio_php_sapi_private.h"
#include "tokio_php_stack_guard.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "php.h"
#include "php_main.h"
#include "php_output.h"
#include "php_streams.h"
#include "php_variables.h"
#include "SAPI.h"
#include "zend_exceptions.h"
#include "zend_ini.h"

/* The worker script running on this thread. All zero outside tp_run_worker. */
typedef struct worker_state {
    void *host;                 /* the host's handle for next_request / request_done */
    const tp_request *script;   /* the script's own request: current between client requests */
    tp_worker_report *report;
    bool in_request;            /* between next_request and request_done */
    bool told_to_stop;          /* tokio_handle_request() returned false */
    bool end_noted;             /* report->end holds what is ending the script */
    HashTable *ini_before;      /* ini values as the running handler found them */
} worker_state;

ZEND_TLS worker_state worker;

/* The modules whose request state PHP keeps in globals of their own: each request starts and
 * ends them, so a session is written and closed, and filter_input() reads the right request. */
static const char *const PER_REQUEST_MODULES[] = {"session", "filter"};

#define MEMORY_LIMIT_MESSAGE "Allowed memory size of "

bool tp_worker_in_request(void)
{
    return worker.in_request;
}

static void note_end(tp_worker_end end)
{
    if (worker.host && !worker.end_noted) {
        worker.end_noted = true;
        worker.report->end = end;
    }
}

static void note_message(const char *format, ...)
{
    if (!worker.host || worker.report->message[0]) {
        return;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(worker.report->message, sizeof(worker.report->message), format, args);
    va_end(args);
}

void tp_worker_note_fatal_error(tp_failure failure, zend_string *file, uint32_t line, zend_string *message)
{
    if (!worker.host) {
        return;
    }
    bool out_of_memory = ZSTR_LEN(message) >= sizeof(MEMORY_LIMIT_MESSAGE) - 1
        && memcmp(ZSTR_VAL(message), MEMORY_LIMIT_MESSAGE, sizeof(MEMORY_LIMIT_MESSAGE) - 1) == 0;
    note_end(failure == TP_FAILURE_TIMED_OUT ? TP_WORKER_END_TIMED_OUT
             : out_of_memory                 ? TP_WORKER_END_MEMORY_LIMIT
                                             : TP_WORKER_END_FATAL_ERROR);
    note_message("%s in %s on line %" PRIu32, ZSTR_VAL(message), file ? ZSTR_VAL(file) : "Unknown", line);
}

/* ---- Calls into the host ------------------------------------------------------------------- */

static const tp_request *host_next_request(void)
{
    tp_stack_guard_enter_host();
    const tp_request *request = tp_host.next_request(worker.host);
    tp_stack_guard_leave_host();
    return request;
}

static void host_request_done(void)
{
    tp_stack_guard_enter_host();
    tp_host.request_done(worker.host);
    tp_stack_guard_leave_host();
}

/* ---- php.ini: what a handler changes is undone after it ------------------------------------ */

static void release_ini_value(zval *value)
{
    if (Z_TYPE_P(value) == IS_PTR) {
        zend_string_release((zend_string *)Z_PTR_P(value));
    }
}

/* Remembers the value of every directive changed so far (by the script's boot, say), so that
 * restore_ini() can put those back and reset everything else the request changed: its own
 * php.ini lines, ini_set(), set_time_limit(), ignore_user_abort(). */
static void remember_ini(void)
{
    HashTable *modified = EG(modified_ini_directives);
    worker.ini_before = NULL;
    if (!modified || zend_hash_num_elements(modified) == 0) {
        return;
    }
    ALLOC_HASHTABLE(worker.ini_before);
    zend_hash_init(worker.ini_before, zend_hash_num_elements(modified), NULL, release_ini_value, 0);
    zend_string *name;
    zend_ini_entry *entry;
    ZEND_HASH_FOREACH_STR_KEY_PTR(modified, name, entry) {
        zval value;
        if (entry->value) {
            ZVAL_PTR(&value, zend_string_copy(entry->value));
        } else {
            ZVAL_NULL(&value);
        }
        zend_hash_add_new(worker.ini_before, name, &value);
    } ZEND_HASH_FOREACH_END();
}

static void forget_ini(void)
{
    if (worker.ini_before) {
        zend_hash_destroy(worker.ini_before);
        FREE_HASHTABLE(worker.ini_before);
        worker.ini_before = NULL;
    }
}

static void restore_ini(void)
{
    HashTable *modified = EG(modified_ini_directives);
    if (modified && zend_hash_num_elements(modified) > 0) {
        /* Collected first: restoring a directive removes it from the table being walked. */
        uint32_t count = 0;
        zend_ini_entry **reset = safe_emalloc(zend_hash_num_elements(modified), sizeof(*reset), 0);
        zend_string *name;
        zend_ini_entry *entry;
        ZEND_HASH_FOREACH_STR_KEY_PTR(modified, name, entry) {
            zval *before = worker.ini_before ? zend_hash_find(worker.ini_before, name) : NULL;
            if (!before) {
                reset[count++] = entry;
            } else if (Z_TYPE_P(before) == IS_PTR && !(entry->value && zend_string_equals(entry->value, Z_PTR_P(before)))) {
                zend_alter_ini_entry_ex(name, Z_PTR_P(before), PHP_INI_SYSTEM, PHP_INI_STAGE_RUNTIME, 1);
            }
        } ZEND_HASH_FOREACH_END();
        for (uint32_t i = 0; i < count; i++) {
            /* The deactivation stage, as at the end of a request: every level may be restored,
             * and max_execution_time does not start a timer. */
            zend_restore_ini_entry(reset[i]->name, PHP_INI_STAGE_DEACTIVATE);
        }
        efree(reset);
    }
    forget_ini();
}

/* ---- The request state PHP keeps between php_request_startup() and its shutdown ------------- */

static void each_per_request_module(bool start)
{
    for (size_t i = 0; i < sizeof(PER_REQUEST_MODULES) / sizeof(PER_REQUEST_MODULES[0]); i++) {
        zend_module_entry *module = zend_hash_str_find_ptr(&module_registry, PER_REQUEST_MODULES[i], strlen(PER_REQUEST_MODULES[i]));
        if (!module) {
            continue;
        }
        if (start && module->request_startup_func) {
            module->request_startup_func(module->type, module->module_number);
        } else if (!start && module->request_shutdown_func) {
            /* Safe to repeat: both modules' shutdowns free what is there and forget it. */
            module->request_shutdown_func(module->type, module->module_number);
        }
    }
}

/* The output layer and the SAPI's request state for tp_current_request. */
static void sapi_state_start(void)
{
    php_output_activate();
    PG(header_is_being_sent) = 0;
    PG(connection_status) = PHP_CONNECTION_NORMAL;
    sapi_activate();
    SG(sapi_started) = 1;
}

static void sapi_state_end(void)
{
    php_output_end_all();
    php_output_deactivate(); /* sends the headers if no output did */
    /* php://input's copy of the body: PHP frees it only when the whole script's request ends. */
    php_stream *body = SG(request_info).request_body;
    sapi_deactivate();
    /* sapi_deactivate() frees these without forgetting them. */
    SG(request_info).content_type_dup = NULL;
    SG(request_info).current_user = NULL;
    if (body) {
        php_stream_close(body);
    }
}

/* As php_request_startup() starts the request's output. */
static void start_output_buffering(void)
{
    if (PG(expose_php) && !SG(headers_sent)) {
        sapi_add_header(SAPI_PHP_VERSION_HEADER, sizeof(SAPI_PHP_VERSION_HEADER) - 1, 1);
    }
    if (PG(output_handler) && PG(output_handler)[0]) {
        zval handler;
        ZVAL_STRING(&handler, PG(output_handler));
        php_output_start_user(&handler, 0, PHP_OUTPUT_HANDLER_STDFLAGS);
        zval_ptr_dtor(&handler);
    } else if (PG(output_buffering)) {
        php_output_start_user(NULL, PG(output_buffering) > 1 ? PG(output_buffering) : 0, PHP_OUTPUT_HANDLER_STDFLAGS);
    } else if (PG(implicit_flush)) {
        php_output_set_implicit_flush(1);
    }
}

static bool is_request_superglobal(zend_string *name)
{
    return zend_string_equals_literal(name, "_GET") || zend_string_equals_literal(name, "_POST")
        || zend_string_equals_literal(name, "_COOKIE") || zend_string_equals_literal(name, "_FILES")
        || zend_string_equals_literal(name, "_SERVER") || zend_string_equals_literal(name, "_REQUEST");
}

/* Builds the request's $_GET, $_POST (with $_FILES), $_COOKIE, $_SERVER and $_REQUEST, replacing
 * the previous ones, whether the code was compiled before (as a handler was) or not. $_ENV stays:
 * the process environment does not change between requests. */
static void import_superglobals(void)
{
    /* The upload handler adds to $_FILES rather than replacing it. */
    zval *files = &PG(http_globals)[TRACK_VARS_FILES];
    zval_ptr_dtor_nogc(files);
    ZVAL_UNDEF(files);

    zend_auto_global *auto_global;
    ZEND_HASH_FOREACH_PTR(CG(auto_globals), auto_global) {
        if (auto_global->auto_global_callback && is_request_superglobal(auto_global->name)) {
            auto_global->armed = auto_global->auto_global_callback(auto_global->name);
        }
    } ZEND_HASH_FOREACH_END();
}

/* $_SESSION belongs to the request that started the session: gone once the session closed, so
 * that the next request sees none until it starts its own. */
static void drop_session_variables(void)
{
    zend_hash_str_del(&EG(symbol_table), "_SESSION", sizeof("_SESSION") - 1);
}

static void clear_last_error(void)
{
    if (PG(last_error_message)) {
        zend_string_release(PG(last_error_message));
        PG(last_error_message) = NULL;
    }
    if (PG(last_error_file)) {
        zend_string_release(PG(last_error_file));
        PG(last_error_file) = NULL;
    }
    PG(last_error_type) = 0;
    PG(last_error_lineno) = 0;
}

/* ---- One request ---------------------------------------------------------------------------- */

/* Turns this thread's state from the script's own into `request`'s. */
static void begin_request(const tp_request *request)
{
    sapi_state_end(); /* the script's own: output it printed between requests goes nowhere */
    each_per_request_module(false); /* after boot, the modules still run the script's request */

    worker.in_request = true;
    tp_current_request = request;
    tp_current_finished = false;
    tp_fill_request_info(request);
    tp_set_running_request(request->request_seq);

    remember_ini();
    tp_apply_request_ini(request);
    if (request->authorization) {
        php_handle_auth_data(request->authorization);
    }
    sapi_state_start();
    start_output_buffering();
    import_superglobals();
    drop_session_variables(); /* before session.auto_start makes the request's own */
    each_per_request_module(true);
    clear_last_error();
    zend_atomic_bool_store(&EG(timed_out), false);
    zend_set_timeout(EG(timeout_seconds), 0);
    tp_host_phase(request->ctx, TP_PHASE_STARTED);
}

/* Flushes `request`'s response, closes its session, undoes its php.ini changes, hands it back to
 * the host and turns the state back into the script's own. */
static void end_request(const tp_request *request)
{
    tp_host_phase(request->ctx, TP_PHASE_SCRIPT_DONE);
    php_output_end_all();
    each_per_request_module(false); /* writes and closes the session before the response ends */
    drop_session_variables();
    sapi_state_end();
    restore_ini();
    zend_unset_timeout();
    tp_set_running_request(0);

    tp_current_request = worker.script;
    tp_current_finished = false;
    tp_fill_request_info(worker.script);
    worker.in_request = false;
    host_request_done();
    sapi_state_start();
}

static void call_handler(zend_fcall_info *fci, zend_fcall_info_cache *fcc)
{
    zval retval;
    ZVAL_UNDEF(&retval);
    fci->retval = &retval;
    fci->params = NULL;
    fci->param_count = 0;
    fci->named_params = NULL;
    if (zend_call_function(fci, fcc) == SUCCESS) {
        zval_ptr_dtor(&retval);
    }
}

/* The handler let an exception out. exit() ends the script where it is (the request answers
 * 500 unless its status says otherwise, see tp_failure); anything else is reported as PHP
 * reports an uncaught exception (the script's exception handler first, if it set one), and
 * then ends the script as a fatal error would. */
static void end_script_on_exception(const tp_request *request)
{
    zend_object *exception = EG(exception);
    if (zend_is_unwind_exit(exception) || zend_is_graceful_exit(exception)) {
        note_end(TP_WORKER_END_EXIT);
        note_message("exit() in a request handler");
        tp_host_script_failed(request->ctx, TP_FAILURE_EXIT);
        return; /* the exit unwinds the script on its way out */
    }
    note_end(TP_WORKER_END_EXCEPTION);
    if (Z_TYPE(EG(user_exception_handler)) != IS_UNDEF) {
        zend_user_exception_handler();
    }
    if (EG(exception)) {
        zend_exception_error(EG(exception), E_ERROR);
    }
    zend_bailout();
}

PHP_FUNCTION(tokio_handle_request)
{
    zend_fcall_info fci;
    zend_fcall_info_cache fcc;
    ZEND_PARSE_PARAMETERS_START(1, 1)
        Z_PARAM_FUNC(fci, fcc)
    ZEND_PARSE_PARAMETERS_END();

    if (!worker.host) {
        zend_throw_error(NULL, "tokio_handle_request() works only in a worker script (WORKER_SCRIPT)");
        RETURN_THROWS();
    }
    if (worker.in_request) {
        zend_throw_error(NULL, "tokio_handle_request() cannot be called while a request is handled");
        RETURN_THROWS();
    }
    if (worker.told_to_stop) {
        /* A loop that ignores false would keep the pool from ever stopping. */
        zend_bailout();
    }
    worker.report->booted = true;
    /* A fatal error noted so far did not end the script (a zend_try swallowed it). */
    worker.end_noted = false;
    worker.report->message[0] = '\0';

    zend_unset_timeout(); /* no time limit while waiting */
    const tp_request *request = host_next_request();
    if (!request) {
        worker.told_to_stop = true;
        RETURN_FALSE;
    }
    begin_request(request);
    call_handler(&fci, &fcc);
    if (EG(exception)) {
        end_script_on_exception(request);
        return;
    }
    end_request(request);
    RETURN_TRUE;
}

/* ---- The script ----------------------------------------------------------------------------- */

static void complete_report(void)
{
    tp_worker_report *report = worker.report;
    report->in_request = worker.in_request;
    if (!worker.end_noted) {
        report->end = worker.told_to_stop ? TP_WORKER_END_STOPPED : TP_WORKER_END_RETURNED;
    }
}

tp_outcome tp_run_worker(const tp_request *script, void *host, tp_worker_report *report)
{
    /* volatile: assigned between a zend_try's setjmp and a possible longjmp back to it. */
    volatile tp_outcome outcome = TP_OUTCOME_OK;

    memset(report, 0, sizeof(*report));
    worker = (worker_state){.host = host, .script = script, .report = report};
    tp_current_request = script;
    tp_current_finished = false;
    tp_fill_request_info(script);
    tp_stack_guard_arm();

    zend_try {
        if (php_request_startup() == SUCCESS) {
            tp_execute_primary_script(script->script_filename);
            tp_report_stack_overflow_as_fatal_error();
            if (worker.in_request) {
                tp_host_phase(tp_current_request->ctx, TP_PHASE_SCRIPT_DONE);
            }
        } else {
            outcome = TP_OUTCOME_THREAD_UNUSABLE;
        }
    } zend_catch {
        outcome = TP_OUTCOME_THREAD_UNUSABLE;
    } zend_end_try();

    complete_report();
    /* The php.ini values went with the request they belonged to; the reference to them goes now. */
    forget_ini();
    /* The request under way (after a fault) stays current: its shutdown functions, destructors
     * and last output belong to its response. */
    outcome = tp_end_request(tp_current_request, outcome);
    worker = (worker_state){0};
    return outcome;
}
