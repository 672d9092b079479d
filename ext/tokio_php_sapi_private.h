/*
 * What the SAPI (tokio_php_sapi.c) and its worker mode (tokio_php_worker.c) share. Internal to
 * the C shim: bindgen reads only tokio_php_sapi.h.
 */
#ifndef TOKIO_PHP_SAPI_PRIVATE_H
#define TOKIO_PHP_SAPI_PRIVATE_H

#include "tokio_php_sapi.h"

#include "php.h"

/* The host's callbacks, set once at startup. */
extern tp_host_callbacks tp_host;

/* The request running on this worker thread (see tokio_php_sapi.c). */
extern TSRM_TLS const tp_request *tp_current_request;
/* tokio_finish_request() was called in the current request. */
extern TSRM_TLS bool tp_current_finished;

/* Calls into the host. With a NULL ctx (a request without a client) output goes nowhere,
 * there is no body and nothing is reported. */
bool tp_host_write(void *ctx, const char *buf, size_t len);
bool tp_host_flush(void *ctx);
void tp_host_send_headers(void *ctx, int status, const tp_str *lines, size_t count);
size_t tp_host_read_body(void *ctx, char *buf, size_t len);
void tp_host_log(void *ctx, const char *msg, size_t len, int syslog_level);
bool tp_host_heartbeat(void *ctx, int64_t seconds);
void tp_host_phase(void *ctx, int phase);
void tp_host_finish(void *ctx);
void tp_host_script_failed(void *ctx, tp_failure failure);

/* One request's SAPI globals: SG(request_info), the server context and the status. */
void tp_fill_request_info(const tp_request *request);
void tp_clear_request_info(void);
/* The request's own php.ini lines, at the per-directory level. */
void tp_apply_request_ini(const tp_request *request);
/* Which request tp_interrupt may stop on this thread (0: none). */
void tp_set_running_request(uint64_t request_seq);
void tp_execute_primary_script(const char *filename);
void tp_report_stack_overflow_as_fatal_error(void);
void tp_log_stack_overflow_in_shutdown(const tp_request *request);
/* Request shutdown after `request`'s script ended, and the thread's state reset; returns
 * `outcome`, or TP_OUTCOME_THREAD_UNUSABLE when the shutdown itself bailed out. */
tp_outcome tp_end_request(const tp_request *request, tp_outcome outcome);

/* Worker mode (tokio_php_worker.c). */

/* A worker script is handling a client's request on this thread. */
bool tp_worker_in_request(void);
/* A fatal error is ending the running script (called from the error callback). */
void tp_worker_note_fatal_error(tp_failure failure, zend_string *file, uint32_t line, zend_string *message);
/* tokio_handle_request(callable $handler): bool */
PHP_FUNCTION(tokio_handle_request);

#endif /* TOKIO_PHP_SAPI_PRIVATE_H */
