/*
 * monlight.h: the C API of libmonlight, the monlight telemetry engine.
 *
 * libmonlight reports application errors to a monlight error tracker and
 * metrics to a monlight metrics collector (JSON over HTTP). It validates
 * and buffers what the application records, and delivers it from a
 * background thread or, on request, from the calling thread.
 *
 * Conventions that hold for every function unless its comment says
 * otherwise:
 *
 * - Thread safety: every function may be called from any thread at any
 *   time, concurrently, on the same handle. The exceptions are the *_free
 *   functions (no other call on that handle may run or follow) and the
 *   options setters (an options object belongs to one thread at a time).
 * - Strings: every string argument has a pointer-and-length form; lengths
 *   are in bytes, the bytes need not be NUL-terminated and may contain NUL
 *   bytes and invalid UTF-8 (which are escaped or replaced on the wire).
 *   A NULL pointer with a length of 0 is the empty string.
 * - Ownership: the library copies every string and array it is given
 *   before the call returns; the caller keeps ownership of its arguments.
 *   Pointers the library returns stay owned by the library, for as long as
 *   each comment says.
 * - Errors: functions that can fail return a monlight_status. Nothing in
 *   the library aborts or exits the process, and nothing prints: warnings
 *   go to the log callback of the client (see monlight_log_fn).
 * - Blocking: only monlight_error_client_send(),
 *   monlight_metrics_client_flush() and the shutdown and free functions
 *   wait on the network, each for at most the documented bound. Every
 *   other function returns after a short, bounded critical section.
 *
 * The ABI is stable within a major version: enum values are only ever
 * appended, and no structure is part of the ABI except monlight_label,
 * which is frozen.
 */
#ifndef MONLIGHT_H
#define MONLIGHT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A program that compiles the engine into its own shared object (a
 * language extension) may define MONLIGHT_API as empty to keep these
 * symbols private to it. */
#ifndef MONLIGHT_API
#if defined(__GNUC__) && __GNUC__ >= 4
#define MONLIGHT_API __attribute__((visibility("default")))
#else
#define MONLIGHT_API
#endif
#endif

/* ------------------------------------------------------------------ */
/* Version                                                            */
/* ------------------------------------------------------------------ */

#define MONLIGHT_VERSION_MAJOR 0
#define MONLIGHT_VERSION_MINOR 1
#define MONLIGHT_VERSION_PATCH 0
#define MONLIGHT_VERSION_STRING "0.1.0"

/* The version number as one integer, 0xMMmmpp, comparable with <. */
#define MONLIGHT_VERSION_NUMBER \
    ((MONLIGHT_VERSION_MAJOR << 16) | (MONLIGHT_VERSION_MINOR << 8) | \
     MONLIGHT_VERSION_PATCH)

/* Returns the version string of the library loaded at run time, such as
 * "0.1.0". A binding compares it with MONLIGHT_VERSION_STRING to detect a
 * header/library mismatch. The string is static. */
MONLIGHT_API const char *monlight_version(void);

/* ------------------------------------------------------------------ */
/* Status codes                                                       */
/* ------------------------------------------------------------------ */

/*
 * The single list of status codes: name, value, default message. New codes
 * are appended; values never change.
 */
#define MONLIGHT_STATUS_LIST(X)                                              \
    X(OK, 0, "success")                                                      \
    X(INVALID_ARGUMENT, 1, "invalid argument")                               \
    X(NO_MEMORY, 2, "out of memory")                                         \
    X(CONNECT_FAILED, 3, "could not connect to the server")                  \
    X(TIMED_OUT, 4, "request timed out")                                     \
    X(HTTP_ERROR, 5, "server answered with an error status")                 \
    X(RATE_LIMITED, 6, "server rate limit exceeded")                         \
    X(TRANSPORT_FAILED, 7, "request failed")                                 \
    X(SHUT_DOWN, 8, "client is shut down")                                   \
    X(QUEUE_FULL, 9, "queue is full, oldest item dropped")                   \
    X(THREAD_FAILED, 10, "could not start a background thread")              \
    X(ABORTED, 11, "request aborted at the exit deadline")                   \
    X(RETRY_SCHEDULED, 12, "not delivered yet, retry scheduled in background")

