/*
 * test_metrics.c: the metrics client against the contract receiver:
 * what one record sends, batch limits, refused input that spares the
 * rest, label order, the cardinality guard, the buffer cap and the
 * flush thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    test_receiver receiver;
    test_log *log;
    monlight_metrics_client *client;
} fixture;

static int start_receiver(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!receiver_start(&f->receiver, 0, false))
        return -1;
    f->log = test_log_new();
    *state = f;
    return 0;
}

static int stop_receiver(void **state)
{
    fixture *f = *state;
    receiver_stop(&f->receiver);
    test_log_free(f->log);
    free(f);
    return 0;
}

/* A fresh client and an empty record file for each test. */
static int setup(void **state)
{
    fixture *f = *state;
    receiver_clear(&f->receiver);
    test_log_clear(f->log);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_status status = monlight_metrics_client_new(options, &f->client);
    monlight_options_free(options);
    return status == MONLIGHT_OK ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    monlight_metrics_client_free(f->client);
    f->client = NULL;
    return 0;
}

static monlight_metrics_client *client_with(fixture *f, monlight_option option,
                                            double value)
{
    monlight_metrics_client_free(f->client);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, option, value);
    monlight_metrics_client_new(options, &f->client);
    monlight_options_free(options);
    return f->client;
}

static void counter_sends_one_valid_metric(void **state)
{
    fixture *f = *state;
    monlight_label labels[] = {{"env", 3, "prod", 4}, {"region", 6, "eu", 2}};
    assert_int_equal(monlight_counter(f->client, "deploys_total", 1, labels, 2),
                     MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_PENDING), 1);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 1);
    cJSON *metric = cJSON_GetArrayItem(metrics, 0);
    assert_string_equal(cJSON_GetObjectItem(metric, "name")->valuestring, "deploys_total");
    assert_string_equal(cJSON_GetObjectItem(metric, "type")->valuestring, "counter");
    assert_true(cJSON_GetObjectItem(metric, "value")->valuedouble == 1);
    const char *timestamp = cJSON_GetObjectItem(metric, "timestamp")->valuestring;
    assert_int_equal(strlen(timestamp), 20);
    assert_int_equal(timestamp[10], 'T');
    assert_int_equal(timestamp[19], 'Z');
    cJSON *sent_labels = cJSON_GetObjectItem(metric, "labels");
    assert_string_equal(cJSON_GetArrayItem(sent_labels, 0)->string, "env");
    assert_string_equal(cJSON_GetArrayItem(sent_labels, 1)->string, "region");
    assert_null(cJSON_GetObjectItem(metric, "project"));
    cJSON_Delete(metrics);

    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DELIVERED), 1);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_PENDING), 0);
    assert_int_equal(receiver_count_events(&f->receiver, "violation"), 0);
}

static void project_is_sent_with_each_metric(void **state)
{
    fixture *f = *state;
    monlight_metrics_client_free(f->client);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_string(options, MONLIGHT_OPT_PROJECT, "shop", 4);
    monlight_metrics_client_new(options, &f->client);
    monlight_options_free(options);

    monlight_gauge(f->client, "queue_depth", 12.5, NULL, 0);
    monlight_histogram(f->client, "latency_seconds", 0.25, NULL, 0);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 2);
    cJSON *metric;
    cJSON_ArrayForEach(metric, metrics)
        assert_string_equal(cJSON_GetObjectItem(metric, "project")->valuestring, "shop");
    assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 0), "value")->valuedouble
                == 12.5);
    cJSON_Delete(metrics);
}

static void flush_splits_into_batches_of_1000(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 5000; i++) {
        char value[16];
        snprintf(value, sizeof value, "%d", i % 7);
        monlight_label label = {"shard", 5, value, strlen(value)};
        assert_int_equal(monlight_counter(f->client, "jobs_total", 1, &label, 1),
                         MONLIGHT_OK);
    }
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    cJSON *events = receiver_events(&f->receiver);
    int batches = 0;
    cJSON *event;
    cJSON_ArrayForEach(event, events)
    {
        assert_string_equal(cJSON_GetObjectItem(event, "kind")->valuestring, "metrics");
        assert_true(cJSON_GetObjectItem(event, "count")->valueint <= 1000);
        batches++;
    }
    assert_int_equal(batches, 5);
    cJSON_Delete(events);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DELIVERED), 5000);
}

