/*
 * metrics_client.c: the metrics client.
 *
 * A record call builds the metric's series text (name, type, labels) on
 * the stack, then, under the client lock, finds the series in the newest
 * batch and appends a 24-byte entry: no allocation once a series has been
 * seen in the batch, and no network. Batches are sent whole by flush(),
 * from the caller's thread, or by the background thread every flush
 * interval; a batch that failed with a retryable error goes back to the
 * front of the queue with a backoff.
 *
 * Memory is bounded by max_buffered: past it the oldest batch is dropped
 * and counted. The cardinality guard bounds the distinct label sets of
 * one metric name per flush window; further label sets are folded into
 * {"monlight_overflow":"true"}.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OVERFLOW_LABELS "{\"monlight_overflow\":\"true\"}"

/* A series seen in the current flush window, for the cardinality guard. */
typedef struct window_name {
    uint64_t hash;
    uint32_t label_sets;
    bool warned;
} window_name;

struct monlight_metrics_client {
    ml_client_core core; /* first: see ml_client_core */
    char *project_part; /* ,"project":"..." or "" */
    size_t project_part_length;
    uint32_t batch_limit; /* metrics per batch: 1000, or max_buffered */

    ml_batch *head;       /* oldest batch; records go to the tail */
    ml_batch *tail;
    size_t buffered;  /* metrics in the queue */
    size_t buffered_bytes; /* their JSON body sizes, an upper bound */
    size_t in_flight; /* metrics taken by a sender */

    uint64_t *window_series; /* open addressing set of series hashes */
    size_t window_series_count;
    size_t window_series_slots;
    window_name *window_names;
    size_t window_name_count;
    size_t window_name_slots;

    bool started;       /* start() was called: a thread should run */
    bool thread_running;
    bool stopping;
    bool shutting_down; /* a shutdown has begun; shut_down when it ends */
    bool shut_down;
    bool flush_requested;
    double next_flush;
    pthread_t thread;
};

/* A warning decided under the lock and logged after it is released: the
 * log callback may wait for an interpreter lock, which must never happen
 * while this client's lock is held. */
typedef struct deferred_warning {
    char text[320];
    bool set;
} deferred_warning;

/* Shows a metric name in a warning: printable ASCII, at most 60 bytes. */
static void describe_name(const char *name, size_t length, char out[72])
{
    size_t n = length < 60 ? length : 60;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
    }
    strcpy(out + n, length > 60 ? "..." : "");
}

/* ------------------------------------------------------------------ */
/* Cardinality window                                                 */
/* ------------------------------------------------------------------ */

static void window_reset(monlight_metrics_client *client)
{
    if (client->window_series_count)
        memset(client->window_series, 0,
               client->window_series_slots * sizeof *client->window_series);
    if (client->window_name_count)
        memset(client->window_names, 0,
               client->window_name_slots * sizeof *client->window_names);
    client->window_series_count = 0;
    client->window_name_count = 0;
}

/* Hash 0 marks an empty slot; a real hash of 0 is moved to 1. */
static uint64_t nonzero(uint64_t hash)
{
    return hash ? hash : 1;
}

static bool grow_window_series(monlight_metrics_client *client)
{
    size_t slots = client->window_series_slots ? client->window_series_slots * 2 : 64;
    uint64_t *table = calloc(slots, sizeof *table);
    if (!table)
        return false;
    for (size_t i = 0; i < client->window_series_slots; i++) {
        uint64_t hash = client->window_series[i];
        if (!hash)
            continue;
        size_t slot = hash & (slots - 1);
        while (table[slot])
            slot = (slot + 1) & (slots - 1);
        table[slot] = hash;
    }
    free(client->window_series);
    client->window_series = table;
    client->window_series_slots = slots;
    return true;
}

static bool grow_window_names(monlight_metrics_client *client)
{
    size_t slots = client->window_name_slots ? client->window_name_slots * 2 : 16;
    window_name *table = calloc(slots, sizeof *table);
    if (!table)
        return false;
    for (size_t i = 0; i < client->window_name_slots; i++) {
        window_name *entry = &client->window_names[i];
        if (!entry->hash)
            continue;
        size_t slot = entry->hash & (slots - 1);
        while (table[slot].hash)
            slot = (slot + 1) & (slots - 1);
        table[slot] = *entry;
    }
    free(client->window_names);
    client->window_names = table;
    client->window_name_slots = slots;
    return true;
}

/* Returns the slot of a series hash in the window set, or of the empty
 * slot where it belongs. */
static size_t window_series_slot(const monlight_metrics_client *client,
                                 uint64_t hash)
{
    size_t mask = client->window_series_slots - 1;
    size_t slot = hash & mask;
    while (client->window_series[slot] && client->window_series[slot] != hash)
        slot = (slot + 1) & mask;
    return slot;
}

static bool window_contains(const monlight_metrics_client *client,
                            uint64_t series_hash)
{
    if (client->window_series_slots == 0)
        return false;
    size_t slot = window_series_slot(client, nonzero(series_hash));
    return client->window_series[slot] != 0;
}

