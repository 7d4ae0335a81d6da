/*
 * monlight_rb.c: the Ruby extension's hand-written C: calls made without
 * the GVL, the queue that carries engine log lines to Ruby, and the
 * release of clients by the garbage collector. monlight_rb.h explains
 * why each exists.
 *
 * Locks: log_lock guards the log queue and is the only lock here. It is
 * never held while calling the engine or Ruby, so it nests inside any
 * engine lock that may be held when the engine logs.
 */
#include "monlight_rb.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ruby/encoding.h>
#include <ruby/thread.h>

/* ------------------------------------------------------------------ */
/* Calls without the GVL                                              */
/* ------------------------------------------------------------------ */

typedef struct blocking_call {
    monlight_status (*run)(const struct blocking_call *call);
    void *client;
    const monlight_report *report;
    monlight_status status;
} blocking_call;

static void *run_blocking_call(void *data)
{
    blocking_call *call = data;
    call->status = call->run(call);
    return NULL;
}

/*
 * Runs the call with the GVL released. No unblocking function is given:
 * the engine cannot abandon a request half way, and every call here
 * returns within its own time bound, after which Ruby handles whatever
 * interrupt arrived meanwhile.
 */
static monlight_status call_without_gvl(blocking_call *call)
{
    rb_thread_call_without_gvl(run_blocking_call, call, NULL, NULL);
    return call->status;
}

static monlight_status run_send(const blocking_call *call)
{
    return monlight_error_client_send(call->client, call->report);
}

static monlight_status run_enqueue(const blocking_call *call)
{
    return monlight_error_client_enqueue(call->client, call->report, NULL,
                                         NULL);
}

static monlight_status run_error_shutdown(const blocking_call *call)
{
    return monlight_error_client_shutdown(call->client);
}

static monlight_status run_flush(const blocking_call *call)
{
    return monlight_metrics_client_flush(call->client);
}

static monlight_status run_metrics_shutdown(const blocking_call *call)
{
    return monlight_metrics_client_shutdown(call->client);
}

static monlight_status run_shutdown_all(const blocking_call *call)
{
    monlight_shutdown_all();
    return MONLIGHT_OK;
}

monlight_status mlrb_error_client_send(monlight_error_client *client,
                                       const monlight_report *report)
{
    blocking_call call = {run_send, client, report, MONLIGHT_OK};
    return call_without_gvl(&call);
}

monlight_status mlrb_error_client_enqueue(monlight_error_client *client,
                                          const monlight_report *report)
{
    blocking_call call = {run_enqueue, client, report, MONLIGHT_OK};
    return call_without_gvl(&call);
}

monlight_status mlrb_error_client_shutdown(monlight_error_client *client)
{
    blocking_call call = {run_error_shutdown, client, NULL, MONLIGHT_OK};
    return call_without_gvl(&call);
}

monlight_status mlrb_metrics_client_flush(monlight_metrics_client *client)
{
    blocking_call call = {run_flush, client, NULL, MONLIGHT_OK};
    return call_without_gvl(&call);
}

monlight_status mlrb_metrics_client_shutdown(monlight_metrics_client *client)
{
    blocking_call call = {run_metrics_shutdown, client, NULL, MONLIGHT_OK};
    return call_without_gvl(&call);
}

/* Set once the Ruby layer's exit hook has run; read by the GC release. */
static volatile sig_atomic_t process_exiting;

void mlrb_shutdown_all_at_exit(void)
{
    blocking_call call = {run_shutdown_all, NULL, NULL, MONLIGHT_OK};
    process_exiting = 1;
    call_without_gvl(&call);
}

/* ------------------------------------------------------------------ */
/* Log queue                                                          */
/* ------------------------------------------------------------------ */

typedef struct log_line {
    monlight_log_level level;
    char *message; /* malloc'd copy */
} log_line;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_ready; /* signalled when a line is queued */
static log_line log_lines[MLRB_LOG_QUEUE_MAX]; /* a ring, oldest at log_head */
static size_t log_head;
static size_t log_count;
static size_t log_dropped;   /* lines lost to a full queue since the last drain */
static bool log_wake;        /* the waiter was asked to return early */

/* The engine's log callback: runs on any thread, never touches Ruby. */
static void queue_log_line(monlight_log_level level, const char *message,
                           void *user_data)
{
    char *copy = strdup(message);

    pthread_mutex_lock(&log_lock);
    if (!copy || log_count == MLRB_LOG_QUEUE_MAX) {
        /* The oldest lines are kept: they usually explain the later ones. */
        log_dropped++;
        pthread_mutex_unlock(&log_lock);
        free(copy);
        return;
    }
    log_line *line = &log_lines[(log_head + log_count) % MLRB_LOG_QUEUE_MAX];
    line->level = level;
    line->message = copy;
    log_count++;
    pthread_cond_signal(&log_ready);
    pthread_mutex_unlock(&log_lock);
}

monlight_status mlrb_options_use_log_queue(monlight_options *options)
{
    return monlight_options_set_log(options, queue_log_line, NULL);
}

