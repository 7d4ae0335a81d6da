/*
 * monlight: report errors and metrics from shell scripts and cron jobs.
 *
 * Unlike the libraries, which never disturb their host, this command is
 * meant to be loud: it exits 0 only when the service stored what it sent,
 * and otherwise prints one line saying why and exits non-zero
 * (1: not delivered, 2: bad usage or configuration).
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_NOT_DELIVERED 1
#define EXIT_USAGE 2
#define MAX_LABELS 64

static const char usage_text[] =
    "usage: monlight [options] COMMAND [arguments]\n"
    "\n"
    "Commands:\n"
    "  error --type TYPE --message MESSAGE [--traceback-file FILE|-]\n"
    "        [--user ID] [--url URL] [--method METHOD] [--extra JSON]\n"
    "      Report one error to the error tracker.\n"
    "  counter NAME [VALUE] [--label KEY=VALUE ...]\n"
    "  gauge NAME VALUE [--label KEY=VALUE ...]\n"
    "  histogram NAME VALUE [--label KEY=VALUE ...]\n"
    "      Record one metric and send it to the metrics collector\n"
    "      (a counter's VALUE defaults to 1).\n"
    "  check\n"
    "      Reach both services' /health and check that the key is accepted.\n"
    "\n"
    "Options (each overrides its environment variable):\n"
    "  --error-url URL      error tracker base URL     (MONLIGHT_ERROR_URL)\n"
    "  --metrics-url URL    metrics collector base URL (MONLIGHT_METRICS_URL)\n"
    "  --api-key KEY        API key                    (MONLIGHT_API_KEY)\n"
    "  --project NAME       project name               (MONLIGHT_PROJECT)\n"
    "  --environment NAME   environment of errors      (MONLIGHT_ENVIRONMENT)\n"
    "  --timeout SECONDS    time limit per request, default 5\n"
    "  --verbose            also print the engine's warnings\n"
    "  --help, --version\n"
    "\n"
    "Exit status: 0 delivered, 1 not delivered, 2 usage or configuration "
    "error.\n";

typedef struct settings {
    const char *error_url;
    const char *metrics_url;
    const char *api_key;
    const char *project;
    const char *environment;
    double timeout;
    bool verbose;
} settings;

typedef struct captured_log {
    char last[1024];
    bool verbose;
} captured_log;

/* Keeps the last warning to explain a failure; prints all with --verbose. */
static void capture_log(monlight_log_level level, const char *message,
                        void *user_data)
{
    captured_log *log = user_data;
    snprintf(log->last, sizeof log->last, "%s", message);
    if (log->verbose)
        fprintf(stderr, "monlight: %s\n", message);
    (void)level;
}

static int usage_error(const char *format, const char *detail)
{
    fprintf(stderr, "monlight: ");
    fprintf(stderr, format, detail);
    fprintf(stderr, "\nRun 'monlight --help' for usage.\n");
    return EXIT_USAGE;
}

static bool parse_number(const char *text, double *value)
{
    char *end;
    errno = 0;
    *value = strtod(text, &end);
    return errno == 0 && end != text && *end == '\0' && isfinite(*value);
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *value = getenv(name);
    return value && *value ? value : fallback;
}

/* Builds options for one service; prints the reason and returns NULL when
 * the configuration is unusable. */
static monlight_options *make_options(const settings *config, const char *url,
                                      const char *url_variable,
                                      captured_log *log)
{
    if (!url) {
        fprintf(stderr, "monlight: no URL for this service: set %s or pass "
                        "--%s\n",
                url_variable,
                strcmp(url_variable, "MONLIGHT_ERROR_URL") == 0 ? "error-url"
                                                                 : "metrics-url");
        return NULL;
    }
    if (!config->api_key) {
        fprintf(stderr,
                "monlight: no API key: set MONLIGHT_API_KEY or pass --api-key\n");
        return NULL;
    }

    monlight_options *options = monlight_options_new();
    if (!options) {
        fprintf(stderr, "monlight: out of memory\n");
        return NULL;
    }
    bool ok =
        monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, url,
                                    strlen(url)) == MONLIGHT_OK &&
        monlight_options_set_string(options, MONLIGHT_OPT_API_KEY,
                                    config->api_key,
                                    strlen(config->api_key)) == MONLIGHT_OK &&
        monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT,
                                    config->timeout) == MONLIGHT_OK &&
        /* The command reports failure itself: no silent retry at exit. */
        monlight_options_set_number(options, MONLIGHT_OPT_EXIT_DEADLINE, 0) ==
            MONLIGHT_OK &&
        monlight_options_set_number(options, MONLIGHT_OPT_BACKGROUND_RETRY, 0) ==
            MONLIGHT_OK &&
        monlight_options_set_log(options, capture_log, log) == MONLIGHT_OK;
    if (ok && config->project)
        ok = monlight_options_set_string(options, MONLIGHT_OPT_PROJECT,
                                         config->project,
                                         strlen(config->project)) == MONLIGHT_OK;
    if (ok && config->environment)
        ok = monlight_options_set_string(options, MONLIGHT_OPT_ENVIRONMENT,
                                         config->environment,
                                         strlen(config->environment)) ==
             MONLIGHT_OK;
    if (!ok) {
        const char *reason = monlight_options_last_error(options);
        bool url_problem = strstr(reason, "base_url") != NULL;
        bool errors = strcmp(url_variable, "MONLIGHT_ERROR_URL") == 0;
        if (url_problem)
            fprintf(stderr, "monlight: %s (from %s or %s)\n", reason, url_variable,
                    errors ? "--error-url" : "--metrics-url");
        else
            fprintf(stderr, "monlight: %s\n", reason);
        monlight_options_free(options);
        return NULL;
    }
    return options;
}