static window_name *window_name_entry(monlight_metrics_client *client,
                                      uint64_t hash)
{
    if ((client->window_name_count + 1) * 2 > client->window_name_slots &&
        !grow_window_names(client))
        return NULL;
    size_t mask = client->window_name_slots - 1;
    size_t slot = hash & mask;
    while (client->window_names[slot].hash &&
           client->window_names[slot].hash != hash)
        slot = (slot + 1) & mask;
    window_name *entry = &client->window_names[slot];
    if (!entry->hash) {
        entry->hash = hash;
        client->window_name_count++;
    }
    return entry;
}

typedef enum window_verdict {
    WINDOW_KNOWN,    /* seen already in this window */
    WINDOW_NEW,      /* first time, admitted */
    WINDOW_OVERFLOW, /* over the cap: fold into the overflow label set */
    WINDOW_NO_MEMORY
} window_verdict;

static window_verdict window_admit(monlight_metrics_client *client,
                                   uint64_t series_hash, uint64_t name_hash,
                                   bool *first_overflow)
{
    series_hash = nonzero(series_hash);
    name_hash = nonzero(name_hash);
    *first_overflow = false;

    if ((client->window_series_count + 1) * 2 > client->window_series_slots &&
        !grow_window_series(client))
        return WINDOW_NO_MEMORY;
    size_t slot = window_series_slot(client, series_hash);
    if (client->window_series[slot])
        return WINDOW_KNOWN;

    window_name *name = window_name_entry(client, name_hash);
    if (!name)
        return WINDOW_NO_MEMORY;
    if (name->label_sets >= client->core.config.max_label_sets) {
        *first_overflow = !name->warned;
        name->warned = true;
        return WINDOW_OVERFLOW;
    }
    name->label_sets++;
    client->window_series[slot] = series_hash;
    client->window_series_count++;
    return WINDOW_NEW;
}

/* ------------------------------------------------------------------ */
/* Recording                                                          */
/* ------------------------------------------------------------------ */

static const char *type_name(monlight_metric_type type)
{
    switch (type) {
    case MONLIGHT_COUNTER: return "counter";
    case MONLIGHT_HISTOGRAM: return "histogram";
    case MONLIGHT_GAUGE: return "gauge";
    }
    return NULL;
}

/* Writes {"name":...,"type":...[,"labels":{...}] into out. */
static void build_series_text(ml_buf *out, const char *name,
                              size_t name_length, const char *type,
                              const char *labels_json, size_t labels_length)
{
    ml_buf_append_str(out, "{\"name\":");
    ml_json_append_string(out, name, name_length);
    ml_buf_append_str(out, ",\"type\":\"");
    ml_buf_append_str(out, type);
    ml_buf_append_char(out, '"');
    if (labels_length > 0) {
        ml_buf_append_str(out, ",\"labels\":");
        ml_buf_append(out, labels_json, labels_length);
    }
}

static monlight_status start_thread_locked(monlight_metrics_client *client);

/* Drops the oldest batches while the queue is over a cap. */
static size_t enforce_cap_locked(monlight_metrics_client *client)
{
    size_t dropped = 0;
    while ((client->buffered > client->core.config.max_buffered ||
            client->buffered_bytes > client->core.config.max_buffered_bytes) &&
           client->head && client->head != client->tail) {
        ml_batch *oldest = client->head;
        client->head = oldest->next;
        client->buffered -= oldest->count;
        client->buffered_bytes -= oldest->body_size;
        dropped += oldest->count;
        ml_batch_free(oldest);
    }
    if (dropped)
        atomic_fetch_add(&client->core.dropped, dropped);
    return dropped;
}

static monlight_status refuse(monlight_metrics_client *client,
                              const char *name, size_t name_length,
                              const char *reason)
{
    char shown[72];
    char text[256];

    describe_name(name ? name : "", name ? name_length : 0, shown);
    snprintf(text, sizeof text, "metric \"%s\" rejected: %s", shown, reason);
    atomic_fetch_add(&client->core.dropped, 1);
    ml_core_set_last_error(&client->core, "%s", text);
    ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
           "%s", text);
    return MONLIGHT_INVALID_ARGUMENT;
}

/* Hashes what identifies a series: its type, name and label text. */
static uint64_t series_key_hash(monlight_metric_type type, const char *name,
                                size_t name_length, const char *labels_json,
                                size_t labels_length)
{
    uint64_t hash = ml_hash(ML_HASH_SEED ^ (uint64_t)type, name, name_length);
    return ml_hash(hash, labels_json, labels_length);
}

/* Returns the newest batch if it can take one more metric of entry_size
 * bytes, else a new batch appended to the queue (NULL when memory is
 * exhausted). */
