/*
 * test_errors.c: the error client against the contract receiver: sending
 * synchronously and through the queue, grouping, connection reuse, and
 * reports far over the size limit.
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

typedef struct fixture {
    test_receiver receiver;
    test_receiver keep_alive_receiver;
    test_log *log;
    monlight_error_client *client;
    monlight_report *report;
} fixture;

static int start_receivers(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!receiver_start(&f->receiver, 0, false) ||
        !receiver_start(&f->keep_alive_receiver, 0, true))
        return -1;
    f->log = test_log_new();
    *state = f;
    return 0;
}

static int stop_receivers(void **state)
{
    fixture *f = *state;
    receiver_stop(&f->receiver);
    receiver_stop(&f->keep_alive_receiver);
    test_log_free(f->log);
    free(f);
    return 0;
}

static monlight_error_client *make_client(fixture *f, const test_receiver *receiver)
{
    monlight_error_client_free(f->client);
    monlight_options *options = test_options(receiver, f->log);
    monlight_options_set_string(options, MONLIGHT_OPT_PROJECT, "shop", 4);
    monlight_error_client_new(options, &f->client);
    monlight_options_free(options);
    return f->client;
}

static int setup(void **state)
{
    fixture *f = *state;
    receiver_clear(&f->receiver);
    receiver_clear(&f->keep_alive_receiver);
    test_log_clear(f->log);
    f->report = monlight_report_new();
    const char *traceback = "Traceback (most recent call last):\n"
                            "  File \"/srv/app/views.py\", line 42, in checkout\n"
                            "ValueError: card declined\n";
    monlight_report_set(f->report, MONLIGHT_FIELD_EXCEPTION_TYPE, "ValueError", 10);
    monlight_report_set(f->report, MONLIGHT_FIELD_MESSAGE, "card declined", 13);
    monlight_report_set(f->report, MONLIGHT_FIELD_TRACEBACK, traceback, strlen(traceback));
    monlight_report_add_header(f->report, "Authorization", 13, "Bearer s3cret", 13);
    monlight_report_add_header(f->report, "Accept", 6, "text/html", 9);
    return make_client(f, &f->receiver) ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    monlight_error_client_free(f->client);
    monlight_report_free(f->report);
    f->client = NULL;
    f->report = NULL;
    return 0;
}

static void send_is_created_then_incremented(void **state)
{
    fixture *f = *state;
    assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_OK);
    assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_OK);

    cJSON *events = receiver_events(&f->receiver);
    assert_int_equal(cJSON_GetArraySize(events), 2);
    cJSON *first = cJSON_GetArrayItem(events, 0);
    cJSON *second = cJSON_GetArrayItem(events, 1);
    assert_int_equal(cJSON_GetObjectItem(first, "status")->valueint, 201);
    assert_int_equal(cJSON_GetObjectItem(second, "status")->valueint, 200);
    cJSON *frame = cJSON_GetObjectItem(first, "frame");
    assert_string_equal(cJSON_GetObjectItem(frame, "file")->valuestring,
                        "/srv/app/views.py");
    cJSON *report = cJSON_GetObjectItem(first, "report");
    assert_string_equal(cJSON_GetObjectItem(report, "project")->valuestring, "shop");
    assert_string_equal(cJSON_GetObjectItem(report, "environment")->valuestring, "prod");
    cJSON *headers = cJSON_GetObjectItem(report, "request_headers");
    assert_null(cJSON_GetObjectItem(headers, "Authorization"));
    assert_string_equal(cJSON_GetObjectItem(headers, "Accept")->valuestring, "text/html");
    cJSON_Delete(events);

    assert_int_equal(monlight_error_client_stat(f->client, MONLIGHT_STAT_DELIVERED), 2);
    assert_int_equal(receiver_count_events(&f->receiver, "violation"), 0);
}

static void keep_alive_reuses_one_connection(void **state)
{
    fixture *f = *state;
    make_client(f, &f->keep_alive_receiver);
    for (int i = 0; i < 5; i++)
        assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_OK);

    cJSON *events = receiver_events(&f->keep_alive_receiver);
    assert_int_equal(cJSON_GetArraySize(events), 5);
    int connection = cJSON_GetObjectItem(cJSON_GetArrayItem(events, 0), "conn")->valueint;
    cJSON *event;
    cJSON_ArrayForEach(event, events)
        assert_int_equal(cJSON_GetObjectItem(event, "conn")->valueint, connection);
    cJSON_Delete(events);
}

static void closing_server_gets_fresh_connections(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_OK);
    cJSON *events = receiver_events(&f->receiver);
    int first = cJSON_GetObjectItem(cJSON_GetArrayItem(events, 0), "conn")->valueint;
    int last = cJSON_GetObjectItem(cJSON_GetArrayItem(events, 2), "conn")->valueint;
    assert_true(last != first);
    cJSON_Delete(events);
}

typedef struct done_record {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int calls;
    monlight_status last;
} done_record;

static void on_done(monlight_status status, void *user_data)
{
    done_record *record = user_data;
    pthread_mutex_lock(&record->lock);
    record->calls++;
    record->last = status;
    pthread_cond_broadcast(&record->changed);
    pthread_mutex_unlock(&record->lock);
}

static bool wait_calls(done_record *record, int calls, double timeout)
{
    double deadline = test_now() + timeout;
    pthread_mutex_lock(&record->lock);
    while (record->calls < calls && test_now() < deadline) {
        pthread_mutex_unlock(&record->lock);
        struct timespec pause = {0, 10000000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&record->lock);
    }
    bool reached = record->calls >= calls;
    pthread_mutex_unlock(&record->lock);
    return reached;
}

static void enqueue_calls_done_after_delivery(void **state)
{
    fixture *f = *state;
    done_record record = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                          MONLIGHT_TIMED_OUT};
    for (int i = 0; i < 3; i++)
        assert_int_equal(monlight_error_client_enqueue(f->client, f->report, on_done,
                                                       &record),
                         MONLIGHT_OK);
    assert_true(wait_calls(&record, 3, 10));
    assert_int_equal(record.last, MONLIGHT_OK);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 3);
}

static void queue_overflow_drops_oldest(void **state)
{
    fixture *f = *state;
    monlight_error_client_free(f->client);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_number(options, MONLIGHT_OPT_MAX_QUEUED, 2);
    monlight_error_client_new(options, &f->client);
    monlight_options_free(options);

    /* A slow tracker keeps the first report in flight while more queue. */
    receiver_control(&f->receiver, "{\"delay\": 1, \"delay_next\": 1}");
    done_record record = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                          MONLIGHT_OK};
    for (int i = 0; i < 6; i++)
        monlight_error_client_enqueue(f->client, f->report, on_done, &record);
    assert_true(wait_calls(&record, 6, 10));
    uint64_t dropped = monlight_error_client_stat(f->client, MONLIGHT_STAT_DROPPED);
    uint64_t delivered = monlight_error_client_stat(f->client, MONLIGHT_STAT_DELIVERED);
    assert_true(dropped >= 3);
    assert_int_equal(dropped + delivered, 6);
    assert_true(test_log_contains(f->log, "queue is full"));
}

