/*
 * test_api.c: the whole public API called with NULL and invalid
 * arguments (nothing crashes, every call returns a status), option
 * validation, and the status and version functions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "monlight.h"

#include <math.h>
#include <string.h>

static void api_accepts_null_everywhere(void **state)
{
    (void)state;
    monlight_options_free(NULL);
    monlight_report_free(NULL);
    monlight_error_client_free(NULL);
    monlight_metrics_client_free(NULL);

    assert_int_equal(monlight_options_set_string(NULL, MONLIGHT_OPT_BASE_URL, "x", 1),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_options_set_number(NULL, MONLIGHT_OPT_TIMEOUT, 1),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_options_add_excluded_header(NULL, "x", 1),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_options_set_log(NULL, NULL, NULL),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_non_null(monlight_options_last_error(NULL));

    assert_int_equal(monlight_report_set(NULL, MONLIGHT_FIELD_MESSAGE, "x", 1),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_report_add_header(NULL, "a", 1, "b", 1),
                     MONLIGHT_INVALID_ARGUMENT);

    monlight_error_client *errors = NULL;
    monlight_metrics_client *metrics = NULL;
    assert_int_equal(monlight_error_client_new(NULL, &errors),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_error_client_new(NULL, NULL),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_new(NULL, &metrics),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_null(errors);
    assert_null(metrics);

    assert_int_equal(monlight_error_client_send(NULL, NULL), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_error_client_enqueue(NULL, NULL, NULL, NULL),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_error_client_shutdown(NULL), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_error_client_stat(NULL, MONLIGHT_STAT_DELIVERED), 0);
    char buffer[16] = "junk";
    assert_int_equal(monlight_error_client_last_error(NULL, buffer, sizeof buffer), 0);
    assert_string_equal(buffer, "");

    assert_int_equal(monlight_counter(NULL, "x", 1, NULL, 0), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_histogram(NULL, "x", 1, NULL, 0), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_gauge(NULL, "x", 1, NULL, 0), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_record_json(NULL, MONLIGHT_COUNTER, "x",
                                                         1, 1, NULL, 0),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_start(NULL), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_flush(NULL), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_shutdown(NULL), MONLIGHT_INVALID_ARGUMENT);
    assert_int_equal(monlight_metrics_client_stat(NULL, MONLIGHT_STAT_PENDING), 0);
    assert_int_equal(monlight_metrics_client_last_error(NULL, buffer, sizeof buffer), 0);
}

static void client_needs_url_and_key(void **state)
{
    (void)state;
    monlight_options *options = monlight_options_new();
    monlight_metrics_client *metrics = NULL;
    assert_int_equal(monlight_metrics_client_new(options, &metrics),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_non_null(strstr(monlight_options_last_error(options), "base_url"));
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, "http://h", 8);
    assert_int_equal(monlight_metrics_client_new(options, &metrics),
                     MONLIGHT_INVALID_ARGUMENT);
    assert_non_null(strstr(monlight_options_last_error(options), "api_key"));
    assert_null(metrics);
    monlight_options_free(options);
}

static void base_url_validation_table(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        monlight_status expected;
    } cases[] = {
        {"http://localhost:5010", MONLIGHT_OK},
        {"https://errors.example.com/", MONLIGHT_OK},
        {"HTTP://LOCALHOST", MONLIGHT_OK},
        {"ftp://localhost", MONLIGHT_INVALID_ARGUMENT},
        {"localhost:5010", MONLIGHT_INVALID_ARGUMENT},
        {"http://", MONLIGHT_INVALID_ARGUMENT},
        {"http:///path", MONLIGHT_INVALID_ARGUMENT},
        {"http://host name", MONLIGHT_INVALID_ARGUMENT},
        {"http://host\r\nX-Injected: 1", MONLIGHT_INVALID_ARGUMENT},
        {"", MONLIGHT_INVALID_ARGUMENT},
    };
    monlight_options *options = monlight_options_new();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        monlight_status status = monlight_options_set_string(
            options, MONLIGHT_OPT_BASE_URL, cases[i].url, strlen(cases[i].url));
        assert_int_equal(status, cases[i].expected);
        if (status != MONLIGHT_OK)
            assert_non_null(strstr(monlight_options_last_error(options), "base_url"));
    }
    monlight_options_free(options);
}

static void api_key_rejects_header_injection(void **state)
{
    (void)state;
    static const char *const bad_keys[] = {
        "key\r\nX-Injected: yes", "key\nmore", "key with space", "", "tab\tkey",
        "caf\xC3\xA9",
    };
    monlight_options *options = monlight_options_new();
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        assert_int_equal(monlight_options_set_string(options, MONLIGHT_OPT_API_KEY,
                                                     bad_keys[i], strlen(bad_keys[i])),
                         MONLIGHT_INVALID_ARGUMENT);
        /* The message never echoes the key. */
        if (strlen(bad_keys[i]) > 0)
            assert_null(strstr(monlight_options_last_error(options), bad_keys[i]));
    }
    assert_int_equal(monlight_options_set_string(options, MONLIGHT_OPT_API_KEY,
                                                 "good-key_123", 12),
                     MONLIGHT_OK);
    monlight_options_free(options);
}

