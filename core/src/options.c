/*
 * options.c: the options object and the configuration a client copies
 * from it. Every value is checked here, when it is set, so that a client
 * never starts with a configuration it cannot use.
 */
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The largest value a number option takes: a billion metrics, or about
 * 31 years of seconds. */
#define OPTION_NUMBER_MAX 1e9

static const char *const pii_headers[] = {
    "authorization", "cookie", "set-cookie", "x-api-key",
};

static char *copy_text(const char *value, size_t length)
{
    char *copy = malloc(length + 1);
    if (!copy)
        return NULL;
    if (length)
        memcpy(copy, value, length);
    copy[length] = '\0';
    return copy;
}

static monlight_status fail(monlight_options *options, monlight_status status,
                            const char *format, ...) ML_PRINTF(3, 4);

static monlight_status fail(monlight_options *options, monlight_status status,
                            const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(options->last_error, sizeof options->last_error, format, args);
    va_end(args);
    return status;
}

monlight_options *monlight_options_new(void)
{
    monlight_options *options = calloc(1, sizeof *options);
    if (!options)
        return NULL;

    options->timeout = 5.0;
    options->flush_interval = 10.0;
    options->max_buffered = 100000;
    options->max_queued = 1000;
    options->exit_deadline = 3.0;
    options->max_label_sets = 1000;
    options->background_retry = 1;
    options->retry_max_delay = 60.0;
    options->max_buffered_bytes = 64.0 * 1024 * 1024;
    return options;
}

void monlight_options_free(monlight_options *options)
{
    if (!options)
        return;
    free(options->base_url);
    free(options->api_key);
    free(options->project);
    free(options->environment);
    free(options->ca_bundle);
    for (size_t i = 0; i < options->excluded_count; i++)
        free(options->excluded_headers[i]);
    free(options->excluded_headers);
    free(options);
}

/*
 * Checks a base URL: http:// or https://, a host, no whitespace or control
 * bytes. Returns NULL when it is acceptable, else the reason.
 */
static const char *base_url_problem(const char *value, size_t length)
{
    size_t scheme_length;

    if (length >= 7 && strncasecmp(value, "http://", 7) == 0)
        scheme_length = 7;
    else if (length >= 8 && strncasecmp(value, "https://", 8) == 0)
        scheme_length = 8;
    else
        return "must start with http:// or https://";

    if (length == scheme_length || value[scheme_length] == '/')
        return "has no host";
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c <= 0x20 || c == 0x7F)
            return "contains whitespace or a control character";
    }
    return NULL;
}

/* An API key travels in an HTTP header: only visible ASCII is allowed, so
 * that no value can end the header and inject another. */
static bool api_key_acceptable(const char *value, size_t length)
{
    if (length == 0)
        return false;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x21 || c > 0x7E)
            return false;
    }
    return true;
}

static monlight_status replace(monlight_options *options, char **slot,
                               const char *value, size_t length)
{
    char *copy = copy_text(value, length);
    if (!copy)
        return fail(options, MONLIGHT_NO_MEMORY, "out of memory");
    free(*slot);
    *slot = copy;
    return MONLIGHT_OK;
}

monlight_status monlight_options_set_string(monlight_options *options,
                                            monlight_option option,
                                            const char *value, size_t length)
{
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;
    if (!value && length > 0)
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "value is NULL with a non-zero length");
    if (!value)
        value = "";

    switch (option) {
    case MONLIGHT_OPT_BASE_URL: {
        const char *problem = base_url_problem(value, length);
        if (problem) {
            char shown[80];
            size_t n = length < sizeof shown - 1 ? length : sizeof shown - 1;
            for (size_t i = 0; i < n; i++)
                shown[i] = isprint((unsigned char)value[i]) ? value[i] : '?';
            shown[n] = '\0';
            return fail(options, MONLIGHT_INVALID_ARGUMENT,
                        "invalid base_url \"%s\": %s", shown, problem);
        }
        while (length > 0 && value[length - 1] == '/')
            length--;
        return replace(options, &options->base_url, value, length);
    }
    case MONLIGHT_OPT_API_KEY:
        /* The message never quotes the key. */
        if (!api_key_acceptable(value, length))
            return fail(options, MONLIGHT_INVALID_ARGUMENT,
                        "invalid api_key: it must be non-empty printable "
                        "ASCII without spaces, CR or LF");
        return replace(options, &options->api_key, value, length);
    case MONLIGHT_OPT_PROJECT:
        return replace(options, &options->project, value, length);
    case MONLIGHT_OPT_ENVIRONMENT:
        return replace(options, &options->environment, value, length);
    case MONLIGHT_OPT_CA_BUNDLE:
        if (length == 0 || memchr(value, '\0', length))
            return fail(options, MONLIGHT_INVALID_ARGUMENT,
                        "invalid ca_bundle: expected a file path");
        return replace(options, &options->ca_bundle, value, length);
    default:
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "option %d is not a string option", (int)option);
    }
}

