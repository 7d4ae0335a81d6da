/*
 * test_report.c: building error report bodies: every field, escaping,
 * header filtering, limits at character boundaries and trimming.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    monlight_options *options;
    ml_config config;
    ml_log_limiter limiter;
    monlight_report *report;
    ml_buf body;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->options = monlight_options_new();
    monlight_options_set_string(f->options, MONLIGHT_OPT_BASE_URL,
                                "http://127.0.0.1:1", 18);
    monlight_options_set_string(f->options, MONLIGHT_OPT_API_KEY, "k", 1);
    monlight_options_set_string(f->options, MONLIGHT_OPT_PROJECT, "shop", 4);
    monlight_options_set_string(f->options, MONLIGHT_OPT_ENVIRONMENT, "staging", 7);
    monlight_options_add_excluded_header(f->options, "X-Secret", 8);
    f->report = monlight_report_new();
    ml_log_limiter_init(&f->limiter);
    ml_buf_init(&f->body);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ml_config_free(&f->config);
    monlight_options_free(f->options);
    monlight_report_free(f->report);
    ml_log_limiter_destroy(&f->limiter);
    ml_buf_free(&f->body);
    free(f);
    return 0;
}

/* Builds the body, checks it is valid UTF-8 JSON within the limit, and
 * returns the parsed object. */
static cJSON *build(fixture *f, size_t limit)
{
    ml_config_free(&f->config);
    assert_int_equal(ml_config_init(&f->config, f->options, "/api/errors"),
                     MONLIGHT_OK);
    f->config.logger.callback = NULL;
    assert_int_equal(ml_report_build(f->report, &f->config, limit, &f->body,
                                     &f->limiter),
                     MONLIGHT_OK);
    assert_true(f->body.length <= limit);
    ml_buf_cstr(&f->body); /* NUL-terminated for strstr() below */
    assert_true(ml_utf8_valid(f->body.data, f->body.length));
    cJSON *parsed = cJSON_ParseWithLength(f->body.data, f->body.length);
    assert_non_null(parsed);
    return parsed;
}

static void set(fixture *f, monlight_report_field field, const char *text)
{
    assert_int_equal(monlight_report_set(f->report, field, text, strlen(text)),
                     MONLIGHT_OK);
}

static const char *string_field(cJSON *object, const char *name)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    assert_true(cJSON_IsString(item));
    return item->valuestring;
}

static void report_has_every_field(void **state)
{
    fixture *f = *state;
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "ValueError");
    set(f, MONLIGHT_FIELD_MESSAGE, "bad value");
    set(f, MONLIGHT_FIELD_TRACEBACK, "Traceback (most recent call last):\n"
                                     "  File \"/app/main.py\", line 3, in f\n");
    set(f, MONLIGHT_FIELD_REQUEST_URL, "http://example.test/users/42");
    set(f, MONLIGHT_FIELD_REQUEST_METHOD, "POST");
    set(f, MONLIGHT_FIELD_USER_ID, "42");
    set(f, MONLIGHT_FIELD_EXTRA_JSON, "{\"order\": 7, \"tags\": [\"a\"]}");
    monlight_report_add_header(f->report, "Content-Type", 12, "text/plain", 10);

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    assert_string_equal(string_field(body, "project"), "shop");
    assert_string_equal(string_field(body, "environment"), "staging");
    assert_string_equal(string_field(body, "exception_type"), "ValueError");
    assert_string_equal(string_field(body, "message"), "bad value");
    assert_non_null(strstr(string_field(body, "traceback"), "line 3"));
    assert_string_equal(string_field(body, "request_url"),
                        "http://example.test/users/42");
    assert_string_equal(string_field(body, "request_method"), "POST");
    assert_string_equal(string_field(body, "user_id"), "42");
    cJSON *extra = cJSON_GetObjectItem(body, "extra");
    assert_true(cJSON_IsObject(extra));
    assert_int_equal(cJSON_GetObjectItem(extra, "order")->valueint, 7);
    cJSON *headers = cJSON_GetObjectItem(body, "request_headers");
    assert_string_equal(string_field(headers, "Content-Type"), "text/plain");
    cJSON_Delete(body);
}

