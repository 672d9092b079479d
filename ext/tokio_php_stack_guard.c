/*
 * Recovery from C stack overflows inside PHP; see tokio_php_stack_guard.h for the idea and
 * docs/php.md ("Stack overflow in PHP") for its cost and limits.
 *
 * Everything the fault handler touches is either a thread-local of this file (initial-exec TLS,
 * no allocation on access) or a read of PHP's globals. It leaves in one of three ways: chaining
 * to the previous handler (not an overflow of ours), abort() (an overflow it must not leave by
 * longjmp), or PHP's own zend_bailout(), a siglongjmp.
 */
#include "tokio_php_stack_guard.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "php.h"
#include "zend_fibers.h"
#include "zend_observer.h"

/* Our own inaccessible zone at the bottom of each worker's stack (and each Fiber's), above the
 * one guard page the system (or PHP) put there. PHP has C functions with frames larger than a
 * page (the tracing JIT's zend_jit_trace_hot_root() takes 16 KiB, path functions several
 * MAXPATHLEN buffers): such a frame can step over a single guard page into whatever is mapped
 * below, another thread's stack for instance, without any fault. With this zone, frames up to
 * its size fault where we can see them. */
#define EXTRA_GUARD_SIZE (64 * 1024)
/* The handler runs on this (sigaltstack): the faulting thread's own stack is used up. */
#define ALT_STACK_SIZE (64 * 1024)
/* Stack kept free for the host's (Rust's) code when PHP calls it. Measured in a debug build:
 * logging a line (tracing, JSON) takes 12 KiB, output and headers 4 KiB; this is five times
 * that. At most an eighth of a (Fiber's) stack. */
#define HOST_CALL_RESERVE (64 * 1024)

#define GUARD_TLS static __thread __attribute__((tls_model("initial-exec")))

typedef struct address_range {
    uintptr_t low;
    uintptr_t high;
} address_range;

static bool range_contains(const address_range *range, uintptr_t address)
{
    return address >= range->low && address < range->high;
}

/* A C stack PHP runs on: a worker thread's, or a Fiber's. */
typedef struct guarded_stack {
    address_range usable;     /* above every guard zone */
    address_range guard_zone; /* faults here overflowed this stack */
    size_t size;              /* as configured (what the error message reports) */
} guarded_stack;

/* The head of PHP's private struct _zend_fiber_stack (Zend/zend_fibers.c, the same from PHP 8.2
 * to 8.4): where a Fiber's C stack is. Only ever read; a mismatch would just fail to match. */
typedef struct fiber_stack_head {
    void *pointer;
    size_t size;
} fiber_stack_head;

/* ---- Process-wide state, written once at startup ---------------------------------------- */

static struct sigaction previous_segv;
static struct sigaction previous_bus;
static bool installed;
static size_t page_size;

/* Code a longjmp must never leave: the C library, the allocator and the dynamic linker take
 * locks (malloc's arenas, stdio, the loader's) that would stay held forever. */
#define MAX_FOREIGN_RANGES 8
static address_range foreign_code[MAX_FOREIGN_RANGES];
static size_t foreign_code_count;

/* ---- Per worker thread -------------------------------------------------------------------- */

GUARD_TLS guarded_stack thread_stack;
GUARD_TLS address_range extra_guard; /* our PROT_NONE zone on it, to undo at exit */
GUARD_TLS void *alt_stack;           /* our sigaltstack mapping (with a guard page) */
GUARD_TLS stack_t previous_alt_stack;

GUARD_TLS volatile sig_atomic_t armed;      /* a request runs: overflows may be recovered */
GUARD_TLS volatile sig_atomic_t host_depth; /* > 0 while Rust code runs on this thread */
GUARD_TLS bool tripped;                     /* the current request overflowed */
GUARD_TLS bool unreported;                  /* ... and `last_overflow` is not reported yet */
GUARD_TLS tp_stack_overflow last_overflow;

/* ---- Which stack ------------------------------------------------------------------------------ */

/* How much of a Fiber's stack becomes our guard zone: as for threads, but at most an eighth of a
 * small stack (fiber.stack_size is a user setting). */