monlight_status monlight_options_set_number(monlight_options *options,
                                            monlight_option option,
                                            double value)
{
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;
    if (!isfinite(value))
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "option %d must be a finite number", (int)option);

    double *slot;
    const char *name;
    double minimum;
    bool minimum_allowed; /* whether value == minimum is allowed */
    switch (option) {
    case MONLIGHT_OPT_TIMEOUT:
        slot = &options->timeout, name = "timeout", minimum = 0,
        minimum_allowed = false;
        break;
    case MONLIGHT_OPT_FLUSH_INTERVAL:
        slot = &options->flush_interval, name = "flush_interval",
        minimum = 0, minimum_allowed = false;
        break;
    case MONLIGHT_OPT_MAX_BUFFERED:
        slot = &options->max_buffered, name = "max_buffered", minimum = 1,
        minimum_allowed = true;
        break;
    case MONLIGHT_OPT_MAX_QUEUED:
        slot = &options->max_queued, name = "max_queued", minimum = 1,
        minimum_allowed = true;
        break;
    case MONLIGHT_OPT_EXIT_DEADLINE:
        /* 0 means: drop what is left at shutdown without sending it. */
        slot = &options->exit_deadline, name = "exit_deadline", minimum = 0,
        minimum_allowed = true;
        break;
    case MONLIGHT_OPT_MAX_LABEL_SETS:
        slot = &options->max_label_sets, name = "max_label_sets",
        minimum = 1, minimum_allowed = true;
        break;
    case MONLIGHT_OPT_BACKGROUND_RETRY:
        options->background_retry = value != 0;
        return MONLIGHT_OK;
    case MONLIGHT_OPT_MAX_BUFFERED_BYTES:
        /* At least one full batch, so that any metric can be kept. */
        slot = &options->max_buffered_bytes, name = "max_buffered_bytes",
        minimum = ML_METRICS_BODY_MAX, minimum_allowed = true;
        break;
    case MONLIGHT_OPT_RETRY_MAX_DELAY:
        slot = &options->retry_max_delay, name = "retry_max_delay",
        minimum = 0, minimum_allowed = false;
        break;
    default:
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "option %d is not a number option", (int)option);
    }

    if (value < minimum || (value == minimum && !minimum_allowed))
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "invalid %s %g: must be %s %g", name, value,
                    minimum_allowed ? "at least" : "greater than", minimum);
    /* Counts become size_t and durations are added to clock readings: a
     * bound keeps both conversions defined. */
    if (value > OPTION_NUMBER_MAX)
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "invalid %s %g: must be at most %g", name, value,
                    OPTION_NUMBER_MAX);
    *slot = value;
    return MONLIGHT_OK;
}

monlight_status monlight_options_add_excluded_header(monlight_options *options,
                                                     const char *name,
                                                     size_t length)
{
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;
    if (!name || length == 0)
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "excluded header name is empty");

    char **grown = realloc(options->excluded_headers,
                           (options->excluded_count + 1) * sizeof *grown);
    if (!grown)
        return fail(options, MONLIGHT_NO_MEMORY, "out of memory");
    options->excluded_headers = grown;

    char *copy = copy_text(name, length);
    if (!copy)
        return fail(options, MONLIGHT_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < length; i++)
        copy[i] = (char)tolower((unsigned char)copy[i]);
    options->excluded_headers[options->excluded_count++] = copy;
    return MONLIGHT_OK;
}

monlight_status monlight_options_set_log(monlight_options *options,
                                         monlight_log_fn callback,
                                         void *user_data)
{
    if (!options)
        return MONLIGHT_INVALID_ARGUMENT;
    options->logger.callback = callback;
    options->logger.user_data = user_data;
    return MONLIGHT_OK;
}

