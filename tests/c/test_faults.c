/*
 * test_faults.c: delivery when the services misbehave: down then up, 503
 * and 429 answers, a connection dropped before the answer, a tracker
 * slower than the timeout, and a shutdown deadline that must not hang.
 * Retried data must arrive exactly once; data that may already have been
 * stored must not be sent again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct fixture {
    test_receiver receiver;
    test_log *log;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->log = test_log_new();
    if (!receiver_start(&f->receiver, 0, false))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    receiver_stop(&f->receiver);
    test_log_free(f->log);
    free(f);
    return 0;
}

static monlight_metrics_client *metrics_client(fixture *f, double timeout,
                                               double retry_max_delay)
{
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, timeout);
    monlight_options_set_number(options, MONLIGHT_OPT_RETRY_MAX_DELAY, retry_max_delay);
    monlight_options_set_number(options, MONLIGHT_OPT_FLUSH_INTERVAL, 0.1);
    monlight_metrics_client *client = NULL;
    monlight_metrics_client_new(options, &client);
    monlight_options_free(options);
    return client;
}

static monlight_error_client *error_client(fixture *f, double timeout)
{
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, timeout);
    monlight_options_set_number(options, MONLIGHT_OPT_RETRY_MAX_DELAY, 0.5);
    monlight_error_client *client = NULL;
    monlight_error_client_new(options, &client);
    monlight_options_free(options);
    return client;
}

static monlight_report *sample_report(void)
{
    monlight_report *report = monlight_report_new();
    const char *traceback = "  File \"/srv/app/jobs.py\", line 9, in run\n";
    monlight_report_set(report, MONLIGHT_FIELD_EXCEPTION_TYPE, "RuntimeError", 12);
    monlight_report_set(report, MONLIGHT_FIELD_MESSAGE, "job failed", 10);
    monlight_report_set(report, MONLIGHT_FIELD_TRACEBACK, traceback, strlen(traceback));
    return report;
}

/* Checks that the values 0..count-1 each arrived exactly once. */
static void assert_each_value_once(const test_receiver *receiver, int count)
{
    cJSON *metrics = receiver_metrics(receiver);
    assert_int_equal(cJSON_GetArraySize(metrics), count);
    char *seen = calloc((size_t)count, 1);
    cJSON *metric;
    cJSON_ArrayForEach(metric, metrics)
    {
        int value = cJSON_GetObjectItem(metric, "value")->valueint;
        assert_true(value >= 0 && value < count);
        assert_int_equal(seen[value], 0);
        seen[value] = 1;
    }
    free(seen);
    cJSON_Delete(metrics);
}

static void collector_down_then_up(void **state)
{
    fixture *f = *state;
    int port = f->receiver.port;
    monlight_metrics_client *client = metrics_client(f, 2, 0.2);
    receiver_stop(&f->receiver);

    for (int i = 0; i < 2500; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);
    assert_int_equal(monlight_metrics_client_flush(client), MONLIGHT_RETRY_SCHEDULED);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_PENDING), 2500);
    assert_true(test_log_contains(f->log, "retrying"));

    /* The background thread delivers once the collector is back. */
    assert_true(receiver_start(&f->receiver, port, false));
    assert_int_equal(monlight_metrics_client_start(client), MONLIGHT_OK);
    assert_true(receiver_wait_metrics(&f->receiver, 2500, 10));
    monlight_metrics_client_free(client);
    assert_each_value_once(&f->receiver, 2500);
}

static void metrics_503_then_accepted(void **state)
{
    fixture *f = *state;
    monlight_metrics_client *client = metrics_client(f, 2, 0.2);
    receiver_control(&f->receiver, "{\"fail_next\": 1, \"status\": 503}");
    for (int i = 0; i < 10; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);
    assert_int_equal(monlight_metrics_client_flush(client), MONLIGHT_RETRY_SCHEDULED);
    assert_int_equal(monlight_metrics_client_flush(client), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_RETRIED), 10);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_DELIVERED), 10);
    monlight_metrics_client_free(client);
    assert_each_value_once(&f->receiver, 10);
}