static ml_batch *batch_with_room_locked(monlight_metrics_client *client,
                                        size_t entry_size)
{
    ml_batch *batch = client->tail;
    if (batch && batch->count < client->batch_limit &&
        batch->body_size + entry_size <= ML_METRICS_BODY_MAX)
        return batch;

    batch = ml_batch_new();
    if (!batch)
        return NULL;
    if (client->tail)
        client->tail->next = batch;
    else
        client->head = batch;
    client->tail = batch;
    return batch;
}

/*
 * Writes the series text of a key and adds it to a batch with room for
 * one metric of it: the newest batch, or a new one. Returns NULL with
 * *batch and *series set, or the reason the metric is rejected.
 */
static const char *add_series_locked(monlight_metrics_client *client,
                                     const ml_series_key *key, ml_batch **batch,
                                     uint32_t *series)
{
    char storage[512];
    ml_buf text;
    ml_buf_init_with(&text, storage, sizeof storage);
    build_series_text(&text, key->name, key->name_length, type_name(key->type),
                      key->labels_json, key->labels_length);

    const char *reason = NULL;
    size_t entry_size = ml_entry_body_size(text.length, client->project_part_length);
    if (text.failed)
        reason = "out of memory";
    else if (entry_size + 2 > ML_METRICS_BODY_MAX)
        reason = "labels make it larger than a 512 KiB batch";
    else if (!(*batch = batch_with_room_locked(client, entry_size)))
        reason = "out of memory";
    else if ((*series = ml_batch_series(*batch, key, text.data, text.length)) ==
             UINT32_MAX)
        reason = "out of memory";
    ml_buf_free(&text);
    return reason;
}

/*
 * Appends one metric under the client lock. The usual case costs a hash
 * table probe in the flush window and one in the newest batch, then a
 * 24-byte append. A series seen for the first time in the window is
 * checked (name UTF-8, label text) and counted by the cardinality guard;
 * a series new to the batch has its text written once. Returns NULL on
 * success or the reason the metric was rejected.
 */
static const char *append_locked(monlight_metrics_client *client,
                                 ml_series_key *key, double value,
                                 int64_t timestamp, bool labels_trusted,
                                 deferred_warning *warning)
{
    if (!window_contains(client, key->hash)) {
        if (!ml_utf8_valid(key->name, key->name_length))
            return "name is not valid UTF-8";
        if (!labels_trusted && key->labels_length > 0 &&
            !ml_labels_json_valid(key->labels_json, key->labels_length))
            return "labels are not the JSON text of an object of strings";

        bool first_overflow;
        uint64_t name_hash = ml_hash(ML_HASH_SEED, key->name, key->name_length);
        window_verdict verdict = window_admit(client, key->hash, name_hash,
                                              &first_overflow);
        if (verdict == WINDOW_NO_MEMORY)
            return "out of memory";
        if (verdict == WINDOW_OVERFLOW) {
            key->labels_json = OVERFLOW_LABELS;
            key->labels_length = strlen(OVERFLOW_LABELS);
            key->hash = series_key_hash(key->type, key->name, key->name_length,
                                        key->labels_json, key->labels_length);
            if (first_overflow) {
                char shown[72];
                describe_name(key->name, key->name_length, shown);
                snprintf(warning->text, sizeof warning->text,
                         "metric \"%s\" has more than %zu label sets in one "
                         "flush window; further label sets are recorded as %s",
                         shown, client->core.config.max_label_sets, OVERFLOW_LABELS);
                warning->set = true;
            }
        }
    }

    ml_batch *batch = client->tail;
    uint32_t series = batch ? ml_batch_find(batch, key) : UINT32_MAX;
    size_t entry_size = 0;
    if (series != UINT32_MAX) {
        entry_size = ml_entry_body_size(batch->series[series].length,
                                        client->project_part_length);
        if (batch->count >= client->batch_limit ||
            batch->body_size + entry_size > ML_METRICS_BODY_MAX)
            series = UINT32_MAX; /* full: the series goes into a new batch */
    }
    if (series == UINT32_MAX) {
        const char *reason = add_series_locked(client, key, &batch, &series);
        if (reason)
            return reason;
        entry_size = ml_entry_body_size(batch->series[series].length,
                                        client->project_part_length);
    }

    size_t size_before = batch->body_size;
    if (!ml_batch_append(batch, series, value, timestamp, entry_size))
        return "out of memory";
    client->buffered++;
    client->buffered_bytes += batch->body_size - size_before;
    return NULL;
}

