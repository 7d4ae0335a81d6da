/*
 * error_client.c: the error client.
 *
 * A report is turned into its JSON body in the caller's thread (see
 * report.c), then either sent at once from that thread or queued for the
 * client's background thread. The queue is first in, first out, bounded
 * by max_queued (the oldest report makes room for a new one, counted as
 * dropped). A report that failed with a retryable error goes back to the
 * front of the queue and waits for its backoff, and the reports behind it
 * wait with it: the tracker is down or throttling for them too.
 */
#include "internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct queued_report {
    struct queued_report *next;
    char *body;
    size_t length;
    int attempts;
    double next_attempt; /* monotonic; 0 = now */
    monlight_report_done_fn done;
    void *user_data;
} queued_report;

struct monlight_error_client {
    ml_client base; /* first: the registry sees clients through it */
    ml_config config;
    ml_transport *transport;
    ml_log_limiter limiter;

    pthread_mutex_t lock; /* guards every field below */
    pthread_cond_t wake;  /* signals the background thread */
    queued_report *head;
    queued_report *tail;
    size_t queued;
    size_t in_flight;
    bool thread_running;
    bool stopping;
    bool shut_down;
    pthread_t thread;
    char last_error[256];

    _Atomic uint64_t delivered;
    _Atomic uint64_t dropped;
    _Atomic uint64_t retried;
    _Atomic uint64_t failed;
};

static void set_last_error(monlight_error_client *client, const char *format, ...)
    ML_PRINTF(2, 3);

/* Stores the message that monlight_*_last_error() returns; the message is
 * cut at the buffer's size. */
static void set_last_error(monlight_error_client *client, const char *format, ...)
{
    va_list args;
    pthread_mutex_lock(&client->lock);
    va_start(args, format);
    vsnprintf(client->last_error, sizeof client->last_error, format, args);
    va_end(args);
    pthread_mutex_unlock(&client->lock);
}

static void finish(queued_report *item, monlight_status status)
{
    if (item->done)
        item->done(status, item->user_data);
    free(item->body);
    free(item);
}

static void push_back_locked(monlight_error_client *client, queued_report *item)
{
    item->next = NULL;
    if (client->tail)
        client->tail->next = item;
    else
        client->head = item;
    client->tail = item;
    client->queued++;
}

static void push_front_locked(monlight_error_client *client, queued_report *item)
{
    item->next = client->head;
    client->head = item;
    if (!client->tail)
        client->tail = item;
    client->queued++;
}

static queued_report *pop_front_locked(monlight_error_client *client)
{
    queued_report *item = client->head;
    if (!item)
        return NULL;
    client->head = item->next;
    if (!client->head)
        client->tail = NULL;
    item->next = NULL;
    client->queued--;
    return item;
}

/* Builds the body of a report; logs and returns the status on failure. */
static monlight_status build_body(monlight_error_client *client,
                                  const monlight_report *report, ml_buf *body)
{
    ml_buf_init(body);
    if (!report)
        return MONLIGHT_INVALID_ARGUMENT;
    monlight_status status =
        ml_report_build(report, &client->config, ML_ERROR_BODY_MAX, body,
                        &client->limiter);
    if (status != MONLIGHT_OK) {
        ml_buf_free(body);
        set_last_error(client, "%s", "out of memory while building a report");
        ml_log(&client->config.logger, NULL, MONLIGHT_LOG_WARNING,
               "error report: out of memory while building the report");
    }
    return status;
}

/* Sends one body and counts the outcome; warnings name the tracker and
 * what it answered, never the key. */
static void send_once(monlight_error_client *client, const char *body,
                      size_t length, ml_response *response)
{
    client->transport->ops->post(client->transport,
                                 client->config.endpoint_url, body, length,
                                 response);
    if (response->status == MONLIGHT_OK) {
        atomic_fetch_add(&client->delivered, 1);
        return;
    }
    set_last_error(client, "sending an error report to %s failed: %s",
                   client->config.endpoint_url, response->detail);
}