#define MONLIGHT_STATUS_ENUM_ENTRY(name, value, message) MONLIGHT_##name = value,
typedef enum monlight_status {
    MONLIGHT_STATUS_LIST(MONLIGHT_STATUS_ENUM_ENTRY)
} monlight_status;
#undef MONLIGHT_STATUS_ENUM_ENTRY

/* Returns the name of a status ("OK", "TIMED_OUT", ...) or "UNKNOWN".
 * The string is static. */
MONLIGHT_API const char *monlight_status_name(monlight_status status);

/* Returns the default message of a status. The string is static. The
 * message specific to a failed call is available from the handle, see
 * monlight_error_client_last_error(). */
MONLIGHT_API const char *monlight_status_message(monlight_status status);

/* ------------------------------------------------------------------ */
/* Logging                                                            */
/* ------------------------------------------------------------------ */

typedef enum monlight_log_level {
    MONLIGHT_LOG_DEBUG = 10,
    MONLIGHT_LOG_INFO = 20,
    MONLIGHT_LOG_WARNING = 30,
    MONLIGHT_LOG_ERROR = 40
} monlight_log_level;

/*
 * A log callback, set per client with MONLIGHT_OPT_LOG_CALLBACK. The engine
 * calls it for every warning it produces (failed deliveries, rejected
 * input, dropped data), from whichever thread produced the warning: an
 * application thread or the client's background thread. `message` is a
 * NUL-terminated line without a trailing newline, valid only during the
 * call; it never contains the API key. The callback must not call back
 * into the same client. Without a callback, warnings are written to stderr
 * with a "monlight: " prefix.
 */
typedef void (*monlight_log_fn)(monlight_log_level level, const char *message,
                                void *user_data);

/* ------------------------------------------------------------------ */
/* Options                                                            */
/* ------------------------------------------------------------------ */

/*
 * An options object collects a client's configuration before the client
 * is created. The client copies it, so one object can create several
 * clients, and the caller frees it. A client ignores the options its kind
 * does not use.
 */
typedef struct monlight_options monlight_options;

typedef enum monlight_option {
    /* Strings. */
    MONLIGHT_OPT_BASE_URL = 1,      /* required: http:// or https:// URL */
    MONLIGHT_OPT_API_KEY = 2,       /* required: sent as X-API-Key */
    MONLIGHT_OPT_PROJECT = 3,       /* errors: default "default";
                                       metrics: default none */
    MONLIGHT_OPT_ENVIRONMENT = 4,   /* errors: default "prod" */
    MONLIGHT_OPT_CA_BUNDLE = 5,     /* path to a CA bundle for https */

    /* Numbers, set with monlight_options_set_number(). */
    MONLIGHT_OPT_TIMEOUT = 20,        /* seconds for a whole request;
                                         default 5 */
    MONLIGHT_OPT_FLUSH_INTERVAL = 21, /* metrics: seconds between flushes;
                                         default 10 */
    MONLIGHT_OPT_MAX_BUFFERED = 22,   /* metrics kept for delivery and
                                         retry; default 100000 */
    MONLIGHT_OPT_MAX_QUEUED = 23,     /* error reports kept for delivery and
                                         retry; default 1000 */
    MONLIGHT_OPT_EXIT_DEADLINE = 24,  /* seconds that delivery at exit,
                                         shutdown or free may take;
                                         default 3 */
    MONLIGHT_OPT_MAX_LABEL_SETS = 25, /* metrics: distinct label sets per
                                         metric name per flush window;
                                         default 1000 */
    MONLIGHT_OPT_BACKGROUND_RETRY = 26, /* errors: 1 (default) hands a
                                           report that failed to send
                                           synchronously with a retryable
                                           error to the background queue;
                                           0 gives it up */
    MONLIGHT_OPT_RETRY_MAX_DELAY = 27,  /* seconds, cap of the retry
                                           backoff; default 60 */
    MONLIGHT_OPT_MAX_BUFFERED_BYTES = 28 /* metrics: bytes of JSON kept for
                                           delivery and retry, so that huge
                                           labels cannot exhaust memory;
                                           default 64 MiB */
} monlight_option;