static void metrics_429_waits_for_retry_after(void **state)
{
    fixture *f = *state;
    monlight_metrics_client *client = metrics_client(f, 2, 0.2);
    receiver_control(&f->receiver,
                     "{\"fail_next\": 1, \"status\": 429, \"retry_after\": 1}");
    for (int i = 0; i < 10; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);
    double started = test_now();
    monlight_metrics_client_start(client);
    assert_true(receiver_wait_metrics(&f->receiver, 10, 10));
    double waited = test_now() - started;
    /* retry_after (1 s) wins over the 0.2 s backoff cap. */
    assert_true(waited >= 1.0);
    assert_true(test_log_contains(f->log, "HTTP 429"));
    monlight_metrics_client_free(client);
    assert_each_value_once(&f->receiver, 10);
}

static void errors_429_honours_retry_after_header(void **state)
{
    fixture *f = *state;
    monlight_error_client *client = error_client(f, 2);
    monlight_report *report = sample_report();
    receiver_control(&f->receiver, "{\"fail_next\": 1, \"status\": 429, "
                                   "\"retry_after\": 1, \"retry_after_header\": true}");
    double started = test_now();
    assert_int_equal(monlight_error_client_send(client, report), MONLIGHT_RETRY_SCHEDULED);
    double deadline = started + 10;
    while (receiver_count_events(&f->receiver, "error") < 1 && test_now() < deadline) {
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
    }
    assert_true(test_now() - started >= 1.0);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 1);
    assert_int_equal(monlight_error_client_stat(client, MONLIGHT_STAT_RETRIED), 1);
    monlight_report_free(report);
    monlight_error_client_free(client);
}

static void errors_503_retried_in_background(void **state)
{
    fixture *f = *state;
    monlight_error_client *client = error_client(f, 2);
    monlight_report *report = sample_report();
    receiver_control(&f->receiver, "{\"fail_next\": 2, \"status\": 503}");
    assert_int_equal(monlight_error_client_send(client, report), MONLIGHT_RETRY_SCHEDULED);
    monlight_error_client_shutdown(client);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 1);
    assert_int_equal(monlight_error_client_stat(client, MONLIGHT_STAT_DELIVERED), 1);
    monlight_report_free(report);
    monlight_error_client_free(client);
}

static void errors_500_not_retried(void **state)
{
    fixture *f = *state;
    monlight_error_client *client = error_client(f, 2);
    monlight_report *report = sample_report();
    receiver_control(&f->receiver, "{\"fail_next\": 1, \"status\": 500}");
    assert_int_equal(monlight_error_client_send(client, report), MONLIGHT_HTTP_ERROR);
    monlight_error_client_shutdown(client);
    assert_int_equal(receiver_count_events(&f->receiver, "rejected"), 1);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 0);
    assert_int_equal(monlight_error_client_stat(client, MONLIGHT_STAT_FAILED), 1);
    assert_true(test_log_contains(f->log, "HTTP 500"));
    monlight_report_free(report);
    monlight_error_client_free(client);
}

static void dropped_connection_not_retried(void **state)
{
    fixture *f = *state;
    monlight_metrics_client *client = metrics_client(f, 2, 0.2);
    receiver_control(&f->receiver, "{\"drop_next\": 1}");
    for (int i = 0; i < 10; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);
    monlight_status status = monlight_metrics_client_flush(client);
    assert_int_equal(status, MONLIGHT_TRANSPORT_FAILED);
    assert_int_equal(monlight_metrics_client_flush(client), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_FAILED), 10);
    assert_int_equal(receiver_count_events(&f->receiver, "dropped"), 1);
    assert_int_equal(receiver_count_events(&f->receiver, "metrics"), 0);
    monlight_metrics_client_free(client);
}

static void slow_tracker_releases_caller_on_time(void **state)
{
    fixture *f = *state;
    monlight_error_client *client = error_client(f, 0.5);
    monlight_report *report = sample_report();
    receiver_control(&f->receiver, "{\"delay\": 2}");
    double started = test_now();
    assert_int_equal(monlight_error_client_send(client, report), MONLIGHT_TIMED_OUT);
    double elapsed = test_now() - started;
    assert_true(elapsed >= 0.4 && elapsed < 1.5);

    /* The tracker stores the report after its delay: exactly once. */
    struct timespec pause = {2, 500000000};
    nanosleep(&pause, NULL);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 1);
    assert_int_equal(monlight_error_client_stat(client, MONLIGHT_STAT_RETRIED), 0);
    monlight_report_free(report);
    monlight_error_client_free(client);
}

