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
    ml_client_core core; /* first: see ml_client_core */

    /* Guarded by core.lock. */
    queued_report *head;
    queued_report *tail;
    size_t queued;
    size_t in_flight;
    bool thread_running;
    bool stopping;
    bool shut_down;
    pthread_t thread;
};

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
        ml_report_build(report, &client->core.config, ML_ERROR_BODY_MAX, body,
                        &client->core.limiter);
    if (status != MONLIGHT_OK) {
        ml_buf_free(body);
        ml_core_set_last_error(&client->core, "%s", "out of memory while building a report");
        ml_log(&client->core.config.logger, NULL, MONLIGHT_LOG_WARNING,
               "error report: out of memory while building the report");
    }
    return status;
}

/* Sends one body and counts the outcome. Warnings name the tracker and
 * quote its response, never the key. */
static void send_once(monlight_error_client *client, const char *body,
                      size_t length, ml_response *response)
{
    client->core.transport->ops->post(client->core.transport,
                                 client->core.config.endpoint_url, body, length,
                                 response);
    if (response->status == MONLIGHT_OK) {
        atomic_fetch_add(&client->core.delivered, 1);
        return;
    }
    ml_core_set_last_error(&client->core, "sending an error report to %s failed: %s",
                   client->core.config.display_url, response->detail);
}

/* ------------------------------------------------------------------ */
/* Background thread                                                  */
/* ------------------------------------------------------------------ */

static void *delivery_thread(void *argument)
{
    monlight_error_client *client = argument;

    pthread_mutex_lock(&client->core.lock);
    while (!client->stopping) {
        queued_report *item = client->head;
        if (!item) {
            pthread_cond_wait(&client->core.wake, &client->core.lock);
            continue;
        }
        double now = ml_monotonic_now();
        if (item->next_attempt > now) {
            struct timespec until;
            ml_deadline_to_timespec(item->next_attempt, &until);
            pthread_cond_timedwait(&client->core.wake, &client->core.lock, &until);
            continue;
        }

        pop_front_locked(client);
        client->in_flight++;
        pthread_mutex_unlock(&client->core.lock);

        ml_response response;
        send_once(client, item->body, item->length, &response);

        pthread_mutex_lock(&client->core.lock);
        client->in_flight--;
        if (response.status != MONLIGHT_OK && response.retryable &&
            !client->stopping) {
            item->attempts++;
            double delay = ml_backoff_delay(item->attempts,
                                            client->core.config.retry_max_delay,
                                            response.retry_after);
            item->next_attempt = ml_monotonic_now() + delay;
            push_front_locked(client, item);
            atomic_fetch_add(&client->core.retried, 1);
            pthread_mutex_unlock(&client->core.lock);
            ml_log(&client->core.config.logger, &client->core.limiter,
                   MONLIGHT_LOG_WARNING,
                   "error report: sending to %s failed: %s; retrying in "
                   "%.1f s",
                   client->core.config.display_url, response.detail, delay);
            pthread_mutex_lock(&client->core.lock);
            continue;
        }
        if (response.status != MONLIGHT_OK && response.retryable) {
            /* Stopping: shutdown's final pass gives it one more try. */
            push_front_locked(client, item);
            continue;
        }
        pthread_mutex_unlock(&client->core.lock);

        if (response.status != MONLIGHT_OK) {
            atomic_fetch_add(response.status == MONLIGHT_ABORTED
                                 ? &client->core.dropped
                                 : &client->core.failed,
                             1);
            ml_log(&client->core.config.logger, &client->core.limiter,
                   MONLIGHT_LOG_WARNING,
                   "error report: sending to %s failed: %s; not retried",
                   client->core.config.display_url, response.detail);
        }
        finish(item, response.status);
        pthread_mutex_lock(&client->core.lock);
    }
    pthread_mutex_unlock(&client->core.lock);
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
    pthread_mutex_lock(&client->core.lock);
    if (client->shut_down || client->stopping) {
        pthread_mutex_unlock(&client->core.lock);
        return MONLIGHT_SHUT_DOWN;
    }
    if (!client->thread_running &&
        start_thread_locked(client) != MONLIGHT_OK) {
        pthread_mutex_unlock(&client->core.lock);
        return MONLIGHT_THREAD_FAILED;
    }
    if (client->queued >= client->core.config.max_queued)
        *evicted = pop_front_locked(client);
    if (at_front)
        push_front_locked(client, item);
    else
        push_back_locked(client, item);
    pthread_cond_signal(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);
    return MONLIGHT_OK;
}

