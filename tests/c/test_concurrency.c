/*
 * test_concurrency.c: many threads recording at once while the flush
 * thread sends: every metric arrives exactly once. Built with
 * ThreadSanitizer by `make test-tsan`. MONLIGHT_TEST_THREADS and
 * MONLIGHT_TEST_PER_THREAD change the load (default 8 x 50,000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct worker {
    monlight_metrics_client *client;
    int index;
    int count;
    int failures;
} worker;

static void *record_many(void *argument)
{
    worker *w = argument;
    char thread_label[16];
    snprintf(thread_label, sizeof thread_label, "t%d", w->index);
    monlight_label labels[] = {{"thread", 6, thread_label, strlen(thread_label)},
                               {"kind", 4, "load", 4}};
    for (int i = 0; i < w->count; i++) {
        double value = (double)w->index * w->count + i;
        if (monlight_gauge(w->client, "concurrent_gauge", value, labels, 2) != MONLIGHT_OK)
            w->failures++;
    }
    return NULL;
}

static int env_int(const char *name, int fallback)
{
    const char *text = getenv(name);
    return text && atoi(text) > 0 ? atoi(text) : fallback;
}

static void threads_record_every_metric_once(void **state)
{
    (void)state;
    int threads = env_int("MONLIGHT_TEST_THREADS", 8);
    int per_thread = env_int("MONLIGHT_TEST_PER_THREAD", 50000);
    int total = threads * per_thread;

    test_receiver receiver;
    assert_true(receiver_start(&receiver, 0, true));
    monlight_options *options = test_options(&receiver, NULL);
    monlight_options_set_number(options, MONLIGHT_OPT_FLUSH_INTERVAL, 0.2);
    monlight_options_set_number(options, MONLIGHT_OPT_MAX_BUFFERED, (double)total);
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 30);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 60);
    monlight_metrics_client *client = NULL;
    assert_int_equal(monlight_metrics_client_new(options, &client), MONLIGHT_OK);
    monlight_options_free(options);
    monlight_metrics_client_start(client);

    pthread_t ids[64];
    worker workers[64];
    assert_true(threads <= 64);
    for (int t = 0; t < threads; t++) {
        workers[t] = (worker){client, t, per_thread, 0};
        pthread_create(&ids[t], NULL, record_many, &workers[t]);
    }
    /* A concurrent flush from the main thread as well. */
    monlight_metrics_client_flush(client);
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        assert_int_equal(workers[t].failures, 0);
    }
    monlight_metrics_client_shutdown(client);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_DELIVERED),
                     (uint64_t)total);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_DROPPED), 0);
    monlight_metrics_client_free(client);

    cJSON *metrics = receiver_metrics(&receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), total);
    char *seen = calloc((size_t)total, 1);
    cJSON *metric;
    cJSON_ArrayForEach(metric, metrics)
    {
        int value = (int)cJSON_GetObjectItem(metric, "value")->valuedouble;
        assert_true(value >= 0 && value < total);
        assert_int_equal(seen[value], 0);
        seen[value] = 1;
    }
    free(seen);
    cJSON_Delete(metrics);
    receiver_stop(&receiver);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_record_every_metric_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
