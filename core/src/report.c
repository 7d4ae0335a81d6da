/*
 * report.c: error reports, from the application's fields to the JSON body
 * the error tracker accepts.
 *
 * The tracker rejects a body over 256 KiB, a project over 100 bytes and an
 * exception type over 200 bytes. A report is never rejected here for any
 * of these. Long names are shortened at a character boundary, and a body
 * that would be too large is trimmed: traceback first (keeping its start
 * and its last frames, which the tracker groups by), then the message,
 * then `extra`. What was trimmed is listed in extra.monlight_trimmed,
 * where people reading the report see it.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of a trimmed traceback kept from its start: the exception line of
 * a Python traceback is at its end, but JavaScript stacks put the frame
 * the tracker groups by first. */
#define TRACEBACK_HEAD_KEEP 2048

/* Minimum sizes that trimming keeps of the traceback and the message
 * before it moves to the next field, and the cuts for the small fields,
 * which apply only when a body is too large even without traceback,
 * message and extra. Each is a fraction of the body limit: 8 KiB, 2 KiB,
 * 8 KiB and 1 KiB for the tracker's 256 KiB. */
#define TRACEBACK_MIN_KEEP(max_body) ((max_body) / 32)
#define MESSAGE_MIN_KEEP(max_body) ((max_body) / 128)
#define SMALL_FIELD_MAX(max_body) ((max_body) / 32)
#define HEADER_VALUE_MAX(max_body) ((max_body) / 256)

/* The cut for the small fields when nothing else is left to trim. */
#define LAST_RESORT_FIELD_MAX 64

/* Room left for the trimming markers and the monlight_trimmed key. */
#define MARKER_ROOM 512

monlight_report *monlight_report_new(void)
{
    return calloc(1, sizeof(monlight_report));
}

static void text_free(ml_text *text)
{
    free(text->data);
    text->data = NULL;
    text->length = 0;
    text->set = false;
}

void monlight_report_free(monlight_report *report)
{
    if (!report)
        return;
    text_free(&report->exception_type);
    text_free(&report->message);
    text_free(&report->traceback);
    text_free(&report->request_url);
    text_free(&report->request_method);
    text_free(&report->user_id);
    text_free(&report->extra_json);
    for (size_t i = 0; i < report->header_count; i++) {
        text_free(&report->headers[i].name);
        text_free(&report->headers[i].value);
    }
    free(report->headers);
    free(report);
}

static monlight_status text_set(ml_text *text, const char *value,
                                size_t length)
{
    if (!value && length > 0)
        return MONLIGHT_INVALID_ARGUMENT;
    char *copy = malloc(length + 1);
    if (!copy)
        return MONLIGHT_NO_MEMORY;
    if (length)
        memcpy(copy, value, length);
    copy[length] = '\0';
    free(text->data);
    text->data = copy;
    text->length = length;
    text->set = true;
    return MONLIGHT_OK;
}

monlight_status monlight_report_set(monlight_report *report,
                                    monlight_report_field field,
                                    const char *value, size_t length)
{
    if (!report)
        return MONLIGHT_INVALID_ARGUMENT;
    switch (field) {
    case MONLIGHT_FIELD_EXCEPTION_TYPE:
        return text_set(&report->exception_type, value, length);
    case MONLIGHT_FIELD_MESSAGE:
        return text_set(&report->message, value, length);
    case MONLIGHT_FIELD_TRACEBACK:
        return text_set(&report->traceback, value, length);
    case MONLIGHT_FIELD_REQUEST_URL:
        return text_set(&report->request_url, value, length);
    case MONLIGHT_FIELD_REQUEST_METHOD:
        return text_set(&report->request_method, value, length);
    case MONLIGHT_FIELD_USER_ID:
        return text_set(&report->user_id, value, length);
    case MONLIGHT_FIELD_EXTRA_JSON:
        return text_set(&report->extra_json, value, length);
    }
    return MONLIGHT_INVALID_ARGUMENT;
}

monlight_status monlight_report_add_header(monlight_report *report,
                                           const char *name,
                                           size_t name_length,
                                           const char *value,
                                           size_t value_length)
{
    if (!report || (!name && name_length) || (!value && value_length))
        return MONLIGHT_INVALID_ARGUMENT;

    if (report->header_count == report->header_capacity) {
        size_t capacity = report->header_capacity ? report->header_capacity * 2 : 8;
        ml_header *grown = realloc(report->headers, capacity * sizeof *grown);
        if (!grown)
            return MONLIGHT_NO_MEMORY;
        report->headers = grown;
        report->header_capacity = capacity;
    }

    ml_header *header = &report->headers[report->header_count];
    memset(header, 0, sizeof *header);
    if (text_set(&header->name, name, name_length) != MONLIGHT_OK ||
        text_set(&header->value, value, value_length) != MONLIGHT_OK) {
        text_free(&header->name);
        text_free(&header->value);
        return MONLIGHT_NO_MEMORY;
    }
    report->header_count++;
    return MONLIGHT_OK;
}