/* Creates an options object with every default set, or NULL when memory
 * is exhausted. Free it with monlight_options_free(). */
MONLIGHT_API monlight_options *monlight_options_new(void);

/* Frees an options object. NULL is allowed and does nothing. */
MONLIGHT_API void monlight_options_free(monlight_options *options);

/*
 * Sets a string option. Returns MONLIGHT_INVALID_ARGUMENT when the option
 * is not a string option or the value is invalid (a base URL that is not
 * http:// or https://, an API key with control bytes that could inject a
 * header), with the reason in monlight_options_last_error().
 */
MONLIGHT_API monlight_status monlight_options_set_string(
    monlight_options *options, monlight_option option, const char *value,
    size_t length);

/* Sets a number option. Returns MONLIGHT_INVALID_ARGUMENT when the option
 * is not a number option or the value is out of range (not finite, or not
 * positive where a duration or a count is expected). */
MONLIGHT_API monlight_status monlight_options_set_number(
    monlight_options *options, monlight_option option, double value);

/* Adds a header name that error reports must never carry, on top of
 * authorization, cookie, set-cookie and x-api-key. Compared without case. */
MONLIGHT_API monlight_status monlight_options_add_excluded_header(
    monlight_options *options, const char *name, size_t length);

/* Sets the log callback and its user data (see monlight_log_fn). NULL
 * restores the default of writing warnings to stderr. */
MONLIGHT_API monlight_status monlight_options_set_log(
    monlight_options *options, monlight_log_fn callback, void *user_data);

/* Returns the message of the last failed call on this options object, or
 * "" when none failed. Valid until the next call on the object. */
MONLIGHT_API const char *monlight_options_last_error(
    const monlight_options *options);

/* ------------------------------------------------------------------ */
/* Counters about a client's own work                                 */
/* ------------------------------------------------------------------ */

typedef enum monlight_stat {
    MONLIGHT_STAT_DELIVERED = 0, /* items the server accepted */
    MONLIGHT_STAT_DROPPED = 1,   /* items discarded without a send: refused
                                    at record time, over a cap, trimmed
                                    out of a full queue, or unsent at
                                    the exit deadline */
    MONLIGHT_STAT_RETRIED = 2,   /* send attempts that were repeated */
    MONLIGHT_STAT_FAILED = 3,    /* items the server rejected or that were
                                    lost in a request that cannot be
                                    retried safely */
    MONLIGHT_STAT_PENDING = 4    /* items buffered or queued right now */
} monlight_stat;

/* ------------------------------------------------------------------ */
/* Error client                                                       */
/* ------------------------------------------------------------------ */

typedef struct monlight_error_client monlight_error_client;

/*
 * An error report under construction. Fields are copied into it; the
 * report can be sent several times and is freed by the caller.
 */
typedef struct monlight_report monlight_report;

typedef enum monlight_report_field {
    MONLIGHT_FIELD_EXCEPTION_TYPE = 1, /* required */
    MONLIGHT_FIELD_MESSAGE = 2,        /* required, may be empty */
    MONLIGHT_FIELD_TRACEBACK = 3,      /* required, may be empty */
    MONLIGHT_FIELD_REQUEST_URL = 4,
    MONLIGHT_FIELD_REQUEST_METHOD = 5,
    MONLIGHT_FIELD_USER_ID = 6,
    MONLIGHT_FIELD_EXTRA_JSON = 7      /* JSON text of an object */
} monlight_report_field;

/* Creates an empty report, or NULL when memory is exhausted. */
MONLIGHT_API monlight_report *monlight_report_new(void);

/* Frees a report. NULL is allowed and does nothing. */
MONLIGHT_API void monlight_report_free(monlight_report *report);

/*
 * Sets a field of a report, replacing any earlier value. An EXTRA_JSON
 * value that is not the JSON text of an object is still sent, so that
 * nothing is lost: other JSON as {"value": <it>}, text that is not JSON as
 * {"text": "<it>"}. A warning is logged when the report is built.
 */
