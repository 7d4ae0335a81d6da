/*
 * fuzz_labels.c: libFuzzer target for metric recording and batch
 * serialisation. The input becomes a metric name, labels (split at 0xFF
 * bytes) and a label JSON text; every batch the client builds must
 * serialise to a valid UTF-8 JSON array within the collector's limits.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(monlight_log_level level, const char *message, void *user_data)
{
    (void)level, (void)message, (void)user_data;
}

static bool batch_is_valid(const char *body, size_t length, size_t count)
{
    if (length > ML_METRICS_BODY_MAX || count == 0 || count > ML_METRICS_BATCH_MAX ||
        !ml_utf8_valid(body, length))
        return false;
    cJSON *parsed = cJSON_ParseWithLength(body, length);
    bool valid = parsed && cJSON_IsArray(parsed) &&
                 (size_t)cJSON_GetArraySize(parsed) == count;
    cJSON_Delete(parsed);
    return valid;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    monlight_label labels[16];
    size_t label_count = 0;
    size_t start = 0;
    const char *name = text;
    size_t name_length = 0;
    bool have_name = false;

    for (size_t i = 0; i <= size && label_count < 16; i++) {
        if (i < size && data[i] != 0xFF)
            continue;
        if (!have_name) {
            name_length = i - start;
            have_name = true;
        } else {
            labels[label_count].key = text + start;
            labels[label_count].key_length = (i - start) / 2;
            labels[label_count].value = text + start + (i - start) / 2;
            labels[label_count].value_length = (i - start) - (i - start) / 2;
            label_count++;
        }
        start = i + 1;
    }

    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, "http://127.0.0.1:1", 18);
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, "k", 1);
    monlight_options_set_string(options, MONLIGHT_OPT_PROJECT, text,
                                size < 8 ? size : 8);
    monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 0);
    monlight_options_set_number(options, MONLIGHT_OPT_MAX_LABEL_SETS, 2);
    monlight_options_set_log(options, quiet, NULL);
    monlight_metrics_client *client = NULL;
    if (monlight_metrics_client_new(options, &client) != MONLIGHT_OK)
        abort();
    monlight_options_free(options);

    monlight_counter(client, "fixed", 1, labels, label_count);
    monlight_metrics_client_record(client, MONLIGHT_GAUGE, name, name_length, 2.5,
                                   labels, label_count);
    monlight_metrics_client_record_json(client, MONLIGHT_HISTOGRAM, "json", 4, 1, text,
                                        size);

    /* Serialise what was buffered the way a flush would, and check it. */
    if (!ml_metrics_client_check_batches(client, batch_is_valid))
        abort();

    monlight_metrics_client_free(client);
    return 0;
}
