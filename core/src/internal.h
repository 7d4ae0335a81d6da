/*
 * internal.h: declarations shared by the engine's source files and its
 * tests. Nothing here is part of the public API; internal names shared
 * across files carry the ml_ prefix and stay hidden in the shared library.
 *
 * Lock order, for the whole engine: the client registry lock (registry.c),
 * then a client's own lock, then its transport's handle-pool lock. No
 * lock is ever held while a request is on the network.
 */
#ifndef MONLIGHT_INTERNAL_H
#define MONLIGHT_INTERNAL_H

#include "monlight.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ML_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define ML_PRINTF(fmt, args)
#endif

/* Limits of the monlight services, in bytes of UTF-8. */
#define ML_ERROR_BODY_MAX 262144u
#define ML_METRICS_BODY_MAX 524288u
#define ML_METRICS_BATCH_MAX 1000u
#define ML_PROJECT_MAX 100u
#define ML_EXCEPTION_TYPE_MAX 200u
#define ML_METRIC_NAME_MAX 200u

/* Bytes of an error response that a warning quotes. */
#define ML_ANSWER_QUOTE_MAX 200u

/* ------------------------------------------------------------------ */
/* Growable byte buffer (buffer.c)                                    */
/* ------------------------------------------------------------------ */

typedef struct ml_buf {
    char *data;
    size_t length;
    size_t capacity;
    bool failed;   /* an allocation failed; later appends do nothing */
    bool borrowed; /* data is the caller's storage, not to be freed */
} ml_buf;

void ml_buf_init(ml_buf *buf);
/* Starts a buffer in caller-provided storage (usually on the stack); it
 * moves to the heap only if it outgrows it. */
void ml_buf_init_with(ml_buf *buf, char *storage, size_t size);
void ml_buf_free(ml_buf *buf);
void ml_buf_clear(ml_buf *buf);
bool ml_buf_reserve(ml_buf *buf, size_t extra);
void ml_buf_append(ml_buf *buf, const void *data, size_t length);
void ml_buf_append_char(ml_buf *buf, char c);
void ml_buf_append_str(ml_buf *buf, const char *s);
void ml_buf_printf(ml_buf *buf, const char *format, ...) ML_PRINTF(2, 3);
/* Returns the contents as a NUL-terminated string owned by the buffer. */
const char *ml_buf_cstr(ml_buf *buf);

/* ------------------------------------------------------------------ */
/* UTF-8 and JSON text (json.c)                                       */
/* ------------------------------------------------------------------ */

/* Returns true when the bytes are valid UTF-8 (NUL bytes allowed). */
bool ml_utf8_valid(const char *s, size_t length);

/* Appends the bytes to out with every invalid UTF-8 sequence replaced by
 * U+FFFD, so that the result is always valid UTF-8. */
void ml_utf8_sanitize(ml_buf *out, const char *s, size_t length);

/* Returns the longest length <= max that ends on a character boundary of
 * the valid UTF-8 text s. */
size_t ml_utf8_cut(const char *s, size_t length, size_t max);

/* Returns the number of bytes that ml_json_append_string() writes for the
 * valid UTF-8 text s, quotes included. */
size_t ml_json_string_size(const char *s, size_t length);

/* Appends s as a quoted JSON string. s must be valid UTF-8 (run it
 * through ml_utf8_sanitize() first when it comes from outside). */
void ml_json_append_string(ml_buf *out, const char *s, size_t length);

/* Returns true when the text is a JSON object whose values are all
 * strings, by the strict grammar the services parse with: no trailing
 * bytes, no raw control characters, valid UTF-8. */
bool ml_labels_json_valid(const char *s, size_t length);

/* Appends a finite double as a JSON number, integers without a fraction. */
void ml_json_append_number(ml_buf *out, double value);

/* Writes "YYYY-MM-DDTHH:MM:SSZ" (20 bytes plus NUL) for a UTC time. */
void ml_format_timestamp(int64_t seconds, char out[21]);

/* ------------------------------------------------------------------ */
/* Options and configuration (options.c)                              */
/* ------------------------------------------------------------------ */

typedef struct ml_logger {
    monlight_log_fn callback;
    void *user_data;
} ml_logger;