static void number_options_table(void **state)
{
    (void)state;
    static const struct {
        monlight_option option;
        double value;
        monlight_status expected;
    } cases[] = {
        {MONLIGHT_OPT_TIMEOUT, 0.5, MONLIGHT_OK},
        {MONLIGHT_OPT_TIMEOUT, 0, MONLIGHT_INVALID_ARGUMENT},
        {MONLIGHT_OPT_TIMEOUT, -1, MONLIGHT_INVALID_ARGUMENT},
        {MONLIGHT_OPT_TIMEOUT, NAN, MONLIGHT_INVALID_ARGUMENT},
        {MONLIGHT_OPT_FLUSH_INTERVAL, INFINITY, MONLIGHT_INVALID_ARGUMENT},
        {MONLIGHT_OPT_MAX_BUFFERED, 0, MONLIGHT_INVALID_ARGUMENT},
        {MONLIGHT_OPT_MAX_BUFFERED, 10, MONLIGHT_OK},
        {MONLIGHT_OPT_EXIT_DEADLINE, 0, MONLIGHT_OK},
        {MONLIGHT_OPT_MAX_LABEL_SETS, 1, MONLIGHT_OK},
        {MONLIGHT_OPT_BASE_URL, 1, MONLIGHT_INVALID_ARGUMENT},
    };
    monlight_options *options = monlight_options_new();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(monlight_options_set_number(options, cases[i].option,
                                                     cases[i].value),
                         cases[i].expected);
    assert_int_equal(monlight_options_set_string(options, MONLIGHT_OPT_TIMEOUT, "1", 1),
                     MONLIGHT_INVALID_ARGUMENT);
    monlight_options_free(options);
}

static void status_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(monlight_status_name(MONLIGHT_OK), "OK");
    assert_string_equal(monlight_status_name(MONLIGHT_TIMED_OUT), "TIMED_OUT");
    assert_string_equal(monlight_status_name((monlight_status)999), "UNKNOWN");
    assert_string_equal(monlight_status_message(MONLIGHT_SHUT_DOWN),
                        "client is shut down");
    assert_string_equal(monlight_version(), MONLIGHT_VERSION_STRING);
    assert_true(MONLIGHT_VERSION_NUMBER == 0x000100);
}

static void metrics_refused_on_shut_down_client(void **state)
{
    (void)state;
    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, "http://127.0.0.1:1", 18);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "k", 1);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 0);
    monlight_metrics_client *metrics = NULL;
    assert_int_equal(monlight_metrics_client_new(options, &metrics), MONLIGHT_OK);
    monlight_options_free(options); /* the client keeps its own copy */

    assert_int_equal(monlight_counter(metrics, "a", 1, NULL, 0), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_shutdown(metrics), MONLIGHT_OK);
    assert_int_equal(monlight_metrics_client_stat(metrics, MONLIGHT_STAT_DROPPED), 1);
    assert_int_equal(monlight_counter(metrics, "a", 1, NULL, 0), MONLIGHT_SHUT_DOWN);
    char reason[128];
    monlight_metrics_client_last_error(metrics, reason, sizeof reason);
    assert_non_null(strstr(reason, "shut down"));
    assert_int_equal(monlight_metrics_client_start(metrics), MONLIGHT_SHUT_DOWN);
    assert_int_equal(monlight_metrics_client_flush(metrics), MONLIGHT_SHUT_DOWN);
    assert_int_equal(monlight_metrics_client_shutdown(metrics), MONLIGHT_OK);
    monlight_metrics_client_free(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(api_accepts_null_everywhere),
        cmocka_unit_test(client_needs_url_and_key),
        cmocka_unit_test(base_url_validation_table),
        cmocka_unit_test(api_key_rejects_header_injection),
        cmocka_unit_test(number_options_table),
        cmocka_unit_test(status_names_and_messages),
        cmocka_unit_test(metrics_refused_on_shut_down_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