MONLIGHT_API monlight_status monlight_report_set(monlight_report *report,
                                                 monlight_report_field field,
                                                 const char *value,
                                                 size_t length);

/* Adds a request header to a report. Headers are sent in the order added;
 * excluded headers are removed when the report is sent. */
MONLIGHT_API monlight_status monlight_report_add_header(
    monlight_report *report, const char *name, size_t name_length,
    const char *value, size_t value_length);

/*
 * Creates an error client from the options (which must have a base URL and
 * an API key). On failure returns the status, leaves *client NULL and
 * stores the reason in monlight_options_last_error(options). No thread and
 * no connection is started until the first report.
 */
MONLIGHT_API monlight_status monlight_error_client_new(
    monlight_options *options, monlight_error_client **client);

/*
 * Sends a report from the calling thread and waits for the response, at
 * most the client's timeout. Returns MONLIGHT_OK when the tracker stored it.
 * When the failure is one where nothing can have reached the server
 * (connection refused, 429, 503) and background retry is on, the report is
 * handed to the background queue and MONLIGHT_RETRY_SCHEDULED is returned.
 * Other failures return their status; every failure also logs a warning.
 */
MONLIGHT_API monlight_status monlight_error_client_send(
    monlight_error_client *client, const monlight_report *report);

/*
 * Called once per queued report when its delivery has ended: `status` is
 * MONLIGHT_OK when stored, else the final failure (after any retries, or
 * MONLIGHT_QUEUE_FULL when it was dropped for a newer report, or
 * MONLIGHT_ABORTED when the exit deadline passed). Runs on the client's
 * background thread, or in the thread that shuts the client down.
 */
typedef void (*monlight_report_done_fn)(monlight_status status,
                                        void *user_data);

/*
 * Queues a report for the background thread and returns at once; the
 * thread is started on first use. `done` may be NULL. Returns MONLIGHT_OK
 * when queued (when the queue was full, the oldest report was dropped to
 * make room and counted). When the background thread cannot be started
 * the report is sent from the calling thread instead.
 */
MONLIGHT_API monlight_status monlight_error_client_enqueue(
    monlight_error_client *client, const monlight_report *report,
    monlight_report_done_fn done, void *user_data);

/*
 * Delivers every queued report and stops the background thread, waiting
 * at most the exit deadline (the request in flight then is aborted and
 * what is left is dropped and counted). Afterwards send and enqueue return
 * MONLIGHT_SHUT_DOWN. Calling it again does nothing.
 */
MONLIGHT_API monlight_status monlight_error_client_shutdown(
    monlight_error_client *client);

/* Shuts the client down (see above) and frees it. NULL is allowed. */
MONLIGHT_API void monlight_error_client_free(monlight_error_client *client);

/* Returns one of the client's counters (see monlight_stat). In a forked
 * child every counter starts again from zero. */
MONLIGHT_API uint64_t monlight_error_client_stat(monlight_error_client *client,
                                                 monlight_stat stat);

/*
 * Copies the message of the last failed call on this client into buffer
 * (NUL-terminated, truncated to size) and returns its full length, or 0
 * when no call has failed yet. With several threads failing at once the
 * message is that of one of them; the status each call returns is exact.
 */
MONLIGHT_API size_t monlight_error_client_last_error(
    monlight_error_client *client, char *buffer, size_t size);

/* ------------------------------------------------------------------ */
/* Metrics client                                                     */
/* ------------------------------------------------------------------ */

typedef struct monlight_metrics_client monlight_metrics_client;

typedef enum monlight_metric_type {
    MONLIGHT_COUNTER = 1,
    MONLIGHT_HISTOGRAM = 2,
    MONLIGHT_GAUGE = 3
} monlight_metric_type;

/* One label: a key and a value with their lengths. Frozen: this layout is
 * part of the ABI. */
typedef struct monlight_label {
    const char *key;
    size_t key_length;
    const char *value;
    size_t value_length;
} monlight_label;

/* Creates a metrics client from the options (base URL and API key
 * required). Nothing runs in the background until monlight_metrics_client
 * _start(). On failure see monlight_error_client_new(). */