/* ------------------------------------------------------------------ */
/* Building the body                                                  */
/* ------------------------------------------------------------------ */

/* A field's text after UTF-8 repair, before escaping. */
typedef struct clean_text {
    ml_buf text;
    bool present;
} clean_text;

static void clean(clean_text *out, const ml_text *in)
{
    ml_buf_init(&out->text);
    out->present = in->set;
    if (in->set)
        ml_utf8_sanitize(&out->text, in->data, in->length);
}

/* Shortens a clean text to at most max bytes at a character boundary;
 * returns the number of bytes removed. */
static size_t shorten(clean_text *field, size_t max)
{
    size_t kept = ml_utf8_cut(field->text.data, field->text.length, max);
    size_t removed = field->text.length - kept;
    field->text.length = kept;
    return removed;
}

static bool header_name_valid(const char *name, size_t length)
{
    /* An HTTP token: a name with other bytes is not a header at all and
     * could carry anything, so it is dropped rather than forwarded. */
    if (length == 0)
        return false;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7F || strchr("\"(),/:;<=>?@[\\]{}", c))
            return false;
    }
    return true;
}

/*
 * Parses extra as JSON. Returns an object the caller frees: the parsed
 * object, or one that wraps a value of another type or text that is not
 * JSON, so that nothing the application sent is lost.
 */
static cJSON *parse_extra(const ml_text *extra, const ml_logger *logger,
                          ml_log_limiter *limiter)
{
    cJSON *parsed = cJSON_ParseWithLength(extra->data, extra->length);
    if (parsed && cJSON_IsObject(parsed))
        return parsed;

    cJSON *wrapper = cJSON_CreateObject();
    if (!wrapper) {
        cJSON_Delete(parsed);
        return NULL;
    }
    if (parsed) {
        cJSON_AddItemToObject(wrapper, "value", parsed);
        ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
               "error report: extra is not a JSON object; sent as "
               "extra.value");
    } else {
        ml_buf text;
        ml_buf_init(&text);
        ml_utf8_sanitize(&text, extra->data, extra->length);
        cJSON_AddStringToObject(wrapper, "text", ml_buf_cstr(&text));
        ml_buf_free(&text);
        ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
               "error report: extra is not valid JSON; sent as extra.text");
    }
    return wrapper;
}

/* Prints a JSON tree compactly and repairs any invalid UTF-8 that came
 * through cJSON's strings, which it copies without checking. */
static void print_json(const cJSON *tree, clean_text *out)
{
    ml_buf_init(&out->text);
    out->present = tree != NULL;
    if (!tree)
        return;
    char *printed = cJSON_PrintUnformatted(tree);
    if (!printed) {
        out->text.failed = true;
        return;
    }
    ml_utf8_sanitize(&out->text, printed, strlen(printed));
    cJSON_free(printed);
}

/*
 * Cuts a traceback to at most budget bytes of escaped JSON: its first
 * TRACEBACK_HEAD_KEEP bytes, a marker line, and as much of its end as fits.
 */
static void trim_traceback(clean_text *field, size_t budget)
{
    const char *s = field->text.data;
    size_t length = field->text.length;
    char marker[128];

    size_t head = ml_utf8_cut(s, length, TRACEBACK_HEAD_KEEP);
    size_t head_size = ml_json_string_size(s, head);
    int marker_length = snprintf(marker, sizeof marker,
                                 "\n... [monlight: traceback trimmed, "
                                 "%zu bytes removed] ...\n",
                                 (size_t)0);
    size_t fixed = head_size + (size_t)marker_length + 16;
    if (fixed >= budget) {
        head = 0;
        fixed = (size_t)marker_length + 16;
    }

    /* Walk back from the end, one character at a time, until the escaped
     * tail would exceed what is left of the budget. */
    size_t tail_budget = budget > fixed ? budget - fixed : 0;
    size_t tail_start = length;
    size_t tail_size = 0;
    while (tail_start > head) {
        size_t start = tail_start - 1;
        while (start > head && ((unsigned char)s[start] & 0xC0) == 0x80)
            start--;
        size_t char_size = ml_json_string_size(s + start, tail_start - start) - 2;
        if (tail_size + char_size > tail_budget)
            break;
        tail_size += char_size;
        tail_start = start;
    }

    ml_buf trimmed;
    ml_buf_init(&trimmed);
    ml_buf_append(&trimmed, s, head);
    ml_buf_printf(&trimmed,
                  "\n... [monlight: traceback trimmed, %zu bytes removed] ...\n",
                  tail_start - head);
    ml_buf_append(&trimmed, s + tail_start, length - tail_start);
    ml_buf_free(&field->text);
    field->text = trimmed;
}