static void finish_evicted(monlight_error_client *client, queued_report *evicted)
{
    if (!evicted)
        return;
    atomic_fetch_add(&client->core.dropped, 1);
    ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
           "error report queue is full (max_queued %zu); dropped the oldest "
           "report",
           client->core.config.max_queued);
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
    pthread_mutex_lock(&client->core.lock);
    bool closed = client->shut_down;
    pthread_mutex_unlock(&client->core.lock);
    if (closed) {
        ml_core_set_last_error(&client->core, "%s", "report not sent: the client is shut down");
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
    if (response.retryable && client->core.config.background_retry) {
        queued_report *item = calloc(1, sizeof *item);
        if (item) {
            item->body = body.data;
            item->length = body.length;
            item->attempts = 1;
            item->next_attempt =
                ml_monotonic_now() + ml_backoff_delay(1, client->core.config.retry_max_delay,
                                                      response.retry_after);
            queued_report *evicted;
            if (queue_item(client, item, false, &evicted) == MONLIGHT_OK) {
                atomic_fetch_add(&client->core.retried, 1);
                finish_evicted(client, evicted);
                ml_log(&client->core.config.logger, &client->core.limiter,
                       MONLIGHT_LOG_WARNING,
                       "error report: sending to %s failed: %s; retrying in "
                       "the background",
                       client->core.config.display_url, response.detail);
                return MONLIGHT_RETRY_SCHEDULED;
            }
            free(item);
        }
    }

    ml_buf_free(&body);
    atomic_fetch_add(&client->core.failed, 1);
    ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
           "error report: sending to %s failed: %s",
           client->core.config.display_url, response.detail);
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
        ml_core_set_last_error(&client->core, "%s", "report not queued: the client is shut down");
        return status;
    }

    /* No thread could be started: deliver from this thread instead. */
    ml_core_set_last_error(&client->core, "%s", "could not start the background thread");
    ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
           "error report: could not start the background thread; sending "
           "from the calling thread");
    ml_response response;
    send_once(client, item->body, item->length, &response);
    if (response.status != MONLIGHT_OK)
        atomic_fetch_add(&client->core.failed, 1);
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
    pthread_mutex_lock(&client->core.lock);
    if (client->stopping) {
        /* Another thread is shutting down: wait for it to finish, so that
         * every caller returns after the final delivery. */
        while (!client->shut_down)
            pthread_cond_wait(&client->core.wake, &client->core.lock);
        pthread_mutex_unlock(&client->core.lock);
        return MONLIGHT_OK;
    }
    client->stopping = true;
    bool join_needed = client->thread_running;
    atomic_store(&client->core.transport->abort_at, deadline);
    pthread_cond_broadcast(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);

    if (join_needed)
        pthread_join(client->thread, NULL);

    size_t abandoned = 0;
    for (;;) {
        pthread_mutex_lock(&client->core.lock);
        client->thread_running = false;
        queued_report *item = pop_front_locked(client);
        pthread_mutex_unlock(&client->core.lock);
        if (!item)
            break;

        double now = ml_monotonic_now();
        if (client->core.config.exit_deadline <= 0 || now >= deadline) {
            abandoned++;
            atomic_fetch_add(&client->core.dropped, 1);
            finish(item, MONLIGHT_ABORTED);
            continue;
        }
        if (item->next_attempt > now) {
            if (item->next_attempt >= deadline) {
                abandoned++;
                atomic_fetch_add(&client->core.dropped, 1);
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
                                                  client->core.config.retry_max_delay,
                                                  response.retry_after);
            atomic_fetch_add(&client->core.retried, 1);
            pthread_mutex_lock(&client->core.lock);
            push_front_locked(client, item);
            pthread_mutex_unlock(&client->core.lock);
            continue;
        }
        if (response.status != MONLIGHT_OK) {
            atomic_fetch_add(response.status == MONLIGHT_ABORTED ? &client->core.dropped
                                                                 : &client->core.failed,
                             1);
            if (response.status == MONLIGHT_ABORTED)
                abandoned++;
        }
        finish(item, response.status);
    }

    /* Nothing touches the client after the broadcast: a second shutdown
     * waiting for it may go on to free the client. */
    if (abandoned > 0)
        ml_log(&client->core.config.logger, NULL, MONLIGHT_LOG_WARNING,
               "error reports: %zu could not be delivered before the shutdown "
               "deadline and were dropped",
               abandoned);
    pthread_mutex_lock(&client->core.lock);
    client->shut_down = true;
    pthread_cond_broadcast(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);
    return MONLIGHT_OK;
}

monlight_status monlight_error_client_shutdown(monlight_error_client *client)
{
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;
    return shutdown_until(client, ml_monotonic_now() + client->core.config.exit_deadline);
}

uint64_t monlight_error_client_stat(monlight_error_client *client,
                                    monlight_stat stat)
{
    if (!client)
        return 0;
    if (stat != MONLIGHT_STAT_PENDING)
        return ml_core_counter(&client->core, stat);
    pthread_mutex_lock(&client->core.lock);
    uint64_t pending = client->queued + client->in_flight;
    pthread_mutex_unlock(&client->core.lock);
    return pending;
}

size_t monlight_error_client_last_error(monlight_error_client *client,
                                        char *buffer, size_t size)
{
    return ml_core_copy_last_error(client ? &client->core : NULL, buffer, size);
}

/* ------------------------------------------------------------------ */
/* Registry hooks: exit and fork                                      */
/* ------------------------------------------------------------------ */

static void hook_prepare_fork(ml_client *base)
{
    ml_core_prepare_fork(&((monlight_error_client *)base)->core);
}

static void hook_parent_after_fork(ml_client *base)
{
    ml_core_parent_after_fork(&((monlight_error_client *)base)->core);
}

/*
 * In a forked child the queue is the parent's to deliver: it is emptied
 * without callbacks (their user data belongs to the parent's waiters).
 * The thread is started again by the child's first report.
 */
static void hook_child_after_fork(ml_client *base)
{
    monlight_error_client *client = (monlight_error_client *)base;

    ml_core_child_after_fork(&client->core);
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
}

static void hook_shutdown(ml_client *base, double started)
{
    monlight_error_client *client = (monlight_error_client *)base;
    shutdown_until(client, started + client->core.config.exit_deadline);
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

    monlight_error_client *client = calloc(1, sizeof *client);
    if (!client) {
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }
    monlight_status status = ml_core_init(&client->core, options, "/api/errors",
                                          &error_hooks);
    if (status != MONLIGHT_OK) {
        free(client);
        return status;
    }

    ml_registry_add(&client->core.registry);
    *out = client;
    return MONLIGHT_OK;
}

void monlight_error_client_free(monlight_error_client *client)
{
    if (!client)
        return;
    ml_registry_remove(&client->core.registry);
    monlight_error_client_shutdown(client);

    ml_core_destroy(&client->core);
    free(client);
}