/* ------------------------------------------------------------------ */
/* Background thread                                                  */
/* ------------------------------------------------------------------ */

static void *delivery_thread(void *argument)
{
    monlight_error_client *client = argument;

    pthread_mutex_lock(&client->lock);
    while (!client->stopping) {
        queued_report *item = client->head;
        if (!item) {
            pthread_cond_wait(&client->wake, &client->lock);
            continue;
        }
        double now = ml_monotonic_now();
        if (item->next_attempt > now) {
            struct timespec until;
            ml_deadline_to_timespec(item->next_attempt, &until);
            pthread_cond_timedwait(&client->wake, &client->lock, &until);
            continue;
        }

        pop_front_locked(client);
        client->in_flight++;
        pthread_mutex_unlock(&client->lock);

        ml_response response;
        send_once(client, item->body, item->length, &response);

        pthread_mutex_lock(&client->lock);
        client->in_flight--;
        if (response.status != MONLIGHT_OK && response.retryable &&
            !client->stopping) {
            item->attempts++;
            double delay = ml_backoff_delay(item->attempts,
                                            client->config.retry_max_delay,
                                            response.retry_after);
            item->next_attempt = ml_monotonic_now() + delay;
            push_front_locked(client, item);
            atomic_fetch_add(&client->retried, 1);
            pthread_mutex_unlock(&client->lock);
            ml_log(&client->config.logger, &client->limiter,
                   MONLIGHT_LOG_WARNING,
                   "error report: sending to %s failed: %s; retrying in "
                   "%.1f s",
                   client->config.endpoint_url, response.detail, delay);
            pthread_mutex_lock(&client->lock);
            continue;
        }
        if (response.status != MONLIGHT_OK && response.retryable) {
            /* Stopping: shutdown's final pass gives it one more try. */
            push_front_locked(client, item);
            continue;
        }
        pthread_mutex_unlock(&client->lock);

        if (response.status != MONLIGHT_OK) {
            atomic_fetch_add(response.status == MONLIGHT_ABORTED
                                 ? &client->dropped
                                 : &client->failed,
                             1);
            ml_log(&client->config.logger, &client->limiter,
                   MONLIGHT_LOG_WARNING,
                   "error report: sending to %s failed: %s; not retried",
                   client->config.endpoint_url, response.detail);
        }
        finish(item, response.status);
        pthread_mutex_lock(&client->lock);
    }
    pthread_mutex_unlock(&client->lock);
    return NULL;
}