static void report_defaults_project_and_environment(void **state)
{
    fixture *f = *state;
    monlight_options_free(f->options);
    f->options = monlight_options_new();
    monlight_options_set_string(f->options, MONLIGHT_OPT_BASE_URL, "http://h", 8);
    monlight_options_set_string(f->options, MONLIGHT_OPT_API_KEY, "k", 1);
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    assert_string_equal(string_field(body, "project"), "default");
    assert_string_equal(string_field(body, "environment"), "prod");
    /* Required fields are present even when not set. */
    assert_string_equal(string_field(body, "message"), "");
    assert_string_equal(string_field(body, "traceback"), "");
    assert_null(cJSON_GetObjectItem(body, "user_id"));
    assert_null(cJSON_GetObjectItem(body, "request_headers"));
    cJSON_Delete(body);
}

static void report_escapes_text(void **state)
{
    fixture *f = *state;
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    const char message[] = "quote \" backslash \\ tab\t bell\x07 "
                           "\xCE\xB1\xCE\xB2 bad\xFF end";
    set(f, MONLIGHT_FIELD_MESSAGE, message);

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    const char *sent = string_field(body, "message");
    assert_non_null(strstr(sent, "quote \" backslash \\ tab\t bell\x07 "));
    assert_non_null(strstr(sent, "\xCE\xB1\xCE\xB2"));
    /* The invalid byte became U+FFFD. */
    assert_non_null(strstr(sent, "bad\xEF\xBF\xBD end"));
    cJSON_Delete(body);
}

static void report_escapes_nul_bytes(void **state)
{
    fixture *f = *state;
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    monlight_report_set(f->report, MONLIGHT_FIELD_MESSAGE, "a\0b", 3);
    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    assert_non_null(strstr(f->body.data, "\"a\\u0000b\""));
    cJSON_Delete(body);
}

static void report_filters_pii_headers(void **state)
{
    fixture *f = *state;
    static const char *const headers[][2] = {
        {"Authorization", "Bearer secret"}, {"COOKIE", "session=1"},
        {"set-cookie", "x=y"},               {"X-Api-Key", "key"},
        {"x-secret", "hidden"},              {"Accept", "*/*"},
        {"User-Agent", "curl"},              {"Bad Name", "dropped"},
    };
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++)
        monlight_report_add_header(f->report, headers[i][0], strlen(headers[i][0]),
                                   headers[i][1], strlen(headers[i][1]));

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    cJSON *sent = cJSON_GetObjectItem(body, "request_headers");
    assert_int_equal(cJSON_GetArraySize(sent), 2);
    /* Order is kept. */
    assert_string_equal(cJSON_GetArrayItem(sent, 0)->string, "Accept");
    assert_string_equal(cJSON_GetArrayItem(sent, 1)->string, "User-Agent");
    assert_null(strstr(f->body.data, "secret"));
    assert_null(strstr(f->body.data, "session"));
    assert_null(strstr(f->body.data, "hidden"));
    cJSON_Delete(body);
}

/* Builds text of `count` copies of a UTF-8 character. */
static char *repeat(const char *unit, size_t count)
{
    size_t unit_length = strlen(unit);
    char *text = malloc(unit_length * count + 1);
    for (size_t i = 0; i < count; i++)
        memcpy(text + i * unit_length, unit, unit_length);
    text[unit_length * count] = '\0';
    return text;
}

static void report_shortens_long_names(void **state)
{
    fixture *f = *state;
    char *project = repeat("\xCE\xB1", 75);   /* 150 bytes of Greek */
    char *type = repeat("\xE2\x82\xAC", 101); /* 303 bytes of euro signs */
    monlight_options_set_string(f->options, MONLIGHT_OPT_PROJECT, project,
                                strlen(project));
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, type);

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    const char *sent_project = string_field(body, "project");
    const char *sent_type = string_field(body, "exception_type");
    assert_int_equal(strlen(sent_project), 100);
    assert_int_equal(strlen(sent_type), 198); /* 66 whole euro signs */
    assert_true(ml_utf8_valid(sent_type, strlen(sent_type)));
    cJSON_Delete(body);
    free(project);
    free(type);
}

/* A traceback of `frames` Python frames, about 60 bytes each. */
static char *long_traceback(size_t frames)
{
    ml_buf text;
    ml_buf_init(&text);
    ml_buf_append_str(&text, "Traceback (most recent call last):\n");
    for (size_t i = 0; i < frames; i++)
        ml_buf_printf(&text, "  File \"/app/module%zu.py\", line %zu, in f\n", i,
                      i + 1);
    ml_buf_append_str(&text, "ValueError: boom\n");
    return (char *)ml_buf_cstr(&text);
}