static void flush_splits_at_512_kib(void **state)
{
    fixture *f = *state;
    char *big = malloc(4001);
    memset(big, 'x', 4000);
    big[4000] = '\0';
    /* 400 metrics of about 4 KiB each: 1.6 MB, so at least 4 POSTs. */
    for (int i = 0; i < 400; i++) {
        monlight_label label = {"payload", 7, big, 4000};
        assert_int_equal(monlight_gauge(f->client, "wide", i, &label, 1), MONLIGHT_OK);
    }
    free(big);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    cJSON *events = receiver_events(&f->receiver);
    int batches = 0, total = 0;
    cJSON *event;
    cJSON_ArrayForEach(event, events)
    {
        assert_string_equal(cJSON_GetObjectItem(event, "kind")->valuestring, "metrics");
        assert_true(cJSON_GetObjectItem(event, "body_bytes")->valueint <= 524288);
        total += cJSON_GetObjectItem(event, "count")->valueint;
        batches++;
    }
    assert_true(batches >= 4);
    assert_int_equal(total, 400);
    cJSON_Delete(events);
}

static void bad_metrics_refused_alone(void **state)
{
    fixture *f = *state;
    char long_name[202];
    memset(long_name, 'n', 201);
    long_name[201] = '\0';

    assert_int_equal(monlight_counter(f->client, "good_before", 1, NULL, 0), MONLIGHT_OK);
    assert_int_equal(monlight_gauge(f->client, "nan_gauge", NAN, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_gauge(f->client, "inf_gauge", INFINITY, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_gauge(f->client, "minus_inf", -INFINITY, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_counter(f->client, "", 1, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_counter(f->client, long_name, 1, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_record(f->client, (monlight_metric_type)9,
                                                    "typeless", 8, 1, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_record_json(f->client, MONLIGHT_COUNTER,
                                                         "bad_labels", 10, 1,
                                                         "[1,2]", 5),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_counter(f->client, "good_after", 1, NULL, 0), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 2);
    cJSON_Delete(metrics);
    assert_true(test_log_contains(f->log, "nan_gauge"));
    assert_true(test_log_contains(f->log, "inf_gauge"));
    assert_true(test_log_contains(f->log, "name is empty"));
    assert_true(test_log_contains(f->log, "over 200 bytes"));
    assert_true(test_log_contains(f->log, "unknown metric type"));
    assert_true(test_log_contains(f->log, "bad_labels"));
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DROPPED), 7);
    char reason[256];
    assert_true(monlight_metrics_client_last_error(f->client, reason, sizeof reason) > 0);
    assert_non_null(strstr(reason, "bad_labels"));
}

static void name_of_200_bytes_is_accepted(void **state)
{
    fixture *f = *state;
    char name[201];
    memset(name, 'n', 200);
    name[200] = '\0';
    assert_int_equal(monlight_counter(f->client, name, 1, NULL, 0), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    assert_int_equal(receiver_count_events(&f->receiver, "metrics"), 1);
}

static void labels_json_is_sent_verbatim(void **state)
{
    fixture *f = *state;
    const char *labels = "{\"method\":\"GET\",\"endpoint\":\"/users/{id}\",\"status\":\"200\"}";
    for (int i = 0; i < 3; i++)
        assert_int_equal(monlight_metrics_client_record_json(
                             f->client, MONLIGHT_HISTOGRAM, "http_request_duration_seconds",
                             29, 0.01 * (i + 1), labels, strlen(labels)),
                         MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 3);
    cJSON *sent = cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 2), "labels");
    assert_string_equal(cJSON_GetArrayItem(sent, 0)->string, "method");
    assert_string_equal(cJSON_GetArrayItem(sent, 1)->string, "endpoint");
    assert_string_equal(cJSON_GetArrayItem(sent, 2)->string, "status");
    cJSON_Delete(metrics);
}

static void labels_with_invalid_utf8_are_repaired(void **state)
{
    fixture *f = *state;
    monlight_label label = {"path", 4, "/caf\xC3", 5};
    assert_int_equal(monlight_counter(f->client, "hits", 1, &label, 1), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    cJSON *metrics = receiver_metrics(&f->receiver);
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 0), "labels");
    assert_string_equal(cJSON_GetObjectItem(labels, "path")->valuestring,
                        "/caf\xEF\xBF\xBD");
    cJSON_Delete(metrics);
}

static void cardinality_guard_folds_extra_label_sets(void **state)
{
    fixture *f = *state;
    client_with(f, MONLIGHT_OPT_MAX_LABEL_SETS, 5);
    for (int i = 0; i < 20; i++) {
        char value[16];
        snprintf(value, sizeof value, "user%d", i);
        monlight_label label = {"user", 4, value, strlen(value)};
        assert_int_equal(monlight_counter(f->client, "logins_total", 1, &label, 1),
                         MONLIGHT_OK);
    }
    /* Another name has its own allowance. */
    monlight_label other = {"user", 4, "user19", 6};
    monlight_counter(f->client, "logouts_total", 1, &other, 1);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 21);
    int overflow = 0;
    cJSON *metric;
    cJSON_ArrayForEach(metric, metrics)
    {
        cJSON *labels = cJSON_GetObjectItem(metric, "labels");
        if (cJSON_GetObjectItem(labels, "monlight_overflow"))
            overflow++;
    }
    assert_int_equal(overflow, 15);
    cJSON_Delete(metrics);
    assert_int_equal(test_log_count(f->log, "more than 5 label sets"), 1);

    /* A new flush window starts with a fresh allowance. */
    monlight_label late = {"user", 4, "user19", 6};
    monlight_counter(f->client, "logins_total", 1, &late, 1);
    receiver_clear(&f->receiver);
    monlight_metrics_client_flush(f->client);
    metrics = receiver_metrics(&f->receiver);
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 0), "labels");
    assert_string_equal(cJSON_GetObjectItem(labels, "user")->valuestring, "user19");
    cJSON_Delete(metrics);
}