static void report_of_several_megabytes_is_trimmed_and_stored(void **state)
{
    fixture *f = *state;
    size_t size = 3 * 1024 * 1024;
    char *traceback = malloc(size + 100);
    size_t length = 0;
    int line = 1;
    while (length + 80 < size)
        length += (size_t)sprintf(traceback + length,
                                  "  File \"/srv/app/deep.py\", line %d, in recurse\n",
                                  line++);
    length += (size_t)sprintf(traceback + length,
                              "  File \"/srv/app/leaf.py\", line 7, in fail\n");
    monlight_report_set(f->report, MONLIGHT_FIELD_TRACEBACK, traceback, length);
    monlight_report_set(f->report, MONLIGHT_FIELD_MESSAGE, traceback, length);
    free(traceback);

    assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_OK);
    cJSON *events = receiver_events(&f->receiver);
    cJSON *event = cJSON_GetArrayItem(events, 0);
    assert_string_equal(cJSON_GetObjectItem(event, "kind")->valuestring, "error");
    assert_true(cJSON_GetObjectItem(event, "body_bytes")->valueint <= 262144);
    /* Grouped by the deepest frame, which trimming kept. */
    cJSON *frame = cJSON_GetObjectItem(event, "frame");
    assert_string_equal(cJSON_GetObjectItem(frame, "file")->valuestring,
                        "/srv/app/leaf.py");
    assert_string_equal(cJSON_GetObjectItem(frame, "line")->valuestring, "7");
    cJSON_Delete(events);
    assert_true(test_log_contains(f->log, "trimmed"));
}

static void wrong_key_is_reported_without_the_key(void **state)
{
    fixture *f = *state;
    monlight_error_client_free(f->client);
    monlight_options *options = test_options(&f->receiver, f->log);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "not-the-key-789", 15);
    monlight_error_client_new(options, &f->client);
    monlight_options_free(options);

    assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_HTTP_ERROR);
    char reason[512];
    monlight_error_client_last_error(f->client, reason, sizeof reason);
    assert_non_null(strstr(reason, "HTTP 401"));
    assert_null(strstr(reason, "not-the-key-789"));
    assert_false(test_log_contains(f->log, "not-the-key-789"));
    assert_int_equal(monlight_error_client_stat(f->client, MONLIGHT_STAT_FAILED), 1);
}

static void send_after_shutdown_is_refused(void **state)
{
    fixture *f = *state;
    assert_int_equal(monlight_error_client_shutdown(f->client), MONLIGHT_OK);
    assert_int_equal(monlight_error_client_send(f->client, f->report), MONLIGHT_SHUT_DOWN);
    assert_int_equal(monlight_error_client_enqueue(f->client, f->report, NULL, NULL),
                     MONLIGHT_SHUT_DOWN);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(send_is_created_then_incremented),
        TEST(keep_alive_reuses_one_connection),
        TEST(closing_server_gets_fresh_connections),
        TEST(enqueue_calls_done_after_delivery),
        TEST(queue_overflow_drops_oldest),
        TEST(report_of_several_megabytes_is_trimmed_and_stored),
        TEST(wrong_key_is_reported_without_the_key),
        TEST(send_after_shutdown_is_refused),
    };
    return cmocka_run_group_tests(tests, start_receivers, stop_receivers);
}
