/*
 * Recovery from C stack overflows inside PHP, for tokio_php_sapi.c only (Rust never sees this).
 *
 * PHP 8.2 does not bound its C recursion: array_map() calling itself, __toString() recursion or
 * serialize() of a deeply nested array run a worker thread into the guard page below its stack.
 * The default reaction to that fault is to end the process, and with it every request in flight.
 * This guard turns it into a fatal error of the one request that overflowed: a SIGSEGV handler,
 * running on an alternate signal stack, recognises a fault in the guard zone of a worker that is
 * running PHP and leaves the exhausted stack with a longjmp to PHP's bailout point, exactly where
 * zend_bailout() would have gone. Request shutdown then runs as after any fatal error, and the
 * worker serves the next request (see docs/php.md, "Stack overflow in PHP", for why it is not
 * replaced, and for the one case where it must be).
 */
#ifndef TOKIO_PHP_STACK_GUARD_H
#define TOKIO_PHP_STACK_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* zend.reserved_stack_size for PHP 8.3+, which stops deep recursion itself (a catchable Error)
 * once less than that is left: PHP's own 48 KiB margin plus what the guard takes at the bottom of
 * every stack (a guard page, its 64 KiB zone, 64 KiB kept for calls into the host). Below that,
 * the guard would end such scripts first, with an uncatchable fatal error. */
#define TP_STACK_GUARD_PHP_RESERVED_STACK_SIZE "192K"

/* Where an overflow struck: the PHP code that was running, as PHP would name it in an error. */
typedef struct tp_stack_overflow {
    size_t stack_size;  /* of the stack that overflowed: the worker's, or a Fiber's */
    uint32_t lineno;
    char filename[1024]; /* "" when no PHP code was running (e.g. freeing data at shutdown) */
} tp_stack_overflow;

/* Once per process, after PHP's module startup: installs the SIGSEGV/SIGBUS handler, which hands
 * every fault it does not recover to the handler that was there before (Rust's). */
bool tp_stack_guard_install(void);
/* Once per process, after every worker stopped: puts the previous handlers back. */
void tp_stack_guard_uninstall(void);

/* On each worker thread: learns its stack, widens its guard zone and gives the thread an
 * alternate signal stack; and undoes all of that before the thread exits. */
void tp_stack_guard_thread_start(void);
void tp_stack_guard_thread_stop(void);

/* Around one request on this worker: only between these are overflows recovered. */
void tp_stack_guard_arm(void);
void tp_stack_guard_disarm(void);

/* Around every call into the host (Rust). The handler never longjmps over Rust frames, so an
 * overflow inside Rust could not be recovered; a call that would start with too little stack left
 * ends the request as a stack overflow instead (a bailout from here), before Rust runs. */
void tp_stack_guard_enter_host(void);
void tp_stack_guard_leave_host(void);

/* Whether the current request overflowed its stack at least once. */
bool tp_stack_guard_tripped(void);
/* Hands out the latest overflow not reported yet, if any, and marks it reported. */
bool tp_stack_guard_take_unreported(tp_stack_overflow *overflow);

#endif /* TOKIO_PHP_STACK_GUARD_H */