static void buffer_cap_drops_oldest(void **state)
{
    fixture *f = *state;
    client_with(f, MONLIGHT_OPT_MAX_BUFFERED, 2000);
    for (int i = 0; i < 5000; i++)
        monlight_gauge(f->client, "sequence", i, NULL, 0);
    uint64_t dropped = monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DROPPED);
    assert_int_equal(dropped, 3000);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_PENDING), 2000);
    assert_true(test_log_contains(f->log, "max_buffered ("));
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);

    /* The newest metrics are the ones kept. */
    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 2000);
    assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 0), "value")->valueint
                == 3000);
    cJSON_Delete(metrics);
}

static void byte_cap_drops_oldest_wide_metrics(void **state)
{
    fixture *f = *state;
    client_with(f, MONLIGHT_OPT_MAX_BUFFERED_BYTES, 1024 * 1024);
    char *wide = malloc(100001);
    memset(wide, 'w', 100000);
    wide[100000] = '\0';
    monlight_label label = {"blob", 4, wide, 100000};
    for (int i = 0; i < 40; i++)
        monlight_gauge(f->client, "wide", i, &label, 1);
    free(wide);

    /* 40 metrics of about 100 KB: at most about 1 MiB plus the newest
     * batch may stay. */
    uint64_t pending = monlight_metrics_client_stat(f->client, MONLIGHT_STAT_PENDING);
    uint64_t dropped = monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DROPPED);
    assert_true(pending <= 16);
    assert_int_equal(pending + dropped, 40);
    assert_true(test_log_contains(f->log, "max_buffered_bytes"));
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DELIVERED), pending);
}

