/*
 * test_json.c: UTF-8 repair, cutting at character boundaries, JSON string
 * escaping, number and timestamp formatting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static void utf8_validity_table(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t length;
        bool valid;
    } cases[] = {
        {"plain ascii", 11, true},
        {"caf\xC3\xA9", 5, true},
        {"\xCE\xB1\xCE\xB2\xCE\xB3", 6, true},       /* Greek */
        {"\xF0\x9F\x98\x80", 4, true},               /* emoji */
        {"nul\0inside", 10, true},                   /* NUL is valid UTF-8 */
        {"\xC3", 1, false},                          /* truncated */
        {"\xC0\xAF", 2, false},                      /* overlong */
        {"\xED\xA0\x80", 3, false},                  /* surrogate */
        {"\xF4\x90\x80\x80", 4, false},              /* past U+10FFFF */
        {"\xFF", 1, false},
        {"ok\x80", 3, false},                        /* stray continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(ml_utf8_valid(cases[i].bytes, cases[i].length),
                         cases[i].valid);
}

static void utf8_sanitize_replaces_invalid(void **state)
{
    (void)state;
    ml_buf out;
    ml_buf_init(&out);
    ml_utf8_sanitize(&out, "a\xFF" "b\xC3", 4);
    assert_int_equal(out.length, 8);
    assert_memory_equal(out.data, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD", 8);
    assert_true(ml_utf8_valid(out.data, out.length));
    ml_buf_free(&out);
}

static void utf8_cut_keeps_characters_whole(void **state)
{
    (void)state;
    const char *greek = "\xCE\xB1\xCE\xB2\xCE\xB3"; /* three 2-byte letters */
    assert_int_equal(ml_utf8_cut(greek, 6, 6), 6);
    assert_int_equal(ml_utf8_cut(greek, 6, 5), 4);
    assert_int_equal(ml_utf8_cut(greek, 6, 3), 2);
    assert_int_equal(ml_utf8_cut(greek, 6, 1), 0);
    assert_int_equal(ml_utf8_cut("abc", 3, 2), 2);
}

/* Escapes text, parses it back with cJSON, and compares. */
static void assert_round_trip(const char *text, size_t length)
{
    ml_buf out;
    ml_buf_init(&out);
    ml_json_append_string(&out, text, length);
    assert_int_equal(out.length, ml_json_string_size(text, length));
    cJSON *parsed = cJSON_ParseWithLength(out.data, out.length);
    assert_non_null(parsed);
    assert_true(cJSON_IsString(parsed));
    /* cJSON stops strings at NUL, so compare up to the first one. */
    size_t visible = strnlen(text, length);
    assert_int_equal(strlen(parsed->valuestring), visible);
    assert_memory_equal(parsed->valuestring, text, visible);
    cJSON_Delete(parsed);
    ml_buf_free(&out);
}

static void json_string_escapes_round_trip(void **state)
{
    (void)state;
#define ROUND_TRIP(literal) assert_round_trip(literal, sizeof literal - 1)
    ROUND_TRIP("say \"hi\"");
    ROUND_TRIP("back\\slash");
    ROUND_TRIP("line\nbreak\ttab\rcr");
    ROUND_TRIP("\x01\x02\x1F\x7F");
    ROUND_TRIP("\xCE\xB1\xCE\xB2 \xF0\x9F\x98\x80");
    ROUND_TRIP("");
#undef ROUND_TRIP
}

static void json_string_escapes_nul(void **state)
{
    (void)state;
    ml_buf out;
    ml_buf_init(&out);
    ml_json_append_string(&out, "a\0b", 3);
    assert_string_equal(ml_buf_cstr(&out), "\"a\\u0000b\"");
    ml_buf_free(&out);
}

static void json_numbers_table(void **state)
{
    (void)state;
    static const struct {
        double value;
        const char *text;
    } cases[] = {
        {1, "1"},       {0, "0"},         {-3, "-3"},
        {0.5, "0.5"},   {0.1, "0.1"},     {42.25, "42.25"},
        {1e300, "1.00000000000000005e+300"},
        {123456789012345.0, "123456789012345"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ml_buf out;
        ml_buf_init(&out);
        ml_json_append_number(&out, cases[i].value);
        const char *text = ml_buf_cstr(&out);
        /* The exact digits of 1e300 depend on the C library, so that case
         * only has to read back as the same value. */
        if (cases[i].value == 1e300)
            assert_true(strtod(text, NULL) == 1e300);
        else
            assert_string_equal(text, cases[i].text);
        ml_buf_free(&out);
    }
}

static void timestamp_format_is_contract_shape(void **state)
{
    (void)state;
    char text[21];
    ml_format_timestamp(0, text);
    assert_string_equal(text, "1970-01-01T00:00:00Z");
    ml_format_timestamp(1796342400, text); /* 2026-12-04T00:00:00Z */
    assert_string_equal(text, "2026-12-04T00:00:00Z");
}

static void buffer_grows_from_stack_storage(void **state)
{
    (void)state;
    char storage[8];
    ml_buf buf;
    ml_buf_init_with(&buf, storage, sizeof storage);
    ml_buf_append_str(&buf, "0123456789abcdef");
    ml_buf_printf(&buf, "-%d", 42);
    assert_false(buf.failed);
    assert_false(buf.borrowed);
    assert_string_equal(ml_buf_cstr(&buf), "0123456789abcdef-42");
    ml_buf_free(&buf);
}

static void backoff_grows_and_honours_retry_after(void **state)
{
    (void)state;
    for (int attempt = 1; attempt <= 10; attempt++) {
        double delay = ml_backoff_delay(attempt, 60, 0);
        double ceiling = attempt >= 7 ? 60 : (double)(1 << (attempt - 1));
        assert_true(delay >= ceiling / 2 && delay <= ceiling);
    }
    assert_true(ml_backoff_delay(1, 60, 7) == 7);
}

static void labels_json_validation_table(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool valid;
    } cases[] = {
        {"{}", true},
        {"{\"k\":\"v\"}", true},
        {" { \"a\" : \"1\" , \"b\":\"\\u00e9\\n\" } ", true},
        {"{\"k\":\"\xCE\xB1\"}", true},
        {"{\"k\":1}", false},                /* values must be strings */
        {"{\"k\":\"v\"}garbage", false},      /* trailing bytes */
        {"{\"k\":\"a\x01b\"}", false},       /* raw control character */
        {"{\"k\":\"\\x\"}", false},          /* unknown escape */
        {"{\"k\":\"\\u12\"}", false},        /* short unicode escape */
        {"{\"k\":\"v\",}", false},
        {"{\"k\" \"v\"}", false},
        {"[\"k\"]", false},
        {"{\"k\":\"\xFF\"}", false},          /* invalid UTF-8 */
        {"{\"k\":\"v\"", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(ml_labels_json_valid(cases[i].text, strlen(cases[i].text)),
                         cases[i].valid);
    /* Text after an embedded NUL is trailing bytes too. */
    assert_false(ml_labels_json_valid("{}\0{}", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_validity_table),
        cmocka_unit_test(utf8_sanitize_replaces_invalid),
        cmocka_unit_test(utf8_cut_keeps_characters_whole),
        cmocka_unit_test(json_string_escapes_round_trip),
        cmocka_unit_test(json_string_escapes_nul),
        cmocka_unit_test(json_numbers_table),
        cmocka_unit_test(timestamp_format_is_contract_shape),
        cmocka_unit_test(buffer_grows_from_stack_storage),
        cmocka_unit_test(backoff_grows_and_honours_retry_after),
        cmocka_unit_test(labels_json_validation_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