MONLIGHT_API monlight_status monlight_metrics_client_new(
    monlight_options *options, monlight_metrics_client **client);

/*
 * Records one metric: takes the timestamp now (UTC, whole seconds),
 * appends to the buffer and returns. Labels keep the order given. Returns
 * MONLIGHT_INVALID_ARGUMENT (and logs a warning naming the metric) for a
 * non-finite value, an empty name or one over 200 bytes, or an unknown
 * type; such a metric is counted as dropped and nothing else is affected.
 */
MONLIGHT_API monlight_status monlight_metrics_client_record(
    monlight_metrics_client *client, monlight_metric_type type,
    const char *name, size_t name_length, double value,
    const monlight_label *labels, size_t label_count);

/*
 * Records one metric whose labels are given as the JSON text of an object
 * of strings (such as {"method":"GET"}), which bindings build once and
 * reuse; it is sent as given, so key order is kept. The text is checked
 * the first time a label set is seen in a flush window; text that is not
 * such an object (values of other types, raw control characters, invalid
 * UTF-8, trailing bytes) is rejected like any bad argument. A NULL or
 * empty text means no labels.
 */
MONLIGHT_API monlight_status monlight_metrics_client_record_json(
    monlight_metrics_client *client, monlight_metric_type type,
    const char *name, size_t name_length, double value,
    const char *labels_json, size_t labels_json_length);

/* Shorthands for monlight_metrics_client_record() with NUL-terminated
 * names. */
MONLIGHT_API monlight_status monlight_counter(monlight_metrics_client *client,
                                              const char *name, double value,
                                              const monlight_label *labels,
                                              size_t label_count);
MONLIGHT_API monlight_status monlight_histogram(
    monlight_metrics_client *client, const char *name, double value,
    const monlight_label *labels, size_t label_count);
MONLIGHT_API monlight_status monlight_gauge(monlight_metrics_client *client,
                                            const char *name, double value,
                                            const monlight_label *labels,
                                            size_t label_count);

/*
 * Starts the background thread that flushes every flush interval and
 * retries failed batches. Calling it again does nothing. In a forked
 * child the thread is restarted by the first record call.
 */
MONLIGHT_API monlight_status monlight_metrics_client_start(
    monlight_metrics_client *client);

/*
 * Sends everything buffered now from the calling thread, as POSTs of at
 * most 1000 metrics and 512 KiB each, waiting at most the timeout per
 * POST. Returns MONLIGHT_OK when every batch was accepted or nothing was
 * buffered. Batches that failed with a retryable error stay buffered for
 * the next flush (MONLIGHT_RETRY_SCHEDULED); others are counted as failed.
 */
MONLIGHT_API monlight_status monlight_metrics_client_flush(
    monlight_metrics_client *client);

/* Stops the background thread and flushes, within the exit deadline. Later
 * record calls return MONLIGHT_SHUT_DOWN. Calling it again does nothing. */
MONLIGHT_API monlight_status monlight_metrics_client_shutdown(
    monlight_metrics_client *client);

/* Shuts the client down (see above) and frees it. NULL is allowed. */
MONLIGHT_API void monlight_metrics_client_free(
    monlight_metrics_client *client);

/* Returns one of the client's counters (see monlight_stat). */
MONLIGHT_API uint64_t monlight_metrics_client_stat(
    monlight_metrics_client *client, monlight_stat stat);

/* Same as monlight_error_client_last_error(), for a metrics client. */
MONLIGHT_API size_t monlight_metrics_client_last_error(
    monlight_metrics_client *client, char *buffer, size_t size);

/* ------------------------------------------------------------------ */
/* Process-wide                                                       */
/* ------------------------------------------------------------------ */

/*
 * Delivers what every live client still holds, within each client's exit
 * deadline, and shuts them down; starts no thread. The library calls it
 * from an atexit() handler; a binding whose runtime tears down its log
 * callbacks before atexit() (Python, Ruby) calls it earlier, from its own
 * exit hook. Calling it again does nothing more.
 */
MONLIGHT_API void monlight_shutdown_all(void);

#ifdef __cplusplus
}
#endif

#endif /* MONLIGHT_H */