/* Cuts a message to about budget escaped bytes, keeping its start. */
static void trim_message(clean_text *field, size_t budget)
{
    const char *s = field->text.data;
    size_t kept = 0;
    size_t size = 2 + 96; /* quotes and the marker */

    while (kept < field->text.length) {
        size_t next = kept + 1;
        while (next < field->text.length &&
               ((unsigned char)s[next] & 0xC0) == 0x80)
            next++;
        size_t char_size = ml_json_string_size(s + kept, next - kept) - 2;
        if (size + char_size > budget)
            break;
        size += char_size;
        kept = next;
    }

    size_t removed = field->text.length - kept;
    field->text.length = kept;
    ml_buf_printf(&field->text, " ... [monlight: message trimmed, %zu bytes removed]",
                  removed);
}

typedef struct body_parts {
    clean_text project;
    clean_text exception_type;
    clean_text message;
    clean_text traceback;
    clean_text request_url;
    clean_text request_method;
    clean_text user_id;
    clean_text environment;
    clean_text *header_names;
    clean_text *header_values;
    size_t header_count;
    cJSON *extra;
} body_parts;

static void parts_free(body_parts *parts)
{
    ml_buf_free(&parts->project.text);
    ml_buf_free(&parts->exception_type.text);
    ml_buf_free(&parts->message.text);
    ml_buf_free(&parts->traceback.text);
    ml_buf_free(&parts->request_url.text);
    ml_buf_free(&parts->request_method.text);
    ml_buf_free(&parts->user_id.text);
    ml_buf_free(&parts->environment.text);
    for (size_t i = 0; i < parts->header_count; i++) {
        ml_buf_free(&parts->header_names[i].text);
        ml_buf_free(&parts->header_values[i].text);
    }
    free(parts->header_names);
    free(parts->header_values);
    cJSON_Delete(parts->extra);
}

static void append_field(ml_buf *out, const char *key, const clean_text *field,
                         bool *first)
{
    if (!field->present)
        return;
    if (!*first)
        ml_buf_append_char(out, ',');
    *first = false;
    ml_json_append_string(out, key, strlen(key));
    ml_buf_append_char(out, ':');
    ml_json_append_string(out, field->text.data ? field->text.data : "",
                          field->text.length);
}

/* Writes the body from parts; extra_text is the printed extra or NULL. */
static void write_body(const body_parts *parts, const clean_text *extra_text,
                       ml_buf *out)
{
    bool first = true;

    ml_buf_append_char(out, '{');
    append_field(out, "project", &parts->project, &first);
    append_field(out, "exception_type", &parts->exception_type, &first);
    append_field(out, "message", &parts->message, &first);
    append_field(out, "traceback", &parts->traceback, &first);
    append_field(out, "request_url", &parts->request_url, &first);
    append_field(out, "request_method", &parts->request_method, &first);

    bool any_header = false;
    for (size_t i = 0; i < parts->header_count; i++) {
        if (!parts->header_names[i].present)
            continue;
        ml_buf_append_str(out, any_header ? "," : ",\"request_headers\":{");
        any_header = true;
        ml_json_append_string(out, parts->header_names[i].text.data,
                              parts->header_names[i].text.length);
        ml_buf_append_char(out, ':');
        ml_json_append_string(out,
                              parts->header_values[i].text.data
                                  ? parts->header_values[i].text.data
                                  : "",
                              parts->header_values[i].text.length);
    }
    if (any_header)
        ml_buf_append_char(out, '}');

    append_field(out, "user_id", &parts->user_id, &first);
    if (extra_text && extra_text->present) {
        ml_buf_append_str(out, ",\"extra\":");
        ml_buf_append(out, extra_text->text.data, extra_text->text.length);
    }
    append_field(out, "environment", &parts->environment, &first);
    ml_buf_append_char(out, '}');
}