const char *monlight_options_last_error(const monlight_options *options)
{
    return options ? options->last_error : "options is NULL";
}

static char *copy_or_null(const char *value)
{
    return value ? copy_text(value, strlen(value)) : NULL;
}

/* Copies a URL without the user:password@ part, which must never reach
 * a log line. */
static char *display_copy(const char *url)
{
    const char *authority = strstr(url, "://");
    char *copy = copy_or_null(url);
    if (!authority || !copy)
        return copy;
    authority += 3;
    size_t authority_length = strcspn(authority, "/?#");
    const char *at = memchr(authority, '@', authority_length);
    if (at) {
        size_t prefix = (size_t)(authority - url);
        memmove(copy + prefix, at + 1, strlen(at + 1) + 1);
    }
    return copy;
}

monlight_status ml_config_init(ml_config *config, monlight_options *options,
                               const char *path)
{
    memset(config, 0, sizeof *config);
    if (!options->base_url)
        return fail(options, MONLIGHT_INVALID_ARGUMENT,
                    "base_url is required");
    if (!options->api_key)
        return fail(options, MONLIGHT_INVALID_ARGUMENT, "api_key is required");

    config->base_url = copy_or_null(options->base_url);
    config->api_key = copy_or_null(options->api_key);
    config->project = copy_or_null(options->project);
    config->environment = copy_or_null(options->environment);
    config->ca_bundle = copy_or_null(options->ca_bundle);
    size_t url_length = strlen(options->base_url) + strlen(path) + 1;
    config->endpoint_url = malloc(url_length);
    if (config->endpoint_url)
        snprintf(config->endpoint_url, url_length, "%s%s", options->base_url,
                 path);

    config->display_url = config->endpoint_url ? display_copy(config->endpoint_url) : NULL;

    config->timeout = options->timeout;
    config->flush_interval = options->flush_interval;
    config->max_buffered = (size_t)options->max_buffered;
    config->max_queued = (size_t)options->max_queued;
    config->exit_deadline = options->exit_deadline;
    config->max_label_sets = (size_t)options->max_label_sets;
    config->background_retry = options->background_retry != 0;
    config->retry_max_delay = options->retry_max_delay;
    config->max_buffered_bytes = (size_t)options->max_buffered_bytes;
    config->logger = options->logger;

    bool copied = config->base_url && config->api_key &&
                  config->endpoint_url && config->display_url &&
                  (!options->project || config->project) &&
                  (!options->environment || config->environment) &&
                  (!options->ca_bundle || config->ca_bundle);
    if (copied && options->excluded_count > 0) {
        config->excluded_headers =
            calloc(options->excluded_count, sizeof(char *));
        copied = config->excluded_headers != NULL;
        for (size_t i = 0; copied && i < options->excluded_count; i++) {
            config->excluded_headers[i] =
                copy_or_null(options->excluded_headers[i]);
            copied = config->excluded_headers[i] != NULL;
            config->excluded_count = i + 1;
        }
    }
    if (!copied) {
        ml_config_free(config);
        return fail(options, MONLIGHT_NO_MEMORY, "out of memory");
    }
    return MONLIGHT_OK;
}

void ml_config_free(ml_config *config)
{
    free(config->base_url);
    free(config->endpoint_url);
    free(config->display_url);
    free(config->api_key);
    free(config->project);
    free(config->environment);
    free(config->ca_bundle);
    for (size_t i = 0; i < config->excluded_count; i++)
        free(config->excluded_headers[i]);
    free(config->excluded_headers);
    memset(config, 0, sizeof *config);
}

static bool name_equals(const char *lower, const char *name, size_t length)
{
    return strlen(lower) == length && strncasecmp(lower, name, length) == 0;
}

bool ml_header_excluded(const ml_config *config, const char *name,
                        size_t length)
{
    for (size_t i = 0; i < sizeof pii_headers / sizeof *pii_headers; i++)
        if (name_equals(pii_headers[i], name, length))
            return true;
    for (size_t i = 0; i < config->excluded_count; i++)
        if (name_equals(config->excluded_headers[i], name, length))
            return true;
    return false;
}