static size_t fiber_extra_guard_size(size_t stack_size)
{
    size_t eighth = (stack_size / 8) & ~(page_size - 1);
    return MIN((size_t)EXTRA_GUARD_SIZE, eighth);
}

/* The C stack of the Fiber running now, if PHP code runs inside one. */
static bool current_fiber_stack(guarded_stack *stack)
{
    zend_fiber_context *fiber = EG(current_fiber_context);
    if (!fiber || fiber == EG(main_fiber_context) || !fiber->stack) {
        return false;
    }
    const fiber_stack_head *head = (const fiber_stack_head *)fiber->stack;
    uintptr_t low = (uintptr_t)head->pointer;
    if (!low) {
        return false;
    }
    uintptr_t extra_top = low + fiber_extra_guard_size(head->size);
    stack->usable = (address_range){extra_top, low + head->size};
    stack->guard_zone = (address_range){low - ZEND_FIBER_GUARD_PAGES * page_size, extra_top};
    stack->size = head->size;
    return true;
}

/* If `address` is in the guard zone of this thread's stack or of the running Fiber's, the size of
 * that stack (what overflowed); otherwise 0. */
static size_t overflowed_stack_size(uintptr_t address)
{
    if (range_contains(&thread_stack.guard_zone, address)) {
        return thread_stack.size;
    }
    guarded_stack fiber;
    if (current_fiber_stack(&fiber) && range_contains(&fiber.guard_zone, address)) {
        return fiber.size;
    }
    return 0;
}

/* How much stack is left below the caller, and the size of the stack it runs on. */
static size_t stack_left(size_t *stack_size)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (range_contains(&thread_stack.usable, sp)) {
        *stack_size = thread_stack.size;
        return sp - thread_stack.usable.low;
    }
    guarded_stack fiber;
    if (current_fiber_stack(&fiber) && range_contains(&fiber.usable, sp)) {
        *stack_size = fiber.size;
        return sp - fiber.usable.low;
    }
    return SIZE_MAX; /* a stack we do not know: nothing to measure against */
}

/* ---- Recording an overflow ----------------------------------------------------------------- */

/* Copies where PHP was, as zend_error() would name it. Reads only: safe in the handler. */
static void note_location(tp_stack_overflow *overflow)
{
    zend_string *filename = NULL;
    uint32_t lineno = 0;
    if (zend_is_compiling()) {
        filename = zend_get_compiled_filename();
        lineno = (uint32_t)zend_get_compiled_lineno();
    } else if (zend_is_executing()) {
        filename = zend_get_executed_filename_ex();
        lineno = zend_get_executed_lineno();
    }
    size_t len = filename ? MIN(ZSTR_LEN(filename), sizeof(overflow->filename) - 1) : 0;
    if (len) {
        memcpy(overflow->filename, ZSTR_VAL(filename), len);
    }
    overflow->filename[len] = '\0';
    overflow->lineno = lineno;
}

static void note_overflow(size_t stack_size)
{
    last_overflow.stack_size = stack_size;
    note_location(&last_overflow);
    tripped = true;
    unreported = true;
}

/* ---- The fault handler ----------------------------------------------------------------------- */

static uintptr_t fault_pc(const void *context)
{
    const ucontext_t *uc = context;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0; /* unknown: the foreign-code check cannot run */
#endif
}

static bool in_foreign_code(uintptr_t pc)
{
    for (size_t i = 0; i < foreign_code_count; i++) {
        if (range_contains(&foreign_code[i], pc)) {
            return true;
        }
    }
    return false;
}

/* Why an overflow of a PHP worker's stack cannot be recovered, or NULL if it can. */
static const char *unrecoverable_because(const void *context)
{
    if (!armed) {
        return "no request was running";
    }
    if (host_depth != 0) {
        return "it struck inside the server's own code";
    }
    if (in_foreign_code(fault_pc(context))) {
        return "it struck inside the C library, which may hold a lock";
    }
    if (!EG(bailout)) {
        return "PHP had no bailout point";
    }
    return NULL;
}

static void write_stderr(const char *text)
{
    ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
    (void)ignored;
}

/* Hands a fault that is not ours to whoever handled faults before us (Rust's handler, which
 * reports its own threads' overflows). If nobody did, restores the default action: returning then
 * re-runs the faulting instruction, which ends the process as it would have without us. */