static char *read_file(const char *path, size_t *length)
{
    FILE *file = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!file)
        return NULL;
    ml_buf content;
    ml_buf_init(&content);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, file)) > 0)
        ml_buf_append(&content, chunk, n);
    bool failed = ferror(file) || content.failed;
    if (file != stdin)
        fclose(file);
    if (failed) {
        ml_buf_free(&content);
        return NULL;
    }
    ml_buf_cstr(&content);
    *length = content.length;
    return content.data ? content.data : calloc(1, 1);
}

static int command_error(const settings *config, int argc, char **argv)
{
    const char *type = NULL, *message = NULL, *traceback_file = NULL;
    const char *user = NULL, *url = NULL, *method = NULL, *extra = NULL;

    for (int i = 0; i < argc; i++) {
        const char **slot = NULL;
        if (strcmp(argv[i], "--type") == 0) slot = &type;
        else if (strcmp(argv[i], "--message") == 0) slot = &message;
        else if (strcmp(argv[i], "--traceback-file") == 0) slot = &traceback_file;
        else if (strcmp(argv[i], "--user") == 0) slot = &user;
        else if (strcmp(argv[i], "--url") == 0) slot = &url;
        else if (strcmp(argv[i], "--method") == 0) slot = &method;
        else if (strcmp(argv[i], "--extra") == 0) slot = &extra;
        else
            return usage_error("error: unknown argument '%s'", argv[i]);
        if (i + 1 >= argc)
            return usage_error("error: %s needs a value", argv[i]);
        *slot = argv[++i];
    }
    if (!type)
        return usage_error("error: --type is required%s", "");
    if (extra) {
        cJSON *parsed = cJSON_Parse(extra);
        bool is_object = cJSON_IsObject(parsed);
        cJSON_Delete(parsed);
        if (!is_object)
            return usage_error("error: invalid --extra '%s': expected a JSON object", extra);
    }
    if (!message)
        return usage_error("error: --message is required%s", "");

    size_t traceback_length = 0;
    char *traceback = NULL;
    if (traceback_file) {
        traceback = read_file(traceback_file, &traceback_length);
        if (!traceback) {
            fprintf(stderr, "monlight: cannot read traceback file %s: %s\n",
                    traceback_file, strerror(errno));
            return EXIT_USAGE;
        }
    }

    captured_log log = {.last = "", .verbose = config->verbose};
    monlight_options *options =
        make_options(config, config->error_url, "MONLIGHT_ERROR_URL", &log);
    if (!options) {
        free(traceback);
        return EXIT_USAGE;
    }
    monlight_error_client *client = NULL;
    monlight_status status = monlight_error_client_new(options, &client);
    if (status != MONLIGHT_OK) {
        fprintf(stderr, "monlight: %s\n", monlight_options_last_error(options));
        monlight_options_free(options);
        free(traceback);
        return EXIT_USAGE;
    }
    monlight_options_free(options);

    monlight_report *report = monlight_report_new();
    if (!report) {
        fprintf(stderr, "monlight: out of memory\n");
        monlight_error_client_free(client);
        free(traceback);
        return EXIT_NOT_DELIVERED;
    }
    monlight_report_set(report, MONLIGHT_FIELD_EXCEPTION_TYPE, type, strlen(type));
    monlight_report_set(report, MONLIGHT_FIELD_MESSAGE, message, strlen(message));
    monlight_report_set(report, MONLIGHT_FIELD_TRACEBACK, traceback ? traceback : "",
                        traceback_length);
    if (user)
        monlight_report_set(report, MONLIGHT_FIELD_USER_ID, user, strlen(user));
    if (url)
        monlight_report_set(report, MONLIGHT_FIELD_REQUEST_URL, url, strlen(url));
    if (method)
        monlight_report_set(report, MONLIGHT_FIELD_REQUEST_METHOD, method,
                            strlen(method));
    if (extra)
        monlight_report_set(report, MONLIGHT_FIELD_EXTRA_JSON, extra, strlen(extra));

    status = monlight_error_client_send(client, report);
    char reason[512];
    monlight_error_client_last_error(client, reason, sizeof reason);
    monlight_report_free(report);
    monlight_error_client_free(client);
    free(traceback);

    if (status != MONLIGHT_OK) {
        fprintf(stderr, "monlight: error not delivered: %s\n",
                reason[0] ? reason : monlight_status_message(status));
        return EXIT_NOT_DELIVERED;
    }
    return EXIT_SUCCESS;
}