static monlight_status record(monlight_metrics_client *client,
                              monlight_metric_type type, const char *name,
                              size_t name_length, double value,
                              const char *labels_json, size_t labels_length,
                              bool labels_trusted)
{
    /* Validate what costs nothing to check; one bad metric is rejected
     * here, alone. */
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;
    if (!type_name(type))
        return refuse(client, name, name_length, "unknown metric type");
    if (!name || name_length == 0)
        return refuse(client, "", 0, "name is empty");
    if (name_length > ML_METRIC_NAME_MAX)
        return refuse(client, name, name_length, "name is over 200 bytes");
    if (!isfinite(value))
        return refuse(client, name, name_length,
                      "value is not a finite number (NaN or infinity)");
    if (!labels_json)
        labels_length = 0;

    ml_series_key key = {
        series_key_hash(type, name, name_length, labels_json, labels_length),
        type, name, name_length, labels_json, labels_length,
    };
    int64_t timestamp = ml_wall_seconds();

    /* Act under the lock; log only after releasing it, since the log
     * callback may wait for an interpreter lock. */
    deferred_warning warning = {.set = false};
    const char *reason = NULL;
    monlight_status status = MONLIGHT_OK;
    pthread_mutex_lock(&client->core.lock);
    if (client->shut_down) {
        status = MONLIGHT_SHUT_DOWN;
        snprintf(client->core.last_error, sizeof client->core.last_error,
                 "metric not recorded: the client is shut down");
    } else {
        if (client->started && !client->thread_running && !client->shutting_down)
            start_thread_locked(client); /* first record in a forked child */
        reason = append_locked(client, &key, value, timestamp, labels_trusted,
                               &warning);
    }

    /* Keep memory bounded, and wake the sender early when the queue is
     * half full so that the cap is rarely reached. */
    size_t dropped = reason || status != MONLIGHT_OK ? 0 : enforce_cap_locked(client);
    if (dropped && !warning.set) {
        snprintf(warning.text, sizeof warning.text,
                 "metrics buffer over max_buffered (%zu metrics) or "
                 "max_buffered_bytes (%zu); dropped the %zu oldest metrics",
                 client->core.config.max_buffered,
                 client->core.config.max_buffered_bytes, dropped);
        warning.set = true;
    }
    if (client->thread_running &&
        client->buffered >= client->core.config.max_buffered / 2 &&
        !client->flush_requested) {
        client->flush_requested = true;
        pthread_cond_signal(&client->core.wake);
    }
    pthread_mutex_unlock(&client->core.lock);

    if (warning.set)
        ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
               "%s", warning.text);
    if (status == MONLIGHT_SHUT_DOWN) {
        atomic_fetch_add(&client->core.dropped, 1);
        return status;
    }
    if (reason)
        return refuse(client, name, name_length, reason);
    return MONLIGHT_OK;
}

monlight_status monlight_metrics_client_record_json(
    monlight_metrics_client *client, monlight_metric_type type,
    const char *name, size_t name_length, double value,
    const char *labels_json, size_t labels_json_length)
{
    return record(client, type, name, name_length, value, labels_json,
                  labels_json_length, false);
}

monlight_status monlight_metrics_client_record(monlight_metrics_client *client,
                                               monlight_metric_type type,
                                               const char *name,
                                               size_t name_length,
                                               double value,
                                               const monlight_label *labels,
                                               size_t label_count)
{
    if (label_count > 0 && !labels)
        return client ? refuse(client, name, name_length,
                               "labels is NULL with a non-zero count")
                      : MONLIGHT_INVALID_ARGUMENT;

    /* Labels become JSON text once here; invalid UTF-8 in a key or a value
     * is repaired rather than refused, since labels often echo input. */
    char storage[512];
    ml_buf labels_json;
    ml_buf_init_with(&labels_json, storage, sizeof storage);
    if (label_count > 0) {
        ml_buf_append_char(&labels_json, '{');
        for (size_t i = 0; i < label_count; i++) {
            const monlight_label *label = &labels[i];
            if ((!label->key && label->key_length) ||
                (!label->value && label->value_length)) {
                ml_buf_free(&labels_json);
                return client ? refuse(client, name, name_length,
                                       "a label key or value is NULL")
                              : MONLIGHT_INVALID_ARGUMENT;
            }
            if (i > 0)
                ml_buf_append_char(&labels_json, ',');
            const char *parts[2] = {label->key ? label->key : "",
                                    label->value ? label->value : ""};
            size_t lengths[2] = {label->key_length, label->value_length};
            for (int part = 0; part < 2; part++) {
                if (ml_utf8_valid(parts[part], lengths[part])) {
                    ml_json_append_string(&labels_json, parts[part], lengths[part]);
                } else {
                    ml_buf repaired;
                    ml_buf_init(&repaired);
                    ml_utf8_sanitize(&repaired, parts[part], lengths[part]);
                    ml_json_append_string(&labels_json, repaired.data,
                                          repaired.length);
                    ml_buf_free(&repaired);
                }
                if (part == 0)
                    ml_buf_append_char(&labels_json, ':');
            }
        }
        ml_buf_append_char(&labels_json, '}');
    }

    monlight_status status =
        labels_json.failed
            ? MONLIGHT_NO_MEMORY
            : record(client, type, name, name_length, value, labels_json.data,
                     labels_json.length, true);
    ml_buf_free(&labels_json);
    return status;
}