static void chain_to_previous(int signo, siginfo_t *info, void *context)
{
    const struct sigaction *previous = signo == SIGBUS ? &previous_bus : &previous_segv;
    if (previous->sa_handler == SIG_DFL || previous->sa_handler == SIG_IGN) {
        struct sigaction fallback;
        memset(&fallback, 0, sizeof(fallback));
        fallback.sa_handler = SIG_DFL;
        sigemptyset(&fallback.sa_mask);
        sigaction(signo, &fallback, NULL);
    } else if (previous->sa_flags & SA_SIGINFO) {
        previous->sa_sigaction(signo, info, context);
    } else {
        previous->sa_handler(signo);
    }
}

static void on_fault(int signo, siginfo_t *info, void *context)
{
    /* Cheap thread-local tests first: only worker threads have a guard zone. */
    size_t stack_size = thread_stack.size ? overflowed_stack_size((uintptr_t)info->si_addr) : 0;
    if (stack_size == 0) {
        chain_to_previous(signo, info, context);
        return;
    }
    const char *reason = unrecoverable_because(context);
    if (reason) {
        write_stderr("tokio_php: a PHP worker thread overflowed its C stack and cannot recover (");
        write_stderr(reason);
        write_stderr("); aborting\n");
        abort();
    }
    note_overflow(stack_size);
    /* To the innermost zend_try, as a fatal error would. SA_NODEFER left SIGSEGV unblocked, and
     * leaving the alternate stack by longjmp frees it for the next fault. */
    zend_bailout();
}

/* ---- Process setup ---------------------------------------------------------------------------- */

typedef struct foreign_probe {
    uintptr_t addresses[3]; /* a function of each object to avoid */
    uintptr_t loader_base;  /* the dynamic linker's load address */
} foreign_probe;

static int note_foreign_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const foreign_probe *probe = data;
    address_range code = {UINTPTR_MAX, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type == PT_LOAD && (segment->p_flags & PF_X)) {
            uintptr_t start = info->dlpi_addr + segment->p_vaddr;
            code.low = MIN(code.low, start);
            code.high = MAX(code.high, start + segment->p_memsz);
        }
    }
    bool wanted = info->dlpi_addr == probe->loader_base && probe->loader_base != 0;
    for (size_t i = 0; i < sizeof(probe->addresses) / sizeof(probe->addresses[0]); i++) {
        wanted = wanted || range_contains(&code, probe->addresses[i]);
    }
    if (wanted && code.low < code.high && foreign_code_count < MAX_FOREIGN_RANGES) {
        foreign_code[foreign_code_count++] = code;
    }
    return 0;
}

static void find_foreign_code(void)
{
    foreign_probe probe = {
        .addresses = {
            (uintptr_t)dlsym(RTLD_DEFAULT, "malloc"),
            (uintptr_t)dlsym(RTLD_DEFAULT, "pthread_mutex_lock"),
            (uintptr_t)dlsym(RTLD_DEFAULT, "fopen"),
        },
        .loader_base = (uintptr_t)getauxval(AT_BASE),
    };
    foreign_code_count = 0;
    dl_iterate_phdr(note_foreign_object, &probe);
}

/* Observes every new Fiber (PHP's observer API, called once per Fiber, not per call). Its stack
 * is freed whole with munmap(), so the protection needs no undoing. */
static void guard_fiber_stack(zend_fiber_context *fiber)
{
    const fiber_stack_head *head = (const fiber_stack_head *)fiber->stack;
    if (head && head->pointer) {
        mprotect(head->pointer, fiber_extra_guard_size(head->size), PROT_NONE);
    }
}

bool tp_stack_guard_install(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    find_foreign_code();
    zend_observer_fiber_init_register(guard_fiber_stack);

    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_fault;
    /* SA_NODEFER: the longjmp out does not restore the signal mask, so the fault must not be
     * blocked while handling it, or the next overflow on this thread would kill the process. */
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous_segv) != 0) {
        return false;
    }
    if (sigaction(SIGBUS, &action, &previous_bus) != 0) {
        sigaction(SIGSEGV, &previous_segv, NULL);
        return false;
    }
    installed = true;
    return true;
}

