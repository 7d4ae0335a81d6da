/*
 * record_cost.c: records N metrics with 3 labels through the engine's C
 * API, for counting instructions under callgrind and for timing.
 *
 *   record_cost record|json N [threads]
 *
 * "record" calls monlight_metrics_client_record() with three
 * monlight_label structs; "json" calls
 * monlight_metrics_client_record_json() with the same labels as JSON
 * text built once, as the Python binding does. The client is never
 * started and its buffer is large enough for every metric, so nothing is
 * dropped and nothing is sent while recording. At the end the buffer is
 * discarded: the client points at 127.0.0.1:9, where nothing listens,
 * and its exit deadline is 1 ms.
 *
 * It prints the nanoseconds per call (wall clock). With a thread count,
 * N calls are split over that many threads recording at once into the
 * same client, which shows the cost of contention on the client's lock.
 */
#define _POSIX_C_SOURCE 200809L
#include "monlight.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char metric_name[] = "http_requests_total";
static const char labels_json[] =
    "{\"method\":\"GET\",\"endpoint\":\"/users/{id}\",\"status\":\"200\"}";

typedef struct worker {
    monlight_metrics_client *client;
    bool use_json;
    long count;
    pthread_t thread;
} worker;

static void record_many(monlight_metrics_client *client, bool use_json,
                        long count)
{
    static const monlight_label labels[3] = {
        {"method", 6, "GET", 3},
        {"endpoint", 8, "/users/{id}", 11},
        {"status", 6, "200", 3},
    };
    size_t name_length = sizeof metric_name - 1;
    size_t json_length = sizeof labels_json - 1;

    for (long i = 0; i < count; i++) {
        if (use_json)
            monlight_metrics_client_record_json(client, MONLIGHT_COUNTER,
                                                metric_name, name_length, 1.0,
                                                labels_json, json_length);
        else
            monlight_metrics_client_record(client, MONLIGHT_COUNTER,
                                           metric_name, name_length, 1.0,
                                           labels, 3);
    }
}

static void *run_worker(void *argument)
{
    worker *w = argument;
    record_many(w->client, w->use_json, w->count);
    return NULL;
}

/* The buffer is discarded on purpose at the end; its warnings are noise. */
static void discard_log(monlight_log_level level, const char *message,
                        void *user_data)
{
    (void)level, (void)message, (void)user_data;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "record") != 0 && strcmp(argv[1], "json") != 0)) {
        fprintf(stderr, "usage: record_cost record|json N [threads]\n");
        return 2;
    }
    bool use_json = strcmp(argv[1], "json") == 0;
    long count = strtol(argv[2], NULL, 10);
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    if (count <= 0 || threads < 0 || threads > 64) {
        fprintf(stderr, "record_cost: N must be positive and threads 0 to 64\n");
        return 2;
    }

    monlight_options *options = monlight_options_new();
    static const char url[] = "http://127.0.0.1:9";
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, url, sizeof url - 1);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "bench", 5);
    monlight_options_set_number(options, MONLIGHT_OPT_MAX_BUFFERED, (double)count + 1000);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 0.001);
    monlight_options_set_log(options, discard_log, NULL);
    monlight_metrics_client *client = NULL;
    if (monlight_metrics_client_new(options, &client) != MONLIGHT_OK) {
        fprintf(stderr, "record_cost: %s\n", monlight_options_last_error(options));
        return 1;
    }
    monlight_options_free(options);

    double started = now_seconds();
    if (threads == 0) {
        record_many(client, use_json, count);
    } else {
        worker workers[64];
        for (int i = 0; i < threads; i++) {
            workers[i] = (worker){client, use_json, count / threads, 0};
            pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]);
        }
        for (int i = 0; i < threads; i++)
            pthread_join(workers[i].thread, NULL);
    }
    double elapsed = now_seconds() - started;

    uint64_t pending = monlight_metrics_client_stat(client, MONLIGHT_STAT_PENDING);
    printf("{\"mode\": \"%s\", \"calls\": %ld, \"threads\": %d, "
           "\"ns_per_call\": %.1f, \"pending\": %llu}\n",
           argv[1], count, threads, elapsed / (double)count * 1e9,
           (unsigned long long)pending);
    monlight_metrics_client_free(client);
    return 0;
}
