/*
 * support.c: the receiver process and the log collector for the C tests.
 */
#include "support.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MONLIGHT_SOURCE_DIR
#error "MONLIGHT_SOURCE_DIR must name the repository root"
#endif

double test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_seconds(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
}

static char *read_whole_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    size_t got = data ? fread(data, 1, (size_t)size, file) : 0;
    fclose(file);
    if (!data)
        return NULL;
    data[got] = '\0';
    if (length)
        *length = got;
    return data;
}

bool receiver_start(test_receiver *receiver, int port, bool keep_alive)
{
    static int sequence;
    memset(receiver, 0, sizeof *receiver);
    receiver->keep_alive = keep_alive;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(receiver->record_path, sizeof receiver->record_path,
             "%s/monlight-c-test-%d-%d.jsonl", tmp, (int)getpid(), sequence);
    snprintf(receiver->port_path, sizeof receiver->port_path,
             "%s/monlight-c-test-%d-%d.port", tmp, (int)getpid(), sequence);
    sequence++;
    unlink(receiver->record_path);
    unlink(receiver->port_path);

    char port_text[16], parent_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    snprintf(parent_text, sizeof parent_text, "%d", (int)getpid());
    const char *python = getenv("MONLIGHT_TEST_PYTHON") ? getenv("MONLIGHT_TEST_PYTHON")
                                                        : "python3";

    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0 && !getenv("MONLIGHT_TEST_RECEIVER_LOG")) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp(python, python, MONLIGHT_SOURCE_DIR "/tests/receiver/receiver.py",
               "--port", port_text, "--api-key", TEST_API_KEY, "--record",
               receiver->record_path, "--port-file", receiver->port_path,
               keep_alive ? "--keep-alive" : "--close", "--parent-pid",
               parent_text, "--log-level", "warning", (char *)NULL);
        _exit(127);
    }
    receiver->pid = pid;

    double deadline = test_now() + 15;
    while (test_now() < deadline) {
        char *text = read_whole_file(receiver->port_path, NULL);
        if (text) {
            receiver->port = atoi(text);
            free(text);
            if (receiver->port > 0) {
                snprintf(receiver->url, sizeof receiver->url,
                         "http://127.0.0.1:%d", receiver->port);
                return true;
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "receiver exited early (status %d)\n", status);
            receiver->pid = 0;
            return false;
        }
        sleep_seconds(0.02);
    }
    fprintf(stderr, "receiver did not start within 15 s\n");
    receiver_stop(receiver);
    return false;
}

void receiver_stop(test_receiver *receiver)
{
    if (receiver->pid > 0) {
        kill(receiver->pid, SIGTERM);
        double deadline = test_now() + 2;
        int status;
        while (waitpid(receiver->pid, &status, WNOHANG) == 0) {
            if (test_now() > deadline) {
                kill(receiver->pid, SIGKILL);
                waitpid(receiver->pid, &status, 0);
                break;
            }
            sleep_seconds(0.01);
        }
        receiver->pid = 0;
    }
    unlink(receiver->record_path);
    unlink(receiver->port_path);
}

static size_t discard(char *data, size_t size, size_t count, void *user)
{
    (void)data, (void)user;
    return size * count;
}

bool receiver_control(const test_receiver *receiver, const char *json)
{
    CURL *curl = curl_easy_init();
    if (!curl)
        return false;
    char url[128];
    snprintf(url, sizeof url, "%s/__control__", receiver->url);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 5L);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return code == CURLE_OK && status == 200;
}

bool receiver_clear(const test_receiver *receiver)
{
    return receiver_control(receiver, "{\"reset\": true, \"clear\": true}");
}

cJSON *receiver_events(const test_receiver *receiver)
{
    cJSON *events = cJSON_CreateArray();
    size_t length = 0;
    char *text = read_whole_file(receiver->record_path, &length);
    if (!text)
        return events;
    char *line = text;
    while (line && *line) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        if (*line) {
            cJSON *event = cJSON_Parse(line);
            if (event)
                cJSON_AddItemToArray(events, event);
        }
        line = end ? end + 1 : NULL;
    }
    free(text);
    return events;
}