static void start_flushes_on_interval(void **state)
{
    fixture *f = *state;
    client_with(f, MONLIGHT_OPT_FLUSH_INTERVAL, 0.2);
    assert_int_equal(monlight_metrics_client_start(f->client), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_start(f->client), MONLIGHT_OK);
    monlight_counter(f->client, "ticks", 1, NULL, 0);
    assert_true(receiver_wait_metrics(&f->receiver, 1, 5));
    monlight_counter(f->client, "ticks", 1, NULL, 0);
    assert_true(receiver_wait_metrics(&f->receiver, 2, 5));
}

static void shutdown_delivers_buffered(void **state)
{
    fixture *f = *state;
    monlight_metrics_client_start(f->client);
    for (int i = 0; i < 1500; i++)
        monlight_counter(f->client, "at_shutdown", 1, NULL, 0);
    assert_int_equal(monlight_metrics_client_shutdown(f->client), MONLIGHT_OK);
    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 1500);
    cJSON_Delete(metrics);
    assert_int_equal(monlight_counter(f->client, "late", 1, NULL, 0), MONLIGHT_SHUT_DOWN);
}

static void wrong_key_fails_with_quoted_answer(void **state)
{
    fixture *f = *state;
    monlight_metrics_client_free(f->client);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "wrong-key-456", 13);
    monlight_metrics_client_new(options, &f->client);
    monlight_options_free(options);

    monlight_counter(f->client, "denied", 1, NULL, 0);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_HTTP_ERROR);
    assert_true(test_log_contains(f->log, "HTTP 401"));
    assert_true(test_log_contains(f->log, "detail"));
    assert_false(test_log_contains(f->log, "wrong-key-456"));
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_FAILED), 1);
    /* Not retried: a second flush has nothing to send. */
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    assert_int_equal(receiver_count_events(&f->receiver, "rejected"), 1);
}

static void *shut_down_client(void *argument)
{
    monlight_metrics_client_shutdown(argument);
    return NULL;
}

static void concurrent_shutdowns_both_return(void **state)
{
    fixture *f = *state;
    monlight_metrics_client_start(f->client);
    for (int i = 0; i < 100; i++)
        monlight_counter(f->client, "before_shutdown", 1, NULL, 0);

    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&threads[i], NULL, shut_down_client, f->client);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);

    /* Every caller returned after the delivery, not before it. */
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DELIVERED), 100);
    assert_int_equal(monlight_counter(f->client, "late", 1, NULL, 0), MONLIGHT_SHUT_DOWN);
    assert_int_equal(monlight_metrics_client_stat(f->client, MONLIGHT_STAT_DROPPED), 1);
}

static void escaped_names_share_a_series(void **state)
{
    fixture *f = *state;
    const char *name = "odd \"name\"\\path";
    for (int i = 0; i < 3; i++)
        assert_int_equal(monlight_counter(f->client, name, 1, NULL, 0), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_flush(f->client), MONLIGHT_OK);
    cJSON *metrics = receiver_metrics(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), 3);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(metrics, 2), "name")->valuestring,
                        name);
    cJSON_Delete(metrics);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(counter_sends_one_valid_metric),
        TEST(project_is_sent_with_each_metric),
        TEST(flush_splits_into_batches_of_1000),
        TEST(flush_splits_at_512_kib),
        TEST(bad_metrics_refused_alone),
        TEST(name_of_200_bytes_is_accepted),
        TEST(labels_json_is_sent_verbatim),
        TEST(labels_with_invalid_utf8_are_repaired),
        TEST(cardinality_guard_folds_extra_label_sets),
        TEST(buffer_cap_drops_oldest),
        TEST(byte_cap_drops_oldest_wide_metrics),
        TEST(start_flushes_on_interval),
        TEST(shutdown_delivers_buffered),
        TEST(wrong_key_fails_with_quoted_answer),
        TEST(concurrent_shutdowns_both_return),
        TEST(escaped_names_share_a_series),
    };
    return cmocka_run_group_tests(tests, start_receiver, stop_receiver);
}