monlight_status monlight_counter(monlight_metrics_client *client,
                                 const char *name, double value,
                                 const monlight_label *labels,
                                 size_t label_count)
{
    return monlight_metrics_client_record(client, MONLIGHT_COUNTER, name,
                                          name ? strlen(name) : 0, value,
                                          labels, label_count);
}

monlight_status monlight_histogram(monlight_metrics_client *client,
                                   const char *name, double value,
                                   const monlight_label *labels,
                                   size_t label_count)
{
    return monlight_metrics_client_record(client, MONLIGHT_HISTOGRAM, name,
                                          name ? strlen(name) : 0, value,
                                          labels, label_count);
}

monlight_status monlight_gauge(monlight_metrics_client *client,
                               const char *name, double value,
                               const monlight_label *labels,
                               size_t label_count)
{
    return monlight_metrics_client_record(client, MONLIGHT_GAUGE, name,
                                          name ? strlen(name) : 0, value,
                                          labels, label_count);
}

/* ------------------------------------------------------------------ */
/* Sending                                                            */
/* ------------------------------------------------------------------ */

/*
 * Moves batches out of the queue for sending: all of them, or only those
 * whose retry time has come. Starts a new cardinality window, since the
 * taken metrics now belong to a sent flush.
 */
static ml_batch *take_batches_locked(monlight_metrics_client *client,
                                     bool due_only, double now)
{
    ml_batch *taken = NULL, **taken_end = &taken;
    ml_batch *kept = NULL, **kept_end = &kept;

    for (ml_batch *batch = client->head, *next; batch; batch = next) {
        next = batch->next;
        batch->next = NULL;
        if (!due_only || batch->next_attempt <= now) {
            *taken_end = batch;
            taken_end = &batch->next;
            client->buffered -= batch->count;
            client->buffered_bytes -= batch->body_size;
            client->in_flight += batch->count;
        } else {
            *kept_end = batch;
            kept_end = &batch->next;
        }
    }

    client->head = kept;
    client->tail = NULL;
    for (ml_batch *batch = kept; batch; batch = batch->next)
        client->tail = batch;
    window_reset(client);
    return taken;
}

/* Puts batches that will be retried back at the front, oldest first. */
static void requeue_locked(monlight_metrics_client *client, ml_batch *batches)
{
    if (!batches)
        return;
    ml_batch *last = batches;
    size_t count = last->count;
    size_t bytes = last->body_size;
    while (last->next) {
        last = last->next;
        count += last->count;
        bytes += last->body_size;
    }
    last->next = client->head;
    client->head = batches;
    if (!client->tail)
        client->tail = last;
    client->buffered += count;
    client->buffered_bytes += bytes;
}

static size_t batch_list_count(const ml_batch *batch)
{
    size_t count = 0;
    for (; batch; batch = batch->next)
        count += batch->count;
    return count;
}

static void free_batch_list(ml_batch *batch)
{
    while (batch) {
        ml_batch *next = batch->next;
        ml_batch_free(batch);
        batch = next;
    }
}

/*
 * Sends a list of batches taken from the queue, in order, from the
 * calling thread. Batches that fail with a retryable error are requeued
 * with a backoff; after a connection failure or a 429 the rest of the
 * list is requeued untried, since the server would respond the same way.
 * Returns the first failure, or OK.
 */