static monlight_status start_thread_locked(monlight_error_client *client)
{
    /* Every signal stays with the host's own threads. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&client->thread, NULL, delivery_thread, client);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);

    if (rc != 0)
        return MONLIGHT_THREAD_FAILED;
    client->thread_running = true;
    return MONLIGHT_OK;
}

/*
 * Queues an item, making room by dropping the oldest report when the
 * queue is full. Returns the status; *evicted receives a dropped item for
 * the caller to finish once the lock is released.
 */
static monlight_status queue_item(monlight_error_client *client,
                                  queued_report *item, bool at_front,
                                  queued_report **evicted)
{
    *evicted = NULL;
    pthread_mutex_lock(&client->lock);
    if (client->shut_down || client->stopping) {
        pthread_mutex_unlock(&client->lock);
        return MONLIGHT_SHUT_DOWN;
    }
    if (!client->thread_running &&
        start_thread_locked(client) != MONLIGHT_OK) {
        pthread_mutex_unlock(&client->lock);
        return MONLIGHT_THREAD_FAILED;
    }
    if (client->queued >= client->config.max_queued)
        *evicted = pop_front_locked(client);
    if (at_front)
        push_front_locked(client, item);
    else
        push_back_locked(client, item);
    pthread_cond_signal(&client->wake);
    pthread_mutex_unlock(&client->lock);
    return MONLIGHT_OK;
}

static void finish_evicted(monlight_error_client *client, queued_report *evicted)
{
    if (!evicted)
        return;
    atomic_fetch_add(&client->dropped, 1);
    ml_log(&client->config.logger, &client->limiter, MONLIGHT_LOG_WARNING,
           "error report queue is full (max_queued %zu); dropped the oldest "
           "report",
           client->config.max_queued);
    finish(evicted, MONLIGHT_QUEUE_FULL);
}

/* ------------------------------------------------------------------ */
/* Public calls                                                       */
/* ------------------------------------------------------------------ */

monlight_status monlight_error_client_send(monlight_error_client *client,
                                           const monlight_report *report)
{
    if (!client || !report)
        return MONLIGHT_INVALID_ARGUMENT;
    pthread_mutex_lock(&client->lock);
    bool closed = client->shut_down;
    pthread_mutex_unlock(&client->lock);
    if (closed) {
        set_last_error(client, "%s", "report not sent: the client is shut down");
        return MONLIGHT_SHUT_DOWN;
    }

    ml_buf body;
    monlight_status status = build_body(client, report, &body);
    if (status != MONLIGHT_OK)
        return status;

    ml_response response;
    send_once(client, body.data, body.length, &response);
    if (response.status == MONLIGHT_OK) {
        ml_buf_free(&body);
        return MONLIGHT_OK;
    }

    /* Nothing reached the tracker: the background thread can try again
     * without any risk of storing the report twice. */
    if (response.retryable && client->config.background_retry) {
        queued_report *item = calloc(1, sizeof *item);
        if (item) {
            item->body = body.data;
            item->length = body.length;
            item->attempts = 1;
            item->next_attempt =
                ml_monotonic_now() + ml_backoff_delay(1, client->config.retry_max_delay,
                                                      response.retry_after);
            queued_report *evicted;
            if (queue_item(client, item, false, &evicted) == MONLIGHT_OK) {
                atomic_fetch_add(&client->retried, 1);
                finish_evicted(client, evicted);
                ml_log(&client->config.logger, &client->limiter,
                       MONLIGHT_LOG_WARNING,
                       "error report: sending to %s failed: %s; retrying in "
                       "the background",
                       client->config.endpoint_url, response.detail);
                return MONLIGHT_RETRY_SCHEDULED;
            }
            free(item);
        }
    }

    ml_buf_free(&body);
    atomic_fetch_add(&client->failed, 1);
    ml_log(&client->config.logger, &client->limiter, MONLIGHT_LOG_WARNING,
           "error report: sending to %s failed: %s",
           client->config.endpoint_url, response.detail);
    return response.status;
}

monlight_status monlight_error_client_enqueue(monlight_error_client *client,
                                              const monlight_report *report,
                                              monlight_report_done_fn done,
                                              void *user_data)
{
    if (!client || !report)
        return MONLIGHT_INVALID_ARGUMENT;

    ml_buf body;
    monlight_status status = build_body(client, report, &body);
    if (status != MONLIGHT_OK)
        return status;

    queued_report *item = calloc(1, sizeof *item);
    if (!item) {
        ml_buf_free(&body);
        return MONLIGHT_NO_MEMORY;
    }
    item->body = body.data;
    item->length = body.length;
    item->done = done;
    item->user_data = user_data;

    queued_report *evicted;
    status = queue_item(client, item, false, &evicted);
    finish_evicted(client, evicted);
    if (status == MONLIGHT_OK)
        return MONLIGHT_OK;
    if (status == MONLIGHT_SHUT_DOWN) {
        free(item->body);
        free(item);
        set_last_error(client, "%s", "report not queued: the client is shut down");
        return status;
    }

    /* No thread could be started: deliver from this thread instead. */
    set_last_error(client, "%s", "could not start the background thread");
    ml_log(&client->config.logger, &client->limiter, MONLIGHT_LOG_WARNING,
           "error report: could not start the background thread; sending "
           "from the calling thread");
    ml_response response;
    send_once(client, item->body, item->length, &response);
    if (response.status != MONLIGHT_OK)
        atomic_fetch_add(&client->failed, 1);
    finish(item, response.status);
    return response.status;
}

/*
 * Stops the thread and sends what is queued before the deadline, retrying
 * retryable failures while their backoff still fits; what is left is
 * dropped and counted, and its done callbacks see MONLIGHT_ABORTED.
 */
static monlight_status shutdown_until(monlight_error_client *client,
                                      double deadline)
{
    pthread_mutex_lock(&client->lock);
    if (client->stopping) {
        /* Another thread is shutting down: wait for it to finish, so that
         * every caller returns after the final delivery. */
        while (!client->shut_down)
            pthread_cond_wait(&client->wake, &client->lock);
        pthread_mutex_unlock(&client->lock);
        return MONLIGHT_OK;
    }
    client->stopping = true;
    bool join_needed = client->thread_running;
    atomic_store(&client->transport->abort_at, deadline);
    pthread_cond_broadcast(&client->wake);
    pthread_mutex_unlock(&client->lock);

    if (join_needed)
        pthread_join(client->thread, NULL);

    size_t abandoned = 0;
    for (;;) {
        pthread_mutex_lock(&client->lock);
        client->thread_running = false;
        queued_report *item = pop_front_locked(client);
        pthread_mutex_unlock(&client->lock);
        if (!item)
            break;

        double now = ml_monotonic_now();
        if (client->config.exit_deadline <= 0 || now >= deadline) {
            abandoned++;
            atomic_fetch_add(&client->dropped, 1);
            finish(item, MONLIGHT_ABORTED);
            continue;
        }
        if (item->next_attempt > now) {
            if (item->next_attempt >= deadline) {
                abandoned++;
                atomic_fetch_add(&client->dropped, 1);
                finish(item, MONLIGHT_ABORTED);
                continue;
            }
            ml_sleep(item->next_attempt - now);
        }

        ml_response response;
        send_once(client, item->body, item->length, &response);
        if (response.status != MONLIGHT_OK && response.retryable) {
            item->attempts++;
            item->next_attempt = ml_monotonic_now() +
                                 ml_backoff_delay(item->attempts,
                                                  client->config.retry_max_delay,
                                                  response.retry_after);
            atomic_fetch_add(&client->retried, 1);
            pthread_mutex_lock(&client->lock);
            push_front_locked(client, item);
            pthread_mutex_unlock(&client->lock);
            continue;
        }
        if (response.status != MONLIGHT_OK) {
            atomic_fetch_add(response.status == MONLIGHT_ABORTED ? &client->dropped
                                                                 : &client->failed,
                             1);
            if (response.status == MONLIGHT_ABORTED)
                abandoned++;
        }
        finish(item, response.status);
    }

    pthread_mutex_lock(&client->lock);
    client->shut_down = true;
    pthread_cond_broadcast(&client->wake);
    pthread_mutex_unlock(&client->lock);
    if (abandoned > 0)
        ml_log(&client->config.logger, NULL, MONLIGHT_LOG_WARNING,
               "error reports: %zu could not be delivered before the shutdown "
               "deadline and were dropped",
               abandoned);
    return MONLIGHT_OK;
}

monlight_status monlight_error_client_shutdown(monlight_error_client *client)
{
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;
    return shutdown_until(client, ml_monotonic_now() + client->config.exit_deadline);
}

uint64_t monlight_error_client_stat(monlight_error_client *client,
                                    monlight_stat stat)
{
    if (!client)
        return 0;
    switch (stat) {
    case MONLIGHT_STAT_DELIVERED: return atomic_load(&client->delivered);
    case MONLIGHT_STAT_DROPPED: return atomic_load(&client->dropped);
    case MONLIGHT_STAT_RETRIED: return atomic_load(&client->retried);
    case MONLIGHT_STAT_FAILED: return atomic_load(&client->failed);
    case MONLIGHT_STAT_PENDING: {
        pthread_mutex_lock(&client->lock);
        uint64_t pending = client->queued + client->in_flight;
        pthread_mutex_unlock(&client->lock);
        return pending;
    }
    }
    return 0;
}

size_t monlight_error_client_last_error(monlight_error_client *client,
                                        char *buffer, size_t size)
{
    if (!client) {
        if (buffer && size)
            buffer[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&client->lock);
    size_t length = strlen(client->last_error);
    if (buffer && size)
        snprintf(buffer, size, "%s", client->last_error);
    pthread_mutex_unlock(&client->lock);
    return length;
}

/* ------------------------------------------------------------------ */
/* Registry hooks: exit and fork                                      */
/* ------------------------------------------------------------------ */

static void hook_prepare_fork(ml_client *base)
{
    monlight_error_client *client = (monlight_error_client *)base;
    pthread_mutex_lock(&client->lock);
    client->transport->ops->prepare_fork(client->transport);
}

static void hook_parent_after_fork(ml_client *base)
{
    monlight_error_client *client = (monlight_error_client *)base;
    client->transport->ops->parent_after_fork(client->transport);
    pthread_mutex_unlock(&client->lock);
}

/*
 * In a forked child the queue is the parent's to deliver: it is emptied
 * without callbacks (their user data belongs to the parent's waiters).
 * The thread is started again by the child's first report.
 */
static void hook_child_after_fork(ml_client *base)
{
    monlight_error_client *client = (monlight_error_client *)base;

    client->transport->ops->after_fork_child(client->transport);
    while (client->head) {
        queued_report *item = pop_front_locked(client);
        free(item->body);
        free(item);
    }
    client->queued = 0;
    client->in_flight = 0;
    client->thread_running = false;
    /* A shutdown that was running in the parent does not run here. */
    client->shut_down = client->shut_down || client->stopping;
    atomic_store(&client->delivered, 0);
    atomic_store(&client->dropped, 0);
    atomic_store(&client->retried, 0);
    atomic_store(&client->failed, 0);
    pthread_mutex_init(&client->lock, NULL);
    ml_cond_init_monotonic(&client->wake);
    ml_log_limiter_init(&client->limiter);
}

static void hook_shutdown(ml_client *base, double started)
{
    monlight_error_client *client = (monlight_error_client *)base;
    shutdown_until(client, started + client->config.exit_deadline);
}

static const ml_client_ops error_hooks = {
    hook_prepare_fork, hook_parent_after_fork, hook_child_after_fork,
    hook_shutdown,
};

/* ------------------------------------------------------------------ */
/* Creation and destruction                                           */
/* ------------------------------------------------------------------ */

monlight_status monlight_error_client_new(monlight_options *options,
                                          monlight_error_client **out)
{
    if (!out)
        return MONLIGHT_INVALID_ARGUMENT;
    *out = NULL;
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;
    if (!ml_global_init()) {
        snprintf(options->last_error, sizeof options->last_error,
                 "libcurl could not be initialised");
        return MONLIGHT_TRANSPORT_FAILED;
    }

    monlight_error_client *client = calloc(1, sizeof *client);
    if (!client) {
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }
    monlight_status status = ml_config_init(&client->config, options, "/api/errors");
    if (status != MONLIGHT_OK) {
        free(client);
        return status;
    }
    client->transport = ml_curl_transport_new(&client->config);
    if (!client->transport) {
        ml_config_free(&client->config);
        free(client);
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }

    pthread_mutex_init(&client->lock, NULL);
    ml_cond_init_monotonic(&client->wake);
    ml_log_limiter_init(&client->limiter);
    client->base.ops = &error_hooks;
    ml_registry_add(&client->base);
    *out = client;
    return MONLIGHT_OK;
}

void monlight_error_client_free(monlight_error_client *client)
{
    if (!client)
        return;
    ml_registry_remove(&client->base);
    monlight_error_client_shutdown(client);

    client->transport->ops->destroy(client->transport);
    pthread_cond_destroy(&client->wake);
    pthread_mutex_destroy(&client->lock);
    ml_log_limiter_destroy(&client->limiter);
    ml_config_free(&client->config);
    free(client);
}
