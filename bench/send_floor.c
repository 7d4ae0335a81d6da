/*
 * send_floor.c: monlight_error_client_send() against the transport floor,
 * a bare libcurl POST loop over one reused connection.
 *
 *   send_floor BASE_URL CAPTURED_BODY_FILE CALLS ROUNDS
 *
 * BASE_URL is a keep-alive server started with `sink --capture
 * CAPTURED_BODY_FILE`. The first send through the engine makes the sink
 * write that report's body to the file. The bare loop then POSTs exactly
 * those bytes, with the same headers, to the same URL. Each round times
 * CALLS engine sends and CALLS bare POSTs (the order alternates between
 * rounds), and the program prints the per-round microseconds per call as
 * JSON. Both sides reuse one connection for the whole run.
 */
#define _POSIX_C_SOURCE 200809L
#include "monlight.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ROUNDS 64

static const char api_key[] = "bench-key";

/* A Python traceback of the size and shape an application sends. */
static const char traceback_text[] =
    "Traceback (most recent call last):\n"
    "  File \"/srv/app/handlers/users.py\", line 88, in get_user\n"
    "    user = service.load_user(request.path_params[\"user_id\"])\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "  File \"/srv/app/services/users.py\", line 41, in load_user\n"
    "    row = self.repository.find(user_id)\n"
    "          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "  File \"/srv/app/repositories/users.py\", line 27, in find\n"
    "    return self._lookup(row, \"user\")\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "  File \"/srv/app/repositories/base.py\", line 112, in _lookup\n"
    "    raise KeyError(f\"{key} {row['id']} not found in the users table\")\n"
    "KeyError: 'user 42 not found in the users table'\n";

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_warning(monlight_log_level level, const char *message,
                          void *user_data)
{
    (void)user_data;
    if (level >= MONLIGHT_LOG_WARNING)
        fprintf(stderr, "send_floor: engine warning: %s\n", message);
}

static size_t discard_response(char *data, size_t size, size_t count, void *user)
{
    (void)data, (void)user;
    return size * count;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count)
{
    double sorted[MAX_ROUNDS];
    memcpy(sorted, values, (size_t)count * sizeof *values);
    qsort(sorted, (size_t)count, sizeof *sorted, compare_doubles);
    return count % 2 ? sorted[count / 2]
                     : (sorted[count / 2 - 1] + sorted[count / 2]) / 2;
}

static void set_text(monlight_report *report, monlight_report_field field,
                     const char *text)
{
    monlight_report_set(report, field, text, strlen(text));
}

static void add_header(monlight_report *report, const char *name,
                       const char *value)
{
    monlight_report_add_header(report, name, strlen(name), value, strlen(value));
}

static monlight_report *build_report(void)
{
    monlight_report *report = monlight_report_new();
    set_text(report, MONLIGHT_FIELD_EXCEPTION_TYPE, "KeyError");
    set_text(report, MONLIGHT_FIELD_MESSAGE, "'user 42 not found in the users table'");
    set_text(report, MONLIGHT_FIELD_TRACEBACK, traceback_text);
    set_text(report, MONLIGHT_FIELD_REQUEST_URL, "http://testserver/users/42");
    set_text(report, MONLIGHT_FIELD_REQUEST_METHOD, "GET");
    add_header(report, "host", "testserver");
    add_header(report, "user-agent", "bench/1.0");
    add_header(report, "accept", "application/json");
    add_header(report, "authorization", "Bearer not-a-real-token");
    return report;
}

static char *read_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return NULL;
    char *data = malloc(1 << 20);
    *length = data ? fread(data, 1, (1 << 20) - 1, file) : 0;
    fclose(file);
    return data;
}

/* Sets up the floor: one easy handle, options set once, the engine's
 * headers (key, content type, no Expect). */
static CURL *bare_handle(const char *url, const char *body, size_t length,
                         struct curl_slist **headers)
{
    CURL *handle = curl_easy_init();
    char key_header[64];
    snprintf(key_header, sizeof key_header, "X-API-Key: %s", api_key);
    *headers = curl_slist_append(NULL, key_header);
    *headers = curl_slist_append(*headers, "Content-Type: application/json");
    *headers = curl_slist_append(*headers, "Expect:");
    curl_easy_setopt(handle, CURLOPT_URL, url);
    curl_easy_setopt(handle, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(handle, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)length);
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, discard_response);
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, 5000L);
    return handle;
}