static monlight_status send_batches(monlight_metrics_client *client,
                                    ml_batch *list)
{
    size_t taken_count = batch_list_count(list);
    monlight_status result = MONLIGHT_OK;
    ml_batch *retry = NULL, **retry_end = &retry;
    ml_buf body;
    ml_buf_init(&body);

    while (list) {
        ml_batch *batch = list;
        list = batch->next;
        batch->next = NULL;

        ml_batch_serialize(batch, client->project_part, &body);
        ml_response response;
        if (body.failed) {
            memset(&response, 0, sizeof response);
            response.status = MONLIGHT_NO_MEMORY;
            snprintf(response.detail, sizeof response.detail, "out of memory");
        } else {
            client->core.transport->ops->post(client->core.transport,
                                         client->core.config.endpoint_url,
                                         body.data, body.length, &response);
        }

        if (response.status == MONLIGHT_OK) {
            atomic_fetch_add(&client->core.delivered, batch->count);
            ml_batch_free(batch);
            continue;
        }
        if (result == MONLIGHT_OK)
            result = response.status;

        if (response.retryable) {
            batch->attempts++;
            double delay = ml_backoff_delay(batch->attempts,
                                            client->core.config.retry_max_delay,
                                            response.retry_after);
            batch->next_attempt = ml_monotonic_now() + delay;
            atomic_fetch_add(&client->core.retried, batch->count);
            ml_log(&client->core.config.logger, &client->core.limiter,
                   MONLIGHT_LOG_WARNING,
                   "metrics: sending %u metrics to %s failed: %s; retrying "
                   "in %.1f s",
                   batch->count, client->core.config.display_url, response.detail,
                   delay);
            result = MONLIGHT_RETRY_SCHEDULED;
            ml_core_set_last_error(&client->core, "sending metrics failed: %s",
                           response.detail);
            *retry_end = batch;
            retry_end = &batch->next;

            /* The server is down or throttling: the rest waits with it. */
            if (response.status == MONLIGHT_CONNECT_FAILED ||
                response.status == MONLIGHT_RATE_LIMITED) {
                for (ml_batch *rest = list; rest; rest = rest->next)
                    rest->next_attempt = batch->next_attempt;
                *retry_end = list;
                list = NULL;
            }
            continue;
        }

        /* A server that timed out on this batch would time out on the
         * next ones too: they wait, unsent, for the next flush, so that a
         * flush takes at most about one timeout. */
        if (response.status == MONLIGHT_TIMED_OUT && list) {
            *retry_end = list;
            list = NULL;
        }

        bool aborted = response.status == MONLIGHT_ABORTED;
        atomic_fetch_add(aborted ? &client->core.dropped : &client->core.failed,
                         batch->count);
        ml_log(&client->core.config.logger, &client->core.limiter, MONLIGHT_LOG_WARNING,
               "metrics: sending %u metrics to %s failed: %s; %s", batch->count,
               client->core.config.display_url, response.detail,
               aborted ? "dropped at the shutdown deadline" : "not retried");
        ml_core_set_last_error(&client->core, "sending metrics failed: %s", response.detail);
        ml_batch_free(batch);
    }
    ml_buf_free(&body);

    pthread_mutex_lock(&client->core.lock);
    client->in_flight -= taken_count;
    if (client->shut_down && retry) {
        /* Shut down while this send was running: shutdown's own flush has
         * already run, so these cannot wait for a retry. */
        atomic_fetch_add(&client->core.dropped, batch_list_count(retry));
        free_batch_list(retry);
        retry = NULL;
    }
    requeue_locked(client, retry);
    /* The flush thread recomputes when to wake for the requeued batches. */
    pthread_cond_signal(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);
    return result;
}

/* ------------------------------------------------------------------ */
/* Background thread and lifecycle                                    */
/* ------------------------------------------------------------------ */

static double earliest_retry_locked(const monlight_metrics_client *client)
{
    double earliest = 0;
    for (const ml_batch *batch = client->head; batch; batch = batch->next)
        if (batch->attempts > 0 &&
            (earliest == 0 || batch->next_attempt < earliest))
            earliest = batch->next_attempt;
    return earliest;
}

static void *flush_thread(void *argument)
{
    monlight_metrics_client *client = argument;

    pthread_mutex_lock(&client->core.lock);
    while (!client->stopping) {
        double now = ml_monotonic_now();
        double wake_at = client->next_flush;
        double retry_at = earliest_retry_locked(client);
        if (retry_at > 0 && retry_at < wake_at)
            wake_at = retry_at;
        if (client->flush_requested)
            wake_at = now;

        if (wake_at > now) {
            struct timespec until;
            ml_deadline_to_timespec(wake_at, &until);
            pthread_cond_timedwait(&client->core.wake, &client->core.lock, &until);
            continue;
        }

        if (now >= client->next_flush || client->flush_requested) {
            client->next_flush = now + client->core.config.flush_interval;
            client->flush_requested = false;
        }
        ml_batch *taken = take_batches_locked(client, true, now);
        if (!taken)
            continue;
        pthread_mutex_unlock(&client->core.lock);
        send_batches(client, taken);
        pthread_mutex_lock(&client->core.lock);
    }
    pthread_mutex_unlock(&client->core.lock);
    return NULL;
}

/* Starts the flush thread with every signal blocked, so that the host's
 * signal handlers keep running in the host's own threads. */
static monlight_status start_thread_locked(monlight_metrics_client *client)
{
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&client->thread, NULL, flush_thread, client);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);

    if (rc != 0)
        return MONLIGHT_THREAD_FAILED;
    client->thread_running = true;
    client->stopping = false;
    client->next_flush = ml_monotonic_now() + client->core.config.flush_interval;
    return MONLIGHT_OK;
}

monlight_status monlight_metrics_client_start(monlight_metrics_client *client)
{
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;

    monlight_status status = MONLIGHT_OK;
    pthread_mutex_lock(&client->core.lock);
    if (client->shut_down || client->shutting_down) {
        /* A thread started now would outlive the shutdown's join. */
        status = MONLIGHT_SHUT_DOWN;
        snprintf(client->core.last_error, sizeof client->core.last_error,
                 "start failed: the client is shut down");
    } else {
        client->started = true;
        if (!client->thread_running)
            status = start_thread_locked(client);
    }
    pthread_mutex_unlock(&client->core.lock);

    if (status == MONLIGHT_THREAD_FAILED) {
        ml_core_set_last_error(&client->core, "%s", "could not start the flush thread");
        ml_log(&client->core.config.logger, NULL, MONLIGHT_LOG_WARNING,
               "metrics: could not start the flush thread; metrics are sent "
               "only by flush() and at shutdown");
    }
    return status;
}

