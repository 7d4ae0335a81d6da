/*
 * support.h: what the C tests share: a contract receiver started as a
 * child process on a loopback port, its record file read back as JSON,
 * and a log callback that keeps the engine's warnings for assertions.
 */
#ifndef MONLIGHT_TEST_SUPPORT_H
#define MONLIGHT_TEST_SUPPORT_H

#include "monlight.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TEST_API_KEY "test-key-123"

typedef struct test_receiver {
    pid_t pid;
    int port;
    bool keep_alive;
    char url[64];
    char record_path[256];
    char port_path[256];
} test_receiver;

/* Starts receiver.py; port 0 picks a free port. Returns false on failure
 * (with the reason on stderr). */
bool receiver_start(test_receiver *receiver, int port, bool keep_alive);
/* Stops it (SIGTERM, then SIGKILL after two seconds) and removes files. */
void receiver_stop(test_receiver *receiver);
/* POSTs a JSON object to /__control__; true on 200. */
bool receiver_control(const test_receiver *receiver, const char *json);
/* Empties the record file between tests. */
bool receiver_clear(const test_receiver *receiver);
/* Returns every recorded event as a cJSON array (caller deletes). */
cJSON *receiver_events(const test_receiver *receiver);
/* Counts events of a kind ("metrics", "error", "rejected", "dropped",
 * "violation"). */
size_t receiver_count_events(const test_receiver *receiver, const char *kind);
/* Returns every accepted metric item as one array (caller deletes). */
cJSON *receiver_metrics(const test_receiver *receiver);
/* Polls until at least `count` metrics were accepted or the timeout. */
bool receiver_wait_metrics(const test_receiver *receiver, size_t count,
                           double timeout);

/* A log callback collecting lines; user_data must be a test_log. */
typedef struct test_log test_log;
test_log *test_log_new(void);
void test_log_free(test_log *log);
void test_log_callback(monlight_log_level level, const char *message,
                       void *user_data);
/* Returns the number of collected lines containing `needle`. */
size_t test_log_count(test_log *log, const char *needle);
size_t test_log_total(test_log *log);
/* Returns true when any collected line contains `needle`. */
bool test_log_contains(test_log *log, const char *needle);
void test_log_clear(test_log *log);

/* Options pointing at the receiver with the test key and the log. */
monlight_options *test_options(const test_receiver *receiver, test_log *log);

double test_now(void);

#endif