struct monlight_options {
    char *base_url; /* normalised: no trailing slash */
    char *api_key;
    char *project;  /* NULL when not set */
    char *environment;
    char *ca_bundle;
    double timeout;
    double flush_interval;
    double max_buffered;
    double max_queued;
    double exit_deadline;
    double max_label_sets;
    double background_retry;
    double retry_max_delay;
    double max_buffered_bytes;
    char **excluded_headers; /* lower-cased copies */
    size_t excluded_count;
    ml_logger logger;
    char last_error[256];
};

/* The options a client keeps: a private copy made at creation. */
typedef struct ml_config {
    char *base_url;
    char *endpoint_url; /* base_url + "/api/errors" or "/api/metrics" */
    char *display_url;  /* endpoint_url without user:password@, for logs */
    char *api_key;
    char *project;
    char *environment;
    char *ca_bundle;
    double timeout;
    double flush_interval;
    size_t max_buffered;
    size_t max_queued;
    double exit_deadline;
    size_t max_label_sets;
    bool background_retry;
    double retry_max_delay;
    size_t max_buffered_bytes;
    char **excluded_headers;
    size_t excluded_count;
    ml_logger logger;
} ml_config;

/* Checks that the options name a server and a key and copies them into
 * config, appending path to the base URL. Returns the status and stores
 * the reason in options->last_error on failure. */
monlight_status ml_config_init(ml_config *config, monlight_options *options,
                               const char *path);
void ml_config_free(ml_config *config);

/* Returns true when a header name is one that must never leave the
 * process: the PII names or one of the client's excluded headers. */
bool ml_header_excluded(const ml_config *config, const char *name,
                        size_t length);

/* ------------------------------------------------------------------ */
/* Logging (log.c)                                                    */
/* ------------------------------------------------------------------ */

/*
 * Rate limit for repeated warnings: at most ML_LOG_BURST warnings per
 * minute per client; the rest are counted and reported in one line when
 * the next minute starts, so that a bad metric recorded in a loop cannot
 * flood the host's log.
 */
#define ML_LOG_BURST 20

typedef struct ml_log_limiter {
    pthread_mutex_t lock;
    int64_t window_start;
    unsigned emitted;
    unsigned suppressed;
} ml_log_limiter;

void ml_log_limiter_init(ml_log_limiter *limiter);
void ml_log_limiter_destroy(ml_log_limiter *limiter);

/* Hands one formatted line to the logger, subject to the limiter (which
 * may be NULL for lines that must always be logged). */
void ml_log(const ml_logger *logger, ml_log_limiter *limiter,
            monlight_log_level level, const char *format, ...) ML_PRINTF(4, 5);

/* ------------------------------------------------------------------ */
/* Clock and randomness (clock.c)                                     */
/* ------------------------------------------------------------------ */

/* Seconds on the monotonic clock. */
double ml_monotonic_now(void);
/* Whole seconds of UTC wall-clock time, cheap enough for every record. */
int64_t ml_wall_seconds(void);
/* Sleeps for the given seconds (fractions allowed). */
void ml_sleep(double seconds);
/* Returns a pseudo-random double in [0, 1), for retry jitter. */
double ml_random_unit(void);
/* Sets an absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait. */
void ml_deadline_to_timespec(double monotonic_seconds, struct timespec *ts);
/* Initialises a condition variable that waits on CLOCK_MONOTONIC. */
int ml_cond_init_monotonic(pthread_cond_t *cond);

/* Returns the delay before retry number `attempt` (1 for the first retry):
 * exponential from one second with full jitter, capped at max_delay, or
 * the server's retry_after when it gave one. */
double ml_backoff_delay(int attempt, double max_delay, double retry_after);

/* Bounds applied to a server's retry_after, in seconds. */
#define ML_RETRY_AFTER_MIN 1.0
#define ML_RETRY_AFTER_MAX 3600.0

/* ------------------------------------------------------------------ */
/* Transport (transport.c)                                            */
/* ------------------------------------------------------------------ */

/* What one request produced, already sorted into the engine's terms. */
typedef struct ml_response {
    monlight_status status; /* MONLIGHT_OK on a 2xx response */
    bool retryable;         /* nothing can have reached the server */
    long http_status;       /* 0 when no response arrived */
    double retry_after;     /* seconds the server asked to wait, or 0 */
    char answer[ML_ANSWER_QUOTE_MAX + 1]; /* start of the response body */
    char detail[256];       /* one-line description for warnings */
} ml_response;

typedef struct ml_transport ml_transport;