/* Returns the size of the body written from parts as they are now. */
static size_t measure(const body_parts *parts, const clean_text *extra_text)
{
    ml_buf scratch;
    ml_buf_init(&scratch);
    write_body(parts, extra_text, &scratch);
    size_t size = scratch.failed ? SIZE_MAX : scratch.length;
    ml_buf_free(&scratch);
    return size;
}

static void collect_parts(body_parts *parts, const monlight_report *report,
                          const ml_config *config, const ml_logger *logger,
                          ml_log_limiter *limiter)
{
    static const ml_text default_project = {"default", 7, true};
    static const ml_text default_environment = {"prod", 4, true};
    ml_text project = default_project;
    ml_text environment = default_environment;

    if (config->project)
        project = (ml_text){config->project, strlen(config->project), true};
    if (config->environment)
        environment = (ml_text){config->environment,
                                strlen(config->environment), true};
    clean(&parts->project, &project);
    clean(&parts->environment, &environment);
    clean(&parts->exception_type, &report->exception_type);
    clean(&parts->message, &report->message);
    clean(&parts->traceback, &report->traceback);
    clean(&parts->request_url, &report->request_url);
    clean(&parts->request_method, &report->request_method);
    clean(&parts->user_id, &report->user_id);

    /* The three required strings are sent even when the caller left them
     * unset, so that the tracker stores the report instead of a 400. */
    parts->exception_type.present = true;
    parts->message.present = true;
    parts->traceback.present = true;
    if (parts->exception_type.text.length == 0)
        ml_buf_append_str(&parts->exception_type.text, "Error");

    if (shorten(&parts->project, ML_PROJECT_MAX) > 0)
        ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
               "error report: project is over %u bytes; shortened",
               ML_PROJECT_MAX);
    if (shorten(&parts->exception_type, ML_EXCEPTION_TYPE_MAX) > 0)
        ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
               "error report: exception_type is over %u bytes; shortened",
               ML_EXCEPTION_TYPE_MAX);

    parts->header_count = report->header_count;
    parts->header_names = calloc(report->header_count + 1, sizeof(clean_text));
    parts->header_values = calloc(report->header_count + 1, sizeof(clean_text));
    if (!parts->header_names || !parts->header_values) {
        parts->header_count = 0;
        parts->project.text.failed = true;
        return;
    }
    for (size_t i = 0; i < report->header_count; i++) {
        const ml_header *header = &report->headers[i];
        ml_buf_init(&parts->header_names[i].text);
        ml_buf_init(&parts->header_values[i].text);
        if (ml_header_excluded(config, header->name.data, header->name.length))
            continue;
        if (!header_name_valid(header->name.data, header->name.length)) {
            ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
                   "error report: request header name with invalid bytes "
                   "dropped");
            continue;
        }
        clean(&parts->header_names[i], &header->name);
        clean(&parts->header_values[i], &header->value);
    }

    if (report->extra_json.set)
        parts->extra = parse_extra(&report->extra_json, logger, limiter);
}