void tp_stack_guard_uninstall(void)
{
    if (installed) {
        sigaction(SIGSEGV, &previous_segv, NULL);
        sigaction(SIGBUS, &previous_bus, NULL);
        installed = false;
    }
}

/* ---- Thread setup ------------------------------------------------------------------------------ */

/* Finds this thread's stack and guard (glibc placed its guard page inside the reported stack
 * before 2.27 and below it since, so the zone covers both) and adds our own guard above. */
static void guard_thread_stack(void)
{
    pthread_attr_t attr;
    void *base = NULL;
    size_t size = 0;
    size_t guard = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) {
        return;
    }
    bool known = pthread_attr_getstack(&attr, &base, &size) == 0;
    pthread_attr_getguardsize(&attr, &guard);
    pthread_attr_destroy(&attr);
    if (!known || size < 4 * EXTRA_GUARD_SIZE) {
        return;
    }
    guard = MAX(guard, page_size);
    uintptr_t low = (uintptr_t)base;
    address_range extra = {low + guard, low + guard + EXTRA_GUARD_SIZE};
    if (mprotect((void *)extra.low, EXTRA_GUARD_SIZE, PROT_NONE) == 0) {
        extra_guard = extra;
    }
    thread_stack.usable = (address_range){extra.high, low + size};
    thread_stack.guard_zone = (address_range){low - guard, extra.high};
    thread_stack.size = size;
}

static void unguard_thread_stack(void)
{
    /* glibc reuses the stacks of exited threads: give this one back whole. */
    if (extra_guard.high) {
        mprotect((void *)extra_guard.low, extra_guard.high - extra_guard.low, PROT_READ | PROT_WRITE);
    }
    extra_guard = (address_range){0, 0};
    thread_stack = (guarded_stack){{0, 0}, {0, 0}, 0};
}

/* Our own alternate signal stack, so the handler never depends on how large (or whether) the
 * runtime that spawned the thread made one. */
static void install_alt_stack(void)
{
    size_t length = page_size + ALT_STACK_SIZE;
    void *memory = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (memory == MAP_FAILED) {
        return; /* keep whatever alternate stack the thread has */
    }
    mprotect(memory, page_size, PROT_NONE);
    stack_t ours = {.ss_sp = (char *)memory + page_size, .ss_size = ALT_STACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ours, &previous_alt_stack) != 0) {
        munmap(memory, length);
        return;
    }
    alt_stack = memory;
}

static void remove_alt_stack(void)
{
    if (!alt_stack) {
        return;
    }
    sigaltstack(&previous_alt_stack, NULL);
    munmap(alt_stack, page_size + ALT_STACK_SIZE);
    alt_stack = NULL;
}

void tp_stack_guard_thread_start(void)
{
    if (!installed) {
        return;
    }
    guard_thread_stack();
    install_alt_stack();
}

void tp_stack_guard_thread_stop(void)
{
    armed = 0;
    remove_alt_stack();
    unguard_thread_stack();
}

/* ---- Per request ------------------------------------------------------------------------------- */

void tp_stack_guard_arm(void)
{
    tripped = false;
    unreported = false;
    host_depth = 0;
    armed = 1;
}

void tp_stack_guard_disarm(void)
{
    armed = 0;
}

static bool too_little_stack_for_host(size_t *stack_size)
{
    size_t left = stack_left(stack_size);
    return left < MIN((size_t)HOST_CALL_RESERVE, *stack_size / 8);
}

void tp_stack_guard_enter_host(void)
{
    size_t stack_size = 0;
    if (armed && host_depth == 0 && too_little_stack_for_host(&stack_size) && EG(bailout)) {
        note_overflow(stack_size);
        zend_bailout();
    }
    host_depth++;
}

void tp_stack_guard_leave_host(void)
{
    host_depth--;
}

bool tp_stack_guard_tripped(void)
{
    return tripped;
}

bool tp_stack_guard_take_unreported(tp_stack_overflow *overflow)
{
    if (!unreported) {
        return false;
    }
    unreported = false;
    *overflow = last_overflow;
    return true;
}