static void report_trims_traceback_keeping_last_frames(void **state)
{
    fixture *f = *state;
    char *traceback = long_traceback(20000); /* about 900 KiB */
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "ValueError");
    set(f, MONLIGHT_FIELD_MESSAGE, "boom");
    set(f, MONLIGHT_FIELD_TRACEBACK, traceback);

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    const char *sent = string_field(body, "traceback");
    assert_non_null(strstr(sent, "module19999.py\", line 20000, in f\nValueError: boom"));
    assert_non_null(strstr(sent, "Traceback (most recent call last)"));
    assert_non_null(strstr(sent, "traceback trimmed"));
    assert_string_equal(string_field(body, "message"), "boom");
    cJSON *trimmed = cJSON_GetObjectItem(cJSON_GetObjectItem(body, "extra"),
                                         "monlight_trimmed");
    assert_true(cJSON_IsArray(trimmed));
    assert_string_equal(cJSON_GetArrayItem(trimmed, 0)->valuestring, "traceback");
    /* Most of the room is used, not just the minimum. */
    assert_true(f->body.length > ML_ERROR_BODY_MAX - 4096);
    cJSON_Delete(body);
    free(traceback);
}

static void report_trims_message_and_extra(void **state)
{
    fixture *f = *state;
    char *message = repeat("\xCE\xB1", 200000);       /* 400 KB */
    char *extra_text = repeat("x", 300000);
    ml_buf extra;
    ml_buf_init(&extra);
    ml_buf_printf(&extra, "{\"blob\": \"%s\"}", extra_text);
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    set(f, MONLIGHT_FIELD_MESSAGE, message);
    set(f, MONLIGHT_FIELD_EXTRA_JSON, ml_buf_cstr(&extra));

    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    const char *sent = string_field(body, "message");
    assert_non_null(strstr(sent, "message trimmed"));
    cJSON *sent_extra = cJSON_GetObjectItem(body, "extra");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(sent_extra, "truncated_json")));
    cJSON *trimmed = cJSON_GetObjectItem(sent_extra, "monlight_trimmed");
    assert_int_equal(cJSON_GetArraySize(trimmed), 2);
    cJSON_Delete(body);
    ml_buf_free(&extra);
    free(message);
    free(extra_text);
}

static void report_survives_thousands_of_headers(void **state)
{
    fixture *f = *state;
    char *value = repeat("v", 4000);
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    for (int i = 0; i < 2000; i++) {
        char name[32];
        snprintf(name, sizeof name, "X-Header-%d", i);
        monlight_report_add_header(f->report, name, strlen(name), value, 4000);
    }
    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    assert_string_equal(string_field(body, "exception_type"), "E");
    cJSON_Delete(body);
    free(value);
}

static void report_wraps_extra_that_is_not_an_object(void **state)
{
    fixture *f = *state;
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    set(f, MONLIGHT_FIELD_EXTRA_JSON, "[1, 2]");
    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    cJSON *extra = cJSON_GetObjectItem(body, "extra");
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(extra, "value")));
    cJSON_Delete(body);

    set(f, MONLIGHT_FIELD_EXTRA_JSON, "{not json");
    body = build(f, ML_ERROR_BODY_MAX);
    extra = cJSON_GetObjectItem(body, "extra");
    assert_string_equal(string_field(extra, "text"), "{not json");
    cJSON_Delete(body);
}

static void report_repairs_invalid_utf8_in_extra(void **state)
{
    fixture *f = *state;
    set(f, MONLIGHT_FIELD_EXCEPTION_TYPE, "E");
    set(f, MONLIGHT_FIELD_EXTRA_JSON, "{\"k\": \"bad\xFF\"}");
    cJSON *body = build(f, ML_ERROR_BODY_MAX);
    cJSON *extra = cJSON_GetObjectItem(body, "extra");
    assert_string_equal(string_field(extra, "k"), "bad\xEF\xBF\xBD");
    cJSON_Delete(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(report_has_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(report_defaults_project_and_environment,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(report_escapes_text, setup, teardown),
        cmocka_unit_test_setup_teardown(report_escapes_nul_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(report_filters_pii_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(report_shortens_long_names, setup, teardown),
        cmocka_unit_test_setup_teardown(report_trims_traceback_keeping_last_frames,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(report_trims_message_and_extra, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(report_survives_thousands_of_headers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(report_wraps_extra_that_is_not_an_object,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(report_repairs_invalid_utf8_in_extra, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