/*
 * A transport sends requests for one client. The libcurl transport is the
 * only one today. It keeps a pool of connections, so each thread that
 * sends at the same moment has its own reusable connection.
 */
typedef struct ml_transport_ops {
    /* POSTs body to url and waits for the response or the timeout. */
    void (*post)(ml_transport *transport, const char *url, const char *body,
                 size_t length, ml_response *response);
    /* GETs url without the API key (health checks). */
    void (*get)(ml_transport *transport, const char *url,
                ml_response *response);
    /* Forgets connections inherited from a parent process, without
     * touching their sockets, which still belong to the parent. */
    void (*after_fork_child)(ml_transport *transport);
    void (*prepare_fork)(ml_transport *transport);
    void (*parent_after_fork)(ml_transport *transport);
    void (*destroy)(ml_transport *transport);
} ml_transport_ops;

struct ml_transport {
    const ml_transport_ops *ops;
    /* Monotonic time after which requests in flight are aborted; 0 when
     * there is no deadline. Set when the client shuts down. */
    _Atomic double abort_at;
};

/* Creates the libcurl transport for a client's configuration, or NULL. */
ml_transport *ml_curl_transport_new(const ml_config *config);

/* ------------------------------------------------------------------ */
/* Error reports (report.c)                                           */
/* ------------------------------------------------------------------ */

typedef struct ml_text {
    char *data;
    size_t length;
    bool set;
} ml_text;

typedef struct ml_header {
    ml_text name;
    ml_text value;
} ml_header;

struct monlight_report {
    ml_text exception_type;
    ml_text message;
    ml_text traceback;
    ml_text request_url;
    ml_text request_method;
    ml_text user_id;
    ml_text extra_json;
    ml_header *headers;
    size_t header_count;
    size_t header_capacity;
};

/*
 * Builds the JSON body of an error report into out, following the error
 * tracker's rules: PII headers removed, limits applied at character
 * boundaries, the whole body at most max_body bytes (trimmed, not
 * refused), and always valid UTF-8 and valid JSON. Warnings about the
 * input go to the logger. Returns MONLIGHT_NO_MEMORY or MONLIGHT_OK.
 */
monlight_status ml_report_build(const monlight_report *report,
                                 const ml_config *config, size_t max_body,
                                 ml_buf *out, ml_log_limiter *limiter);

/* ------------------------------------------------------------------ */
/* Metric batches (batch.c)                                           */
/* ------------------------------------------------------------------ */

/* One recorded metric: 24 bytes, the text lives in its batch's series. */
typedef struct ml_entry {
    double value;
    int64_t timestamp;
    uint32_t series;
} ml_entry;

/* What identifies a series, as the application passed it. */
typedef struct ml_series_key {
    uint64_t hash; /* of type, name and label text */
    monlight_metric_type type;
    const char *name;
    size_t name_length;
    const char *labels_json; /* compact JSON object text, or empty */
    size_t labels_length;
} ml_series_key;

/*
 * The JSON text shared by every metric of one name, type and label set:
 * {"name":"...","type":"...","labels":{...} without the closing brace.
 * The label text is its last labels_length bytes, and when the name needed
 * no escaping (name_plain) it follows {"name":" verbatim, so a lookup can
 * compare the application's bytes without writing the text again.
 */
typedef struct ml_series {
    uint64_t hash;
    uint32_t offset; /* of the text in the batch's arena */
    uint32_t length;
    uint32_t name_length;
    uint32_t labels_length;
    uint8_t type;
    bool name_plain;
} ml_series;

/*
 * A batch is what one POST will carry: at most 1000 metrics whose JSON
 * body fits in 512 KiB. Metrics are appended to the newest batch until it
 * is full. A flush sends whole batches, and a batch that failed with a
 * retryable error is kept, whole, for the next attempt.
 */
typedef struct ml_batch {
    struct ml_batch *next;
    ml_entry *entries;
    uint32_t count;
    uint32_t capacity;
    ml_series *series;
    uint32_t series_count;
    uint32_t series_capacity;
    uint32_t *slots; /* open addressing: series index + 1, 0 = empty */
    uint32_t slot_count;
    ml_buf arena;
    size_t body_size;    /* bytes the JSON body will take, at most */
    int attempts;        /* failed sends so far */
    double next_attempt; /* monotonic time of the next retry, 0 = now */
} ml_batch;

ml_batch *ml_batch_new(void);
void ml_batch_free(ml_batch *batch);