static double time_engine(monlight_error_client *client,
                          const monlight_report *report, int calls,
                          int *failures)
{
    double started = now_seconds();
    for (int i = 0; i < calls; i++)
        if (monlight_error_client_send(client, report) != MONLIGHT_OK)
            (*failures)++;
    return (now_seconds() - started) / calls * 1e6;
}

static double time_bare(CURL *handle, int calls, int *failures)
{
    double started = now_seconds();
    for (int i = 0; i < calls; i++) {
        long status = 0;
        if (curl_easy_perform(handle) != CURLE_OK)
            (*failures)++;
        curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
        if (status != 201)
            (*failures)++;
    }
    return (now_seconds() - started) / calls * 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: send_floor BASE_URL CAPTURED_BODY_FILE CALLS ROUNDS\n");
        return 2;
    }
    const char *base_url = argv[1];
    const char *capture_path = argv[2];
    int calls = atoi(argv[3]);
    int rounds = atoi(argv[4]);
    if (calls <= 0 || rounds <= 0 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "send_floor: CALLS must be positive and ROUNDS 1 to %d\n", MAX_ROUNDS);
        return 2;
    }

    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, base_url, strlen(base_url));
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, api_key, strlen(api_key));
    monlight_options_set_string(options, MONLIGHT_OPT_PROJECT, "bench", 5);
    monlight_options_set_log(options, print_warning, NULL);
    monlight_error_client *client = NULL;
    if (monlight_error_client_new(options, &client) != MONLIGHT_OK) {
        fprintf(stderr, "send_floor: %s\n", monlight_options_last_error(options));
        return 1;
    }
    monlight_options_free(options);
    monlight_report *report = build_report();

    /* The first send makes the sink capture the body that the floor
     * loop will send. */
    if (monlight_error_client_send(client, report) != MONLIGHT_OK) {
        fprintf(stderr, "send_floor: the first engine send failed\n");
        return 1;
    }
    size_t length = 0;
    char *body = read_file(capture_path, &length);
    if (!body || length == 0) {
        fprintf(stderr, "send_floor: no captured body in %s\n", capture_path);
        return 1;
    }

    char url[1024];
    snprintf(url, sizeof url, "%s/api/errors", base_url);
    struct curl_slist *headers = NULL;
    CURL *handle = bare_handle(url, body, length, &headers);
    int engine_failures = 0, bare_failures = 0;
    time_bare(handle, 10, &bare_failures); /* warm-up: connect */

    double engine_us[MAX_ROUNDS], bare_us[MAX_ROUNDS];
    for (int round = 0; round < rounds; round++) {
        if (round % 2 == 0) {
            engine_us[round] = time_engine(client, report, calls, &engine_failures);
            bare_us[round] = time_bare(handle, calls, &bare_failures);
        } else {
            bare_us[round] = time_bare(handle, calls, &bare_failures);
            engine_us[round] = time_engine(client, report, calls, &engine_failures);
        }
    }

    printf("{\"engine_us\": %.2f, \"bare_us\": %.2f, \"body_bytes\": %zu, "
           "\"calls\": %d, \"rounds\": %d, \"engine_failures\": %d, "
           "\"bare_failures\": %d, \"engine_samples\": [",
           median(engine_us, rounds), median(bare_us, rounds), length, calls,
           rounds, engine_failures, bare_failures);
    for (int round = 0; round < rounds; round++)
        printf("%s%.2f", round ? ", " : "", engine_us[round]);
    printf("], \"bare_samples\": [");
    for (int round = 0; round < rounds; round++)
        printf("%s%.2f", round ? ", " : "", bare_us[round]);
    printf("]}\n");

    curl_easy_cleanup(handle);
    curl_slist_free_all(headers);
    free(body);
    monlight_report_free(report);
    monlight_error_client_free(client);
    return 0;
}
