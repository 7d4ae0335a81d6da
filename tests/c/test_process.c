/*
 * test_process.c: process exit and fork. Buffered data is delivered when
 * a process exits normally without shutdown, exit never hangs on a dead
 * collector, and a forked child records and delivers on its own without
 * sending its parent's buffer again.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct fixture {
    test_receiver receiver;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!receiver_start(&f->receiver, 0, false))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    receiver_stop(&f->receiver);
    free(f);
    return 0;
}

static int wait_child(pid_t pid, double *elapsed)
{
    double started = test_now();
    int status = 0;
    waitpid(pid, &status, 0);
    if (elapsed)
        *elapsed = test_now() - started;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static size_t count_named(const test_receiver *receiver, const char *name)
{
    cJSON *metrics = receiver_metrics(receiver);
    size_t count = 0;
    cJSON *metric;
    cJSON_ArrayForEach(metric, metrics)
        if (strcmp(cJSON_GetObjectItem(metric, "name")->valuestring, name) == 0)
            count++;
    cJSON_Delete(metrics);
    return count;
}

static monlight_report *sample_report(void)
{
    monlight_report *report = monlight_report_new();
    monlight_report_set(report, MONLIGHT_FIELD_EXCEPTION_TYPE, "ExitError", 9);
    monlight_report_set(report, MONLIGHT_FIELD_MESSAGE, "queued before exit", 18);
    return report;
}

static void exit_delivers_without_shutdown(void **state)
{
    fixture *f = *state;
    pid_t pid = fork();
    if (pid == 0) {
        monlight_options *options = test_options(&f->receiver, NULL);
        monlight_metrics_client *metrics = NULL;
        monlight_error_client *errors = NULL;
        monlight_metrics_client_new(options, &metrics);
        monlight_error_client_new(options, &errors);
        monlight_options_free(options);
        monlight_metrics_client_start(metrics);
        for (int i = 0; i < 1200; i++)
            monlight_counter(metrics, "exit_counter", 1, NULL, 0);
        monlight_report *report = sample_report();
        monlight_error_client_enqueue(errors, report, NULL, NULL);
        monlight_report_free(report);
        exit(0); /* no shutdown, no free: the atexit handler delivers */
    }
    assert_int_equal(wait_child(pid, NULL), 0);
    assert_int_equal(count_named(&f->receiver, "exit_counter"), 1200);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 1);
}

static void exit_does_not_hang_on_dead_collector(void **state)
{
    fixture *f = *state;
    receiver_control(&f->receiver, "{\"delay\": 30, \"delay_next\": 10}");
    pid_t pid = fork();
    if (pid == 0) {
        monlight_options *options = test_options(&f->receiver, NULL);
        monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 30);
        monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 1);
        monlight_options_set_log(options, test_log_callback, test_log_new());
        monlight_metrics_client *metrics = NULL;
        monlight_metrics_client_new(options, &metrics);
        monlight_options_free(options);
        monlight_counter(metrics, "never_arrives", 1, NULL, 0);
        exit(0);
    }
    double elapsed;
    assert_int_equal(wait_child(pid, &elapsed), 0);
    assert_true(elapsed < 3.0);
    receiver_control(&f->receiver, "{\"reset\": true}");
}

static void exit_deadline_is_shared_by_all_clients(void **state)
{
    fixture *f = *state;
    receiver_control(&f->receiver, "{\"delay\": 30, \"delay_next\": 20}");
    pid_t pid = fork();
    if (pid == 0) {
        monlight_options *options = test_options(&f->receiver, NULL);
        monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 60);
        monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 1);
        monlight_options_set_log(options, test_log_callback, test_log_new());
        monlight_report *report = sample_report();
        for (int i = 0; i < 6; i++) {
            monlight_error_client *errors = NULL;
            monlight_error_client_new(options, &errors);
            monlight_error_client_enqueue(errors, report, NULL, NULL);
        }
        monlight_options_free(options);
        /* Let every request reach the slow tracker before exiting. */
        struct timespec pause = {0, 300000000};
        nanosleep(&pause, NULL);
        exit(0);
    }
    double elapsed;
    assert_int_equal(wait_child(pid, &elapsed), 0);
    /* One deadline for all six, plus libcurl's progress callback, which
     * runs about once a second on a transfer that receives nothing. */
    assert_true(elapsed < 3.5);
    receiver_control(&f->receiver, "{\"reset\": true}");
}

static void fork_child_delivers_its_own_metrics_once(void **state)
{
    fixture *f = *state;
    monlight_options *options = test_options(&f->receiver, NULL);
    monlight_options_set_number(options, MONLIGHT_OPT_FLUSH_INTERVAL, 0.1);
    monlight_metrics_client *metrics = NULL;
    monlight_error_client *errors = NULL;
    monlight_metrics_client_new(options, &metrics);
    monlight_error_client_new(options, &errors);
    monlight_options_free(options);
    /* A long interval for the parent: its buffer is still full at fork. */
    monlight_metrics_client_start(metrics);
    for (int i = 0; i < 50; i++)
        monlight_counter(metrics, "parent_counter", 1, NULL, 0);
    monlight_report *report = sample_report();

    pid_t pid = fork();
    if (pid == 0) {
        /* The first record restarts the flush thread in the child. */
        for (int i = 0; i < 30; i++)
            monlight_counter(metrics, "child_counter", 1, NULL, 0);
        monlight_status sent = monlight_error_client_send(errors, report);
        double deadline = test_now() + 10;
        while (monlight_metrics_client_stat(metrics, MONLIGHT_STAT_DELIVERED) < 30 &&
               test_now() < deadline) {
            struct timespec pause = {0, 20000000};
            nanosleep(&pause, NULL);
        }
        bool delivered = monlight_metrics_client_stat(metrics, MONLIGHT_STAT_DELIVERED) == 30;
        _exit(delivered && sent == MONLIGHT_OK ? 0 : 1);
    }
    assert_int_equal(wait_child(pid, NULL), 0);

    monlight_metrics_client_flush(metrics);
    monlight_metrics_client_shutdown(metrics);
    assert_int_equal(count_named(&f->receiver, "child_counter"), 30);
    assert_int_equal(count_named(&f->receiver, "parent_counter"), 50);
    assert_int_equal(receiver_count_events(&f->receiver, "error"), 1);
    monlight_report_free(report);
    monlight_metrics_client_free(metrics);
    monlight_error_client_free(errors);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(exit_delivers_without_shutdown),
        TEST(exit_does_not_hang_on_dead_collector),
        TEST(exit_deadline_is_shared_by_all_clients),
        TEST(fork_child_delivers_its_own_metrics_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