monlight_status monlight_metrics_client_flush(monlight_metrics_client *client)
{
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;

    pthread_mutex_lock(&client->core.lock);
    if (client->shut_down) {
        snprintf(client->core.last_error, sizeof client->core.last_error,
                 "flush failed: the client is shut down");
        pthread_mutex_unlock(&client->core.lock);
        return MONLIGHT_SHUT_DOWN;
    }
    ml_batch *taken = take_batches_locked(client, false, 0);
    pthread_mutex_unlock(&client->core.lock);

    if (!taken)
        return MONLIGHT_OK;
    return send_batches(client, taken);
}

/*
 * Sends what is left within the deadline: batches are tried in order,
 * retryable failures are retried while the backoff still fits before the
 * deadline, and whatever is left then is dropped and counted.
 */
static void final_flush(monlight_metrics_client *client, double deadline)
{
    pthread_mutex_lock(&client->core.lock);
    ml_batch *taken = take_batches_locked(client, false, 0);
    pthread_mutex_unlock(&client->core.lock);

    size_t count = batch_list_count(taken);
    if (count == 0)
        return;
    if (client->core.config.exit_deadline <= 0) {
        atomic_fetch_add(&client->core.dropped, count);
        free_batch_list(taken);
        pthread_mutex_lock(&client->core.lock);
        client->in_flight -= count;
        pthread_mutex_unlock(&client->core.lock);
        ml_log(&client->core.config.logger, NULL, MONLIGHT_LOG_WARNING,
               "metrics: %zu metrics dropped at shutdown (exit_deadline is 0)",
               count);
        return;
    }

    while (taken) {
        /* Retryable failures are requeued and taken again below. */
        send_batches(client, taken);
        pthread_mutex_lock(&client->core.lock);
        double retry_at = earliest_retry_locked(client);
        taken = NULL;
        if (client->head && retry_at < deadline && ml_monotonic_now() < deadline)
            taken = take_batches_locked(client, false, 0);
        pthread_mutex_unlock(&client->core.lock);
        if (taken)
            ml_sleep(retry_at - ml_monotonic_now());
    }

    pthread_mutex_lock(&client->core.lock);
    ml_batch *left = take_batches_locked(client, false, 0);
    client->in_flight -= batch_list_count(left);
    pthread_mutex_unlock(&client->core.lock);
    size_t left_count = batch_list_count(left);
    if (left_count) {
        atomic_fetch_add(&client->core.dropped, left_count);
        ml_log(&client->core.config.logger, NULL, MONLIGHT_LOG_WARNING,
               "metrics: %zu metrics could not be delivered before the "
               "shutdown deadline and were dropped",
               left_count);
    }
    free_batch_list(left);
}

static monlight_status shutdown_until(monlight_metrics_client *client,
                                      double deadline)
{
    pthread_mutex_lock(&client->core.lock);
    if (client->shutting_down) {
        /* Another thread is shutting down: wait for it to finish, so that
         * every caller returns after the final delivery. */
        while (!client->shut_down)
            pthread_cond_wait(&client->core.wake, &client->core.lock);
        pthread_mutex_unlock(&client->core.lock);
        return MONLIGHT_OK;
    }
    /* Records keep arriving until shut_down is set at the end; the final
     * flush sends them, and any later than that are dropped and counted. */
    client->shutting_down = true;
    client->stopping = true;
    bool joined_needed = client->thread_running;
    atomic_store(&client->core.transport->abort_at, deadline);
    pthread_cond_broadcast(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);

    /* The thread finishes its current send, aborted at the deadline. */
    if (joined_needed)
        pthread_join(client->thread, NULL);

    pthread_mutex_lock(&client->core.lock);
    client->thread_running = false;
    client->started = false;
    pthread_mutex_unlock(&client->core.lock);

    final_flush(client, deadline);

    /* Metrics recorded during the final flush are dropped and counted.
     * Nothing touches the client after the broadcast: a second shutdown
     * waiting for it may go on to free the client. */
    pthread_mutex_lock(&client->core.lock);
    client->shut_down = true;
    ml_batch *late = take_batches_locked(client, false, 0);
    size_t late_count = batch_list_count(late);
    client->in_flight -= late_count;
    atomic_fetch_add(&client->core.dropped, late_count);
    pthread_cond_broadcast(&client->core.wake);
    pthread_mutex_unlock(&client->core.lock);
    free_batch_list(late);
    return MONLIGHT_OK;
}

monlight_status monlight_metrics_client_shutdown(monlight_metrics_client *client)
{
    if (!client)
        return MONLIGHT_INVALID_ARGUMENT;
    return shutdown_until(client, ml_monotonic_now() + client->core.config.exit_deadline);
}

uint64_t monlight_metrics_client_stat(monlight_metrics_client *client,
                                      monlight_stat stat)
{
    if (!client)
        return 0;
    if (stat != MONLIGHT_STAT_PENDING)
        return ml_core_counter(&client->core, stat);
    pthread_mutex_lock(&client->core.lock);
    uint64_t pending = client->buffered + client->in_flight;
    pthread_mutex_unlock(&client->core.lock);
    return pending;
}