static int command_metric(const settings *config, monlight_metric_type type,
                          int argc, char **argv)
{
    const char *name = NULL;
    const char *value_text = NULL;
    monlight_label labels[MAX_LABELS];
    size_t label_count = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--label") == 0) {
            if (i + 1 >= argc)
                return usage_error("metric: %s needs KEY=VALUE", argv[i]);
            const char *pair = argv[++i];
            const char *equals = strchr(pair, '=');
            if (!equals || equals == pair)
                return usage_error("metric: invalid label '%s', expected "
                                   "KEY=VALUE",
                                   pair);
            if (label_count == MAX_LABELS)
                return usage_error("metric: more than 64 labels%s", "");
            labels[label_count++] = (monlight_label){
                pair, (size_t)(equals - pair), equals + 1, strlen(equals + 1)};
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return usage_error("metric: unknown option '%s'", argv[i]);
        } else if (!name) {
            name = argv[i];
        } else if (!value_text) {
            value_text = argv[i];
        } else {
            return usage_error("metric: unexpected argument '%s'", argv[i]);
        }
    }
    if (!name)
        return usage_error("metric: NAME is required%s", "");

    double value = 1;
    if (!value_text && type != MONLIGHT_COUNTER)
        return usage_error("metric: VALUE is required for gauges and "
                           "histograms%s",
                           "");
    if (value_text && !parse_number(value_text, &value))
        return usage_error("metric: invalid VALUE '%s', expected a finite "
                           "number",
                           value_text);

    captured_log log = {.last = "", .verbose = config->verbose};
    monlight_options *options =
        make_options(config, config->metrics_url, "MONLIGHT_METRICS_URL", &log);
    if (!options)
        return EXIT_USAGE;
    monlight_metrics_client *client = NULL;
    monlight_status status = monlight_metrics_client_new(options, &client);
    if (status != MONLIGHT_OK) {
        fprintf(stderr, "monlight: %s\n", monlight_options_last_error(options));
        monlight_options_free(options);
        return EXIT_USAGE;
    }
    monlight_options_free(options);

    status = monlight_metrics_client_record(client, type, name, strlen(name),
                                            value, labels, label_count);
    if (status != MONLIGHT_OK) {
        fprintf(stderr, "monlight: %s\n", log.last);
        monlight_metrics_client_free(client);
        return EXIT_USAGE;
    }
    status = monlight_metrics_client_flush(client);
    char reason[512];
    monlight_metrics_client_last_error(client, reason, sizeof reason);
    monlight_metrics_client_free(client);

    if (status != MONLIGHT_OK) {
        fprintf(stderr, "monlight: metric not delivered to %s: %s\n",
                config->metrics_url, reason[0] ? reason : monlight_status_message(status));
        return EXIT_NOT_DELIVERED;
    }
    return EXIT_SUCCESS;
}

/*
 * Checks one service: GET /health, then a POST with an empty body to its
 * API, which the service rejects as invalid (400) when the key is good
 * and as unauthorised (401) when it is not, so nothing is stored.
 */