/* Worst-case bytes one metric of a series adds to a batch body. */
size_t ml_entry_body_size(size_t series_length, size_t project_part);

/* Returns the index of the key's series in the batch, or UINT32_MAX when
 * it has none (or when its name needed escaping: see ml_series). */
uint32_t ml_batch_find(const ml_batch *batch, const ml_series_key *key);

/* Finds or adds the series of this key, whose text is given; returns its
 * index, or UINT32_MAX when memory is exhausted. */
uint32_t ml_batch_series(ml_batch *batch, const ml_series_key *key,
                         const char *text, size_t length);

/* Appends an entry; false when memory is exhausted. */
bool ml_batch_append(ml_batch *batch, uint32_t series, double value,
                     int64_t timestamp, size_t entry_size);

/* Serialises a batch as the JSON array the collector accepts. project_part
 * is the ,"project":"..." text or "" when the client has no project. */
void ml_batch_serialize(const ml_batch *batch, const char *project_part,
                        ml_buf *out);

/* Serialises every buffered batch of a client and passes each body to
 * check; returns false as soon as check does. For tests and fuzzing. */
bool ml_metrics_client_check_batches(monlight_metrics_client *client,
                                     bool (*check)(const char *body,
                                                   size_t length,
                                                   size_t count));

/* A 64-bit hash for hash tables, eight bytes per step, continued from
 * seed (ML_HASH_SEED to start). Not for anything an attacker could use. */
#define ML_HASH_SEED 0x9E3779B97F4A7C15ull
uint64_t ml_hash(uint64_t seed, const void *data, size_t length);

/* ------------------------------------------------------------------ */
/* Client registry, exit and fork (registry.c)                        */
/* ------------------------------------------------------------------ */

typedef struct ml_client ml_client;

typedef struct ml_client_ops {
    void (*prepare_fork)(ml_client *client);      /* takes its locks */
    void (*parent_after_fork)(ml_client *client); /* releases them */
    void (*child_after_fork)(ml_client *client);  /* releases, resets */
    /* Delivers at exit, within the client's exit deadline counted from
     * `started` (monotonic seconds). */
    void (*shutdown)(ml_client *client, double started);
} ml_client_ops;

struct ml_client {
    const ml_client_ops *ops;
    ml_client *prev;
    ml_client *next;
};

/*
 * The state both client kinds share. Each client struct starts with one,
 * so a pointer to the registry's ml_client is also one to the client.
 */
typedef struct ml_client_core {
    ml_client registry; /* first */
    ml_config config;
    ml_transport *transport;
    ml_log_limiter limiter;
    pthread_mutex_t lock; /* guards last_error and the client's own state */
    pthread_cond_t wake;  /* signals the client's background thread */
    char last_error[256];
    _Atomic uint64_t delivered;
    _Atomic uint64_t dropped;
    _Atomic uint64_t retried;
    _Atomic uint64_t failed;
} ml_client_core;

/* Sets up a zeroed core from the options, for the service path given
 * ("/api/errors"). On failure returns the status, with the reason in
 * options->last_error, and leaves nothing to free. */
monlight_status ml_core_init(ml_client_core *core, monlight_options *options,
                             const char *path, const ml_client_ops *ops);
void ml_core_destroy(ml_client_core *core);

/* Stores the message that monlight_*_last_error() returns, cut at the
 * buffer's size. Takes the core's lock. */
void ml_core_set_last_error(ml_client_core *core, const char *format, ...)
    ML_PRINTF(2, 3);
/* Implements monlight_*_last_error(); core may be NULL. */
size_t ml_core_copy_last_error(ml_client_core *core, char *buffer, size_t size);
/* Returns a counter; MONLIGHT_STAT_PENDING is the client kind's own. */
uint64_t ml_core_counter(ml_client_core *core, monlight_stat stat);

/* The kind-independent halves of the fork hooks. */
void ml_core_prepare_fork(ml_client_core *core);
void ml_core_parent_after_fork(ml_client_core *core);
void ml_core_child_after_fork(ml_client_core *core);

/* Runs the process-wide setup once (libcurl, atexit, pthread_atfork).
 * Returns false when libcurl could not be initialised. */
bool ml_global_init(void);

void ml_registry_add(ml_client *client);
void ml_registry_remove(ml_client *client);

#endif /* MONLIGHT_INTERNAL_H */