monlight_status ml_report_build(const monlight_report *report,
                                 const ml_config *config, size_t max_body,
                                 ml_buf *out, ml_log_limiter *limiter)
{
    const ml_logger *logger = &config->logger;
    body_parts parts;
    memset(&parts, 0, sizeof parts);

    collect_parts(&parts, report, config, logger, limiter);
    clean_text extra_text;
    print_json(parts.extra, &extra_text);

    size_t limit = max_body > MARKER_ROOM * 2 ? max_body - MARKER_ROOM : max_body;
    size_t size = measure(&parts, &extra_text);
    const char *trimmed[4];
    size_t trimmed_count = 0;

    if (size > limit && size != SIZE_MAX) {
        /* The small fields first, only when they alone are too large. */
        size_t fixed = size - ml_json_string_size(parts.traceback.text.data,
                                                  parts.traceback.text.length) -
                       ml_json_string_size(parts.message.text.data,
                                           parts.message.text.length) -
                       extra_text.text.length;
        if (fixed > limit / 4) {
            shorten(&parts.request_url, SMALL_FIELD_MAX(max_body));
            shorten(&parts.request_method, 64);
            shorten(&parts.user_id, SMALL_FIELD_MAX(max_body));
            shorten(&parts.environment, ML_PROJECT_MAX);
            for (size_t i = 0; i < parts.header_count; i++)
                shorten(&parts.header_values[i], HEADER_VALUE_MAX(max_body));
            trimmed[trimmed_count++] = "request";
            size = measure(&parts, &extra_text);
        }
    }

    if (size > limit && size != SIZE_MAX) {
        size_t traceback_size = ml_json_string_size(
            parts.traceback.text.data, parts.traceback.text.length);
        size_t excess = size - limit;
        size_t target = traceback_size > excess ? traceback_size - excess : 0;
        if (target < TRACEBACK_MIN_KEEP(max_body))
            target = TRACEBACK_MIN_KEEP(max_body);
        if (target < traceback_size) {
            trim_traceback(&parts.traceback, target);
            trimmed[trimmed_count++] = "traceback";
            size = measure(&parts, &extra_text);
        }
    }

    if (size > limit && size != SIZE_MAX) {
        size_t message_size = ml_json_string_size(parts.message.text.data,
                                                  parts.message.text.length);
        size_t excess = size - limit;
        size_t target = message_size > excess ? message_size - excess : 0;
        if (target < MESSAGE_MIN_KEEP(max_body))
            target = MESSAGE_MIN_KEEP(max_body);
        if (target < message_size) {
            trim_message(&parts.message, target);
            trimmed[trimmed_count++] = "message";
            size = measure(&parts, &extra_text);
        }
    }

    if (size > limit && size != SIZE_MAX && parts.extra) {
        /* extra is replaced by its start, as text, inside a small object. */
        size_t excess = size - limit;
        size_t keep = extra_text.text.length > excess + 64
                          ? extra_text.text.length - excess - 64
                          : 0;
        keep = ml_utf8_cut(extra_text.text.data, extra_text.text.length, keep / 6);
        cJSON *replacement = cJSON_CreateObject();
        if (replacement) {
            ml_buf head;
            ml_buf_init(&head);
            ml_buf_append(&head, extra_text.text.data, keep);
            cJSON_AddStringToObject(replacement, "truncated_json",
                                    ml_buf_cstr(&head));
            ml_buf_free(&head);
        }
        cJSON_Delete(parts.extra);
        parts.extra = replacement;
        trimmed[trimmed_count++] = "extra";
    }

    if (trimmed_count > 0) {
        if (!parts.extra)
            parts.extra = cJSON_CreateObject();
        if (parts.extra) {
            cJSON_DeleteItemFromObjectCaseSensitive(parts.extra,
                                                    "monlight_trimmed");
            cJSON_AddItemToObject(
                parts.extra, "monlight_trimmed",
                cJSON_CreateStringArray(trimmed, (int)trimmed_count));
        }
        ml_buf_free(&extra_text.text);
        print_json(parts.extra, &extra_text);
        ml_log(logger, limiter, MONLIGHT_LOG_WARNING,
               "error report over %zu bytes; trimmed to fit", max_body);
    }

    ml_buf_clear(out);
    write_body(&parts, &extra_text, out);

    /* Thousands of headers, or small fields full of control characters
     * (six bytes each once escaped), can still overflow after every cut
     * above. The headers and extra go first, then every field is cut hard;
     * for a limit of 16 KiB or more the body then fits. */
    if (!out->failed && out->length > max_body) {
        for (size_t i = 0; i < parts.header_count; i++) {
            ml_buf_free(&parts.header_names[i].text);
            ml_buf_free(&parts.header_values[i].text);
        }
        parts.header_count = 0;
        cJSON_Delete(parts.extra);
        const char *dropped[] = {"request_headers", "extra"};
        parts.extra = cJSON_CreateObject();
        if (parts.extra)
            cJSON_AddItemToObject(parts.extra, "monlight_trimmed",
                                  cJSON_CreateStringArray(dropped, 2));
        ml_buf_free(&extra_text.text);
        print_json(parts.extra, &extra_text);
        ml_buf_clear(out);
        write_body(&parts, &extra_text, out);
    }
    if (!out->failed && out->length > max_body) {
        shorten(&parts.request_url, LAST_RESORT_FIELD_MAX);
        shorten(&parts.request_method, LAST_RESORT_FIELD_MAX);
        shorten(&parts.user_id, LAST_RESORT_FIELD_MAX);
        shorten(&parts.environment, LAST_RESORT_FIELD_MAX);
        if (ml_json_string_size(parts.traceback.text.data,
                                parts.traceback.text.length) > max_body / 4)
            trim_traceback(&parts.traceback, max_body / 4);
        if (ml_json_string_size(parts.message.text.data, parts.message.text.length) >
            max_body / 8)
            trim_message(&parts.message, max_body / 8);
        ml_buf_clear(out);
        write_body(&parts, &extra_text, out);
    }
    bool failed = out->failed || extra_text.text.failed || parts.project.text.failed;
    ml_buf_free(&extra_text.text);
    parts_free(&parts);
    return failed ? MONLIGHT_NO_MEMORY : MONLIGHT_OK;
}