static void shutdown_deadline_aborts_dead_collector(void **state)
{
    fixture *f = *state;
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 30);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 1);
    monlight_metrics_client *client = NULL;
    monlight_metrics_client_new(options, &client);
    monlight_options_free(options);

    receiver_control(&f->receiver, "{\"delay\": 20, \"delay_next\": 5}");
    for (int i = 0; i < 10; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);
    double started = test_now();
    monlight_metrics_client_shutdown(client);
    double elapsed = test_now() - started;
    assert_true(elapsed < 2.0);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_DROPPED), 10);
    monlight_metrics_client_free(client);
}

static void shutdown_deadline_aborts_error_queue(void **state)
{
    fixture *f = *state;
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 30);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 1);
    monlight_error_client *client = NULL;
    monlight_error_client_new(options, &client);
    monlight_options_free(options);
    monlight_report *report = sample_report();

    receiver_control(&f->receiver, "{\"delay\": 20, \"delay_next\": 5}");
    for (int i = 0; i < 3; i++)
        monlight_error_client_enqueue(client, report, NULL, NULL);
    double started = test_now();
    monlight_error_client_free(client);
    assert_true(test_now() - started < 2.0);
    assert_true(test_log_contains(f->log, "shutdown deadline"));
    monlight_report_free(report);
}

static void credentials_in_url_never_logged(void **state)
{
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof url, "http://user:hunter2@127.0.0.1:%d", f->receiver.port);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, url, strlen(url));
    monlight_error_client *client = NULL;
    monlight_error_client_new(options, &client);
    monlight_options_free(options);
    monlight_report *report = sample_report();

    receiver_control(&f->receiver, "{\"fail_next\": 1, \"status\": 500}");
    assert_int_equal(monlight_error_client_send(client, report), MONLIGHT_HTTP_ERROR);
    char reason[512];
    monlight_error_client_last_error(client, reason, sizeof reason);
    assert_non_null(strstr(reason, "http://127.0.0.1:"));
    assert_null(strstr(reason, "hunter2"));
    assert_true(test_log_contains(f->log, "HTTP 500"));
    assert_false(test_log_contains(f->log, "hunter2"));
    monlight_report_free(report);
    monlight_error_client_free(client);
}

static void flush_stops_after_a_timeout(void **state)
{
    fixture *f = *state;
    monlight_metrics_client *client = metrics_client(f, 0.5, 0.2);
    receiver_control(&f->receiver, "{\"delay\": 3, \"delay_next\": 10}");
    for (int i = 0; i < 3000; i++)
        monlight_gauge(client, "sequence", i, NULL, 0);

    double started = test_now();
    assert_int_equal(monlight_metrics_client_flush(client), MONLIGHT_TIMED_OUT);
    assert_true(test_now() - started < 1.5);
    /* The batch that timed out may have been stored: it counts as failed.
     * The two behind it were never sent and stay for the next flush. */
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_FAILED), 1000);
    assert_int_equal(monlight_metrics_client_stat(client, MONLIGHT_STAT_PENDING), 2000);
    receiver_control(&f->receiver, "{\"reset\": true}");
    monlight_metrics_client_free(client);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(collector_down_then_up),
        TEST(metrics_503_then_accepted),
        TEST(metrics_429_waits_for_retry_after),
        TEST(errors_429_honours_retry_after_header),
        TEST(errors_503_retried_in_background),
        TEST(errors_500_not_retried),
        TEST(dropped_connection_not_retried),
        TEST(slow_tracker_releases_caller_on_time),
        TEST(shutdown_deadline_aborts_dead_collector),
        TEST(shutdown_deadline_aborts_error_queue),
        TEST(credentials_in_url_never_logged),
        TEST(flush_stops_after_a_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