size_t monlight_metrics_client_last_error(monlight_metrics_client *client,
                                          char *buffer, size_t size)
{
    return ml_core_copy_last_error(client ? &client->core : NULL, buffer, size);
}

bool ml_metrics_client_check_batches(monlight_metrics_client *client,
                                     bool (*check)(const char *body,
                                                   size_t length,
                                                   size_t count))
{
    bool valid = true;
    ml_buf body;
    ml_buf_init(&body);

    pthread_mutex_lock(&client->core.lock);
    for (ml_batch *batch = client->head; batch && valid; batch = batch->next) {
        ml_batch_serialize(batch, client->project_part, &body);
        valid = !body.failed && body.length <= batch->body_size &&
                check(body.data, body.length, batch->count);
    }
    pthread_mutex_unlock(&client->core.lock);

    ml_buf_free(&body);
    return valid;
}

/* ------------------------------------------------------------------ */
/* Registry hooks: exit and fork                                      */
/* ------------------------------------------------------------------ */

static void hook_prepare_fork(ml_client *base)
{
    ml_core_prepare_fork(&((monlight_metrics_client *)base)->core);
}

static void hook_parent_after_fork(ml_client *base)
{
    ml_core_parent_after_fork(&((monlight_metrics_client *)base)->core);
}

/*
 * In a forked child: the flush thread does not exist there, and what the
 * parent buffered is the parent's to send, so the child starts empty. The
 * lock and condition variable are made anew; the thread is restarted by
 * the child's first record when start() had been called.
 */
static void hook_child_after_fork(ml_client *base)
{
    monlight_metrics_client *client = (monlight_metrics_client *)base;

    ml_core_child_after_fork(&client->core);
    free_batch_list(client->head);
    client->head = client->tail = NULL;
    client->buffered = 0;
    client->buffered_bytes = 0;
    client->in_flight = 0;
    window_reset(client);
    client->thread_running = false;
    client->stopping = false;
    client->flush_requested = false;
    /* A shutdown that was running in the parent does not run here. */
    client->shut_down = client->shut_down || client->shutting_down;
}

static void hook_shutdown(ml_client *base, double started)
{
    monlight_metrics_client *client = (monlight_metrics_client *)base;
    shutdown_until(client, started + client->core.config.exit_deadline);
}

static const ml_client_ops metrics_hooks = {
    hook_prepare_fork, hook_parent_after_fork, hook_child_after_fork,
    hook_shutdown,
};

/* ------------------------------------------------------------------ */
/* Creation and destruction                                           */
/* ------------------------------------------------------------------ */

/* Returns the ,"project":"..." text each metric ends with, or "" when the
 * client has no project; NULL when memory is exhausted. */
static char *make_project_part(const char *project)
{
    ml_buf part;
    ml_buf_init(&part);
    if (project) {
        ml_buf repaired;
        ml_buf_init(&repaired);
        ml_utf8_sanitize(&repaired, project, strlen(project));
        ml_buf_append_str(&part, ",\"project\":");
        ml_json_append_string(&part, repaired.data ? repaired.data : "", repaired.length);
        ml_buf_free(&repaired);
    }
    char *copy = part.failed ? NULL : strdup(ml_buf_cstr(&part));
    ml_buf_free(&part);
    return copy;
}

monlight_status monlight_metrics_client_new(monlight_options *options,
                                            monlight_metrics_client **out)
{
    if (!out)
        return MONLIGHT_INVALID_ARGUMENT;
    *out = NULL;
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;

    monlight_metrics_client *client = calloc(1, sizeof *client);
    if (!client) {
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }
    monlight_status status = ml_core_init(&client->core, options, "/api/metrics",
                                          &metrics_hooks);
    if (status != MONLIGHT_OK) {
        free(client);
        return status;
    }
    client->project_part = make_project_part(client->core.config.project);
    if (!client->project_part) {
        ml_core_destroy(&client->core);
        free(client);
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }
    client->project_part_length = strlen(client->project_part);

    /* Dropping at the cap works batch by batch, so batches are no larger
     * than the cap. */
    client->batch_limit = client->core.config.max_buffered < ML_METRICS_BATCH_MAX
                              ? (uint32_t)client->core.config.max_buffered
                              : ML_METRICS_BATCH_MAX;
    ml_registry_add(&client->core.registry);
    *out = client;
    return MONLIGHT_OK;
}

void monlight_metrics_client_free(monlight_metrics_client *client)
{
    if (!client)
        return;
    ml_registry_remove(&client->core.registry);
    monlight_metrics_client_shutdown(client);

    free_batch_list(client->head);
    free(client->window_series);
    free(client->window_names);
    free(client->project_part);
    ml_core_destroy(&client->core);
    free(client);
}