static bool check_service(const settings *config, const char *label,
                          const char *url, const char *variable,
                          const char *api_path, const char *probe_body)
{
    captured_log log = {.last = "", .verbose = config->verbose};
    monlight_options *options = make_options(config, url, variable, &log);
    if (!options)
        return false;

    ml_config service;
    if (ml_config_init(&service, options, api_path) != MONLIGHT_OK) {
        fprintf(stderr, "monlight: %s\n", monlight_options_last_error(options));
        monlight_options_free(options);
        return false;
    }
    monlight_options_free(options);
    ml_global_init();
    ml_transport *transport = ml_curl_transport_new(&service);
    if (!transport) {
        fprintf(stderr, "monlight: out of memory\n");
        ml_config_free(&service);
        return false;
    }

    char health_url[2048];
    snprintf(health_url, sizeof health_url, "%s/health", service.base_url);
    ml_response response;
    transport->ops->get(transport, health_url, &response);
    bool healthy = response.status == MONLIGHT_OK;
    bool key_ok = false;
    if (healthy) {
        printf("%s: %s is up\n", label, service.base_url);
        transport->ops->post(transport, service.endpoint_url, probe_body,
                             strlen(probe_body), &response);
        key_ok = response.http_status != 0 && response.http_status != 401 &&
                 response.http_status != 403;
        if (key_ok)
            printf("%s: API key accepted\n", label);
        else if (response.http_status == 401 || response.http_status == 403)
            fprintf(stderr, "monlight: %s: API key rejected (HTTP %ld)\n", label,
                    response.http_status);
        else
            fprintf(stderr, "monlight: %s: key check failed: %s\n", label,
                    response.detail);
    } else {
        fprintf(stderr, "monlight: %s: %s is not reachable: %s\n", label,
                health_url, response.detail);
    }

    transport->ops->destroy(transport);
    ml_config_free(&service);
    return healthy && key_ok;
}

static int command_check(const settings *config)
{
    bool errors_ok = check_service(config, "error tracker", config->error_url,
                                   "MONLIGHT_ERROR_URL", "/api/errors", "{}");
    bool metrics_ok =
        check_service(config, "metrics collector", config->metrics_url,
                      "MONLIGHT_METRICS_URL", "/api/metrics", "[]");
    return errors_ok && metrics_ok ? EXIT_SUCCESS : EXIT_NOT_DELIVERED;
}

int main(int argc, char **argv)
{
    settings config = {
        .error_url = env_or("MONLIGHT_ERROR_URL", NULL),
        .metrics_url = env_or("MONLIGHT_METRICS_URL", NULL),
        .api_key = env_or("MONLIGHT_API_KEY", NULL),
        .project = env_or("MONLIGHT_PROJECT", NULL),
        .environment = env_or("MONLIGHT_ENVIRONMENT", NULL),
        .timeout = 5.0,
        .verbose = false,
    };

    /* Global options may come before or after the command; everything
     * else is handed to the command in its original order. */
    const char *command = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int rest_count = 0;
    if (!rest)
        return EXIT_NOT_DELIVERED;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char **slot = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage_text, stdout);
            free(rest);
            return EXIT_SUCCESS;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("monlight %s\n", monlight_version());
            free(rest);
            return EXIT_SUCCESS;
        }
        if (strcmp(arg, "--verbose") == 0) {
            config.verbose = true;
            continue;
        }
        if (strcmp(arg, "--error-url") == 0) slot = &config.error_url;
        else if (strcmp(arg, "--metrics-url") == 0) slot = &config.metrics_url;
        else if (strcmp(arg, "--api-key") == 0) slot = &config.api_key;
        else if (strcmp(arg, "--project") == 0) slot = &config.project;
        else if (strcmp(arg, "--environment") == 0) slot = &config.environment;
        if (slot || strcmp(arg, "--timeout") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return usage_error("%s needs a value", arg);
            }
            const char *value = argv[++i];
            if (slot) {
                *slot = value;
            } else if (!parse_number(value, &config.timeout) ||
                       config.timeout <= 0) {
                free(rest);
                return usage_error("invalid --timeout '%s': expected seconds "
                                   "greater than 0",
                                   value);
            }
            continue;
        }
        if (!command && arg[0] == '-') {
            free(rest);
            return usage_error("unknown option '%s'", arg);
        }
        if (!command)
            command = arg;
        else
            rest[rest_count++] = argv[i];
    }

    int status;
    if (!command)
        status = usage_error("no command given%s", "");
    else if (strcmp(command, "error") == 0)
        status = command_error(&config, rest_count, rest);
    else if (strcmp(command, "counter") == 0)
        status = command_metric(&config, MONLIGHT_COUNTER, rest_count, rest);
    else if (strcmp(command, "gauge") == 0)
        status = command_metric(&config, MONLIGHT_GAUGE, rest_count, rest);
    else if (strcmp(command, "histogram") == 0)
        status = command_metric(&config, MONLIGHT_HISTOGRAM, rest_count, rest);
    else if (strcmp(command, "check") == 0 && rest_count > 0)
        status = usage_error("check: unexpected argument '%s'", rest[0]);
    else if (strcmp(command, "check") == 0)
        status = command_check(&config);
    else
        status = usage_error("unknown command '%s'", command);
    free(rest);
    return status;
}