VALUE mlrb_log_drain(void)
{
    log_line taken[MLRB_LOG_QUEUE_MAX];
    size_t count, dropped;

    /* Take the lines under the lock; build Ruby objects after it, since
     * allocating may run the GC. */
    pthread_mutex_lock(&log_lock);
    count = log_count;
    for (size_t i = 0; i < count; i++)
        taken[i] = log_lines[(log_head + i) % MLRB_LOG_QUEUE_MAX];
    log_head = 0;
    log_count = 0;
    dropped = log_dropped;
    log_dropped = 0;
    pthread_mutex_unlock(&log_lock);

    if (count == 0 && dropped == 0)
        return Qnil;
    VALUE lines = rb_ary_new_capa((long)count + (dropped ? 1 : 0));
    for (size_t i = 0; i < count; i++) {
        VALUE message = rb_utf8_str_new_cstr(taken[i].message);
        free(taken[i].message);
        rb_ary_push(lines, rb_assoc_new(INT2NUM(taken[i].level), message));
    }
    if (dropped) {
        char note[128];
        snprintf(note, sizeof note,
                 "%zu log lines were dropped because %d were already "
                 "waiting to be logged",
                 dropped, MLRB_LOG_QUEUE_MAX);
        rb_ary_push(lines, rb_assoc_new(INT2NUM(MONLIGHT_LOG_WARNING),
                                        rb_utf8_str_new_cstr(note)));
    }
    return lines;
}

typedef struct log_wait {
    double seconds;
    bool ready;
} log_wait;

static void *wait_for_lines(void *data)
{
    log_wait *wait = data;
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)wait->seconds;
    deadline.tv_nsec += (long)((wait->seconds - (double)(time_t)wait->seconds) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&log_lock);
    while (log_count == 0 && log_dropped == 0 && !log_wake) {
        if (pthread_cond_timedwait(&log_ready, &log_lock, &deadline) == ETIMEDOUT)
            break;
    }
    wait->ready = log_count > 0 || log_dropped > 0;
    log_wake = false;
    pthread_mutex_unlock(&log_lock);
    return NULL;
}

/* Ruby calls this from another thread to interrupt the wait. */
static void stop_waiting(void *data)
{
    pthread_mutex_lock(&log_lock);
    log_wake = true;
    pthread_cond_broadcast(&log_ready);
    pthread_mutex_unlock(&log_lock);
}

bool mlrb_log_wait(double seconds)
{
    log_wait wait = {seconds > 0 ? seconds : 0, false};
    rb_thread_call_without_gvl(wait_for_lines, &wait, stop_waiting, NULL);
    return wait.ready;
}

static void init_log_ready(void)
{
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&log_ready, &attributes);
    pthread_condattr_destroy(&attributes);
}

/* Fork handlers: the lock is taken across fork() so that the child never
 * inherits it held by a thread that does not exist there. The parent's
 * queued lines stay with the parent, which logs them. */
static void log_prepare_fork(void)
{
    pthread_mutex_lock(&log_lock);
}

static void log_parent_after_fork(void)
{
    pthread_mutex_unlock(&log_lock);
}

static void log_child_after_fork(void)
{
    for (size_t i = 0; i < log_count; i++)
        free(log_lines[(log_head + i) % MLRB_LOG_QUEUE_MAX].message);
    log_head = 0;
    log_count = 0;
    log_dropped = 0;
    log_wake = false;
    pthread_mutex_init(&log_lock, NULL);
    init_log_ready();
}

void mlrb_init(void)
{
    init_log_ready();
    pthread_atfork(log_prepare_fork, log_parent_after_fork,
                   log_child_after_fork);
}

/* ------------------------------------------------------------------ */
/* Release by the garbage collector                                   */
/* ------------------------------------------------------------------ */

typedef struct release {
    void (*free_client)(void *client);
    void *client;
} release;

static void free_error_client(void *client)
{
    monlight_error_client_free(client);
}

static void free_metrics_client(void *client)
{
    monlight_metrics_client_free(client);
}

static void *run_release(void *data)
{
    release *job = data;
    job->free_client(job->client);
    free(job);
    return NULL;
}

/*
 * Frees the client on a detached thread, which delivers the client's
 * buffered data (within its exit deadline) without holding up the GC.
 * Returns false when no thread could be started.
 */
static bool release_in_background(void (*free_client)(void *), void *client)
{
    release *job = malloc(sizeof *job);
    if (!job)
        return false;
    job->free_client = free_client;
    job->client = client;

    pthread_attr_t attributes;
    pthread_t thread;
    sigset_t all, previous;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    /* Signals stay with Ruby's own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&thread, &attributes, run_release, job);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attributes);

    if (rc != 0) {
        free(job);
        return false;
    }
    return true;
}

void mlrb_error_client_release(monlight_error_client *client)
{
    if (!client)
        return;
    if (process_exiting ||
        monlight_error_client_stat(client, MONLIGHT_STAT_PENDING) == 0 ||
        !release_in_background(free_error_client, client))
        monlight_error_client_free(client);
}

void mlrb_metrics_client_release(monlight_metrics_client *client)
{
    if (!client)
        return;
    if (process_exiting ||
        monlight_metrics_client_stat(client, MONLIGHT_STAT_PENDING) == 0 ||
        !release_in_background(free_metrics_client, client))
        monlight_metrics_client_free(client);
}
