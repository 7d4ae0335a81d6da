/*
 * fuzz_report.c: libFuzzer target for the error report builder. The
 * input is split at 0xFF bytes into the report's fields and headers; the
 * body built from them must always be valid UTF-8 JSON within the size
 * limit, whatever the bytes.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* A small limit reaches the trimming paths with small inputs; the
 * builder guarantees its limit from 16 KiB up. */
#define FUZZ_BODY_MAX 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const monlight_report_field fields[] = {
        MONLIGHT_FIELD_EXCEPTION_TYPE, MONLIGHT_FIELD_MESSAGE,
        MONLIGHT_FIELD_TRACEBACK,      MONLIGHT_FIELD_REQUEST_URL,
        MONLIGHT_FIELD_REQUEST_METHOD, MONLIGHT_FIELD_USER_ID,
        MONLIGHT_FIELD_EXTRA_JSON,
    };
    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, "http://h", 8);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "k", 1);
    monlight_options_add_excluded_header(options, "x-private", 9);
    monlight_report *report = monlight_report_new();

    /* Fields first, then name/value pairs of headers. */
    const char *text = (const char *)data;
    size_t start = 0, part = 0;
    const char *pending_name = NULL;
    size_t pending_length = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != 0xFF)
            continue;
        size_t length = i - start;
        if (part == 0) {
            monlight_options_set_string(options, MONLIGHT_OPT_PROJECT, text + start,
                                        length);
        } else if (part <= sizeof fields / sizeof *fields) {
            monlight_report_set(report, fields[part - 1], text + start, length);
        } else if (!pending_name) {
            pending_name = text + start;
            pending_length = length;
        } else {
            monlight_report_add_header(report, pending_name, pending_length,
                                       text + start, length);
            pending_name = NULL;
        }
        part++;
        start = i + 1;
    }

    ml_config config;
    ml_log_limiter limiter;
    ml_log_limiter_init(&limiter);
    if (ml_config_init(&config, options, "/api/errors") == MONLIGHT_OK) {
        /* Warnings about the input are expected; keep them quiet. */
        config.logger.callback = NULL;
        limiter.emitted = ML_LOG_BURST;
        limiter.window_start = INT64_MAX / 2;
        ml_buf body;
        ml_buf_init(&body);
        if (ml_report_build(report, &config, FUZZ_BODY_MAX, &body, &limiter) ==
            MONLIGHT_OK) {
            if (body.length > FUZZ_BODY_MAX || !ml_utf8_valid(body.data, body.length))
                abort();
            cJSON *parsed = cJSON_ParseWithLength(body.data, body.length);
            if (!parsed || !cJSON_IsObject(parsed))
                abort();
            cJSON_Delete(parsed);
        }
        ml_buf_free(&body);
        ml_config_free(&config);
    }

    ml_log_limiter_destroy(&limiter);
    monlight_report_free(report);
    monlight_options_free(options);
    return 0;
}