size_t receiver_count_events(const test_receiver *receiver, const char *kind)
{
    cJSON *events = receiver_events(receiver);
    size_t count = 0;
    cJSON *event;
    cJSON_ArrayForEach(event, events)
    {
        cJSON *event_kind = cJSON_GetObjectItem(event, "kind");
        if (cJSON_IsString(event_kind) && strcmp(event_kind->valuestring, kind) == 0)
            count++;
    }
    cJSON_Delete(events);
    return count;
}

cJSON *receiver_metrics(const test_receiver *receiver)
{
    cJSON *events = receiver_events(receiver);
    cJSON *metrics = cJSON_CreateArray();
    cJSON *event;
    cJSON_ArrayForEach(event, events)
    {
        cJSON *kind = cJSON_GetObjectItem(event, "kind");
        if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "metrics") != 0)
            continue;
        cJSON *items = cJSON_GetObjectItem(event, "metrics");
        cJSON *item;
        cJSON_ArrayForEach(item, items)
            cJSON_AddItemToArray(metrics, cJSON_Duplicate(item, 1));
    }
    cJSON_Delete(events);
    return metrics;
}

bool receiver_wait_metrics(const test_receiver *receiver, size_t count,
                           double timeout)
{
    double deadline = test_now() + timeout;
    for (;;) {
        cJSON *metrics = receiver_metrics(receiver);
        size_t got = (size_t)cJSON_GetArraySize(metrics);
        cJSON_Delete(metrics);
        if (got >= count)
            return true;
        if (test_now() > deadline)
            return false;
        sleep_seconds(0.05);
    }
}

struct test_log {
    pthread_mutex_t lock;
    char **lines;
    size_t count;
    size_t capacity;
};

test_log *test_log_new(void)
{
    test_log *log = calloc(1, sizeof *log);
    pthread_mutex_init(&log->lock, NULL);
    return log;
}

void test_log_clear(test_log *log)
{
    pthread_mutex_lock(&log->lock);
    for (size_t i = 0; i < log->count; i++)
        free(log->lines[i]);
    log->count = 0;
    pthread_mutex_unlock(&log->lock);
}

void test_log_free(test_log *log)
{
    if (!log)
        return;
    test_log_clear(log);
    free(log->lines);
    pthread_mutex_destroy(&log->lock);
    free(log);
}

void test_log_callback(monlight_log_level level, const char *message,
                       void *user_data)
{
    test_log *log = user_data;
    (void)level;
    if (getenv("MONLIGHT_TEST_VERBOSE"))
        fprintf(stderr, "log: %s\n", message);
    pthread_mutex_lock(&log->lock);
    if (log->count == log->capacity) {
        size_t capacity = log->capacity ? log->capacity * 2 : 16;
        char **grown = realloc(log->lines, capacity * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&log->lock);
            return;
        }
        log->lines = grown;
        log->capacity = capacity;
    }
    log->lines[log->count++] = strdup(message);
    pthread_mutex_unlock(&log->lock);
}

size_t test_log_count(test_log *log, const char *needle)
{
    size_t count = 0;
    pthread_mutex_lock(&log->lock);
    for (size_t i = 0; i < log->count; i++)
        if (log->lines[i] && strstr(log->lines[i], needle))
            count++;
    pthread_mutex_unlock(&log->lock);
    return count;
}

size_t test_log_total(test_log *log)
{
    pthread_mutex_lock(&log->lock);
    size_t count = log->count;
    pthread_mutex_unlock(&log->lock);
    return count;
}

bool test_log_contains(test_log *log, const char *needle)
{
    return test_log_count(log, needle) > 0;
}

monlight_options *test_options(const test_receiver *receiver, test_log *log)
{
    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, receiver->url,
                                strlen(receiver->url));
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, TEST_API_KEY,
                                strlen(TEST_API_KEY));
    monlight_options_set_number(options, MONLIGHT_OPT_TIMEOUT, 5);
    if (log)
        monlight_options_set_log(options, test_log_callback, log);
    return options;
}
