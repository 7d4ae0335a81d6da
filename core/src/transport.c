/*
 * transport.c: the libcurl transport.
 *
 * Each client owns a small pool of curl easy handles. A thread that sends
 * takes a handle from the pool and puts it back afterwards, so every
 * sender has its own connection and reuses it (keep-alive) whenever the
 * server allows; when the server closes after each response, as the monlight
 * services do, curl opens a fresh connection next time.
 *
 * Every request carries X-API-Key and Content-Type: application/json, an
 * exact Content-Length and no "Expect: 100-continue" (the services check
 * the length before reading, and a server that ignores the expectation
 * costs a one-second stall). The client's timeout bounds the whole
 * request, connection included.
 */
#include "internal.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Handles kept for reuse; more concurrent senders get handles that are
 * closed after their request. */
#define POOL_MAX 8

/* Bytes of a response kept: enough for a 429's retry_after and a quote. */
#define ANSWER_KEEP 2048

typedef struct curl_transport {
    ml_transport base;
    const ml_config *config;
    struct curl_slist *post_headers;
    pthread_mutex_t pool_lock; /* guards pool and pool_count */
    CURL *pool[POOL_MAX];
    size_t pool_count;
} curl_transport;

typedef struct answer_sink {
    char data[ANSWER_KEEP + 1];
    size_t length;
} answer_sink;

static size_t keep_answer(char *data, size_t size, size_t count, void *user)
{
    answer_sink *sink = user;
    size_t bytes = size * count;
    size_t room = ANSWER_KEEP - sink->length;
    size_t kept = bytes < room ? bytes : room;

    memcpy(sink->data + sink->length, data, kept);
    sink->length += kept;
    return bytes; /* the rest is read and discarded */
}

/* Aborts a transfer once the client's shutdown deadline has passed. */
static int check_deadline(void *user, curl_off_t dltotal, curl_off_t dlnow,
                          curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    ml_transport *transport = user;
    double abort_at = atomic_load(&transport->abort_at);
    return abort_at > 0 && ml_monotonic_now() >= abort_at;
}

static CURL *take_handle(curl_transport *transport)
{
    CURL *handle = NULL;

    pthread_mutex_lock(&transport->pool_lock);
    if (transport->pool_count > 0)
        handle = transport->pool[--transport->pool_count];
    pthread_mutex_unlock(&transport->pool_lock);

    if (!handle)
        handle = curl_easy_init();
    return handle;
}

static void return_handle(curl_transport *transport, CURL *handle)
{
    pthread_mutex_lock(&transport->pool_lock);
    if (transport->pool_count < POOL_MAX) {
        transport->pool[transport->pool_count++] = handle;
        handle = NULL;
    }
    pthread_mutex_unlock(&transport->pool_lock);

    if (handle)
        curl_easy_cleanup(handle);
}

/* Reads "retry_after": N from a 429 body; 0 when absent. */
static double retry_after_from_body(const char *body)
{
    const char *key = strstr(body, "\"retry_after\"");
    if (!key)
        return 0;
    const char *p = key + strlen("\"retry_after\"");
    while (*p == ' ' || *p == ':' || *p == '\t')
        p++;
    double seconds = strtod(p, NULL);
    return isfinite(seconds) && seconds > 0 ? seconds : 0;
}

/* Copies the start of a response as one printable line, for warnings. A
 * proxy may echo the request, so the API key is masked wherever it
 * appears. */
static void quote_answer(const answer_sink *sink, const char *api_key, char *out)
{
    size_t n = sink->length < ML_ANSWER_QUOTE_MAX ? sink->length
                                                  : ML_ANSWER_QUOTE_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)sink->data[i];
        out[i] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
    }
    out[n] = '\0';

    /* The key is searched in the whole kept response, so that a key cut by
     * the quote's end is masked too. */
    size_t key_length = strlen(api_key);
    for (size_t i = 0; key_length > 0 && i < sink->length; i++) {
        size_t match = 0;
        while (match < key_length && i + match < sink->length &&
               sink->data[i + match] == api_key[match])
            match++;
        if (match == key_length || (i + match == sink->length && match >= 4)) {
            for (size_t j = i; j < i + match && j < n; j++)
                out[j] = '*';
            i += match - 1;
        }
    }
}

/*
 * Sorts a finished transfer into the engine's outcome. The rule for
 * retries: only when nothing can have reached the server (no connection,
 * no name, a 429 or a 503, or a failure before a single byte of the
 * request was sent). A timeout or a dropped connection after the request
 * went out may have been stored, so retrying could count it twice.
 */
static void classify(CURL *handle, CURLcode code, const answer_sink *sink,
                     const char *error_buffer, const char *api_key,
                     ml_response *response)
{
    long request_bytes = 0;
    curl_easy_getinfo(handle, CURLINFO_REQUEST_SIZE, &request_bytes);
    const char *reason = error_buffer[0] ? error_buffer : curl_easy_strerror(code);

    switch (code) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        response->status = MONLIGHT_CONNECT_FAILED;
        response->retryable = true;
        snprintf(response->detail, sizeof response->detail, "%s", reason);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        response->status = MONLIGHT_TIMED_OUT;
        response->retryable = request_bytes == 0;
        snprintf(response->detail, sizeof response->detail, "%s%s", reason,
                 request_bytes == 0 ? " (before the request was sent)"
                                    : " (after the request was sent)");
        return;
    case CURLE_ABORTED_BY_CALLBACK:
        response->status = MONLIGHT_ABORTED;
        snprintf(response->detail, sizeof response->detail,
                 "aborted at the shutdown deadline");
        return;
    default:
        response->status = MONLIGHT_TRANSPORT_FAILED;
        response->retryable = request_bytes == 0 && code == CURLE_SEND_ERROR;
        snprintf(response->detail, sizeof response->detail, "%s", reason);
        return;
    }

    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response->http_status);
    quote_answer(sink, api_key, response->answer);
    if (response->http_status >= 200 && response->http_status < 300) {
        response->status = MONLIGHT_OK;
        return;
    }

    if (response->http_status == 429) {
        char body[ANSWER_KEEP + 1];
        memcpy(body, sink->data, sink->length);
        body[sink->length] = '\0';
        response->retry_after = retry_after_from_body(body);
        curl_off_t header_seconds = 0;
        if (response->retry_after == 0 &&
            curl_easy_getinfo(handle, CURLINFO_RETRY_AFTER, &header_seconds) ==
                CURLE_OK &&
            header_seconds > 0)
            response->retry_after = (double)header_seconds;
        response->status = MONLIGHT_RATE_LIMITED;
        response->retryable = true;
    } else {
        response->status = MONLIGHT_HTTP_ERROR;
        response->retryable = response->http_status == 503;
    }
    snprintf(response->detail, sizeof response->detail, "HTTP %ld: %s",
             response->http_status, response->answer);
}

static void set_common_options(curl_transport *transport, CURL *handle,
                               const char *url, answer_sink *sink,
                               char *error_buffer)
{
    const ml_config *config = transport->config;
    double timeout = config->timeout;
    double abort_at = atomic_load(&transport->base.abort_at);

    /* At shutdown the deadline may leave less than the usual timeout. */
    if (abort_at > 0) {
        double remaining = abort_at - ml_monotonic_now();
        if (remaining < timeout)
            timeout = remaining > 0.001 ? remaining : 0.001;
    }
    long timeout_ms = (long)ceil(timeout * 1000);

    curl_easy_setopt(handle, CURLOPT_URL, url);
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(handle, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(handle, CURLOPT_USERAGENT,
                     "monlight-native/" MONLIGHT_VERSION_STRING);
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, keep_answer);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, check_deadline);
    curl_easy_setopt(handle, CURLOPT_XFERINFODATA, &transport->base);
    curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 0L);

    /* TLS verification is libcurl's default and stays on; only the CA
     * bundle can be chosen. Proxies from the environment (http_proxy,
     * https_proxy, no_proxy) are honoured by libcurl itself. */
    curl_easy_setopt(handle, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(handle, CURLOPT_SSL_VERIFYHOST, 2L);
    if (config->ca_bundle)
        curl_easy_setopt(handle, CURLOPT_CAINFO, config->ca_bundle);
}

static void perform(curl_transport *transport, const char *url,
                    const char *body, size_t length, bool is_post,
                    ml_response *response)
{
    memset(response, 0, sizeof *response);

    CURL *handle = take_handle(transport);
    if (!handle) {
        response->status = MONLIGHT_NO_MEMORY;
        snprintf(response->detail, sizeof response->detail,
                 "could not create a curl handle");
        return;
    }

    answer_sink sink;
    sink.length = 0;
    char error_buffer[CURL_ERROR_SIZE];
    error_buffer[0] = '\0';

    /* A pooled handle keeps its connection; its options are reset so that
     * nothing from the previous request (a GET after a POST) leaks in. */
    curl_easy_reset(handle);
    set_common_options(transport, handle, url, &sink, error_buffer);
    if (is_post) {
        curl_easy_setopt(handle, CURLOPT_HTTPHEADER, transport->post_headers);
        curl_easy_setopt(handle, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)length);
    } else {
        curl_easy_setopt(handle, CURLOPT_HTTPGET, 1L);
    }

    CURLcode code = curl_easy_perform(handle);
    classify(handle, code, &sink, error_buffer, transport->config->api_key, response);

    /* A timeout shortened to meet the shutdown deadline is that deadline
     * passing, not the server being slow. */
    double abort_at = atomic_load(&transport->base.abort_at);
    if (response->status == MONLIGHT_TIMED_OUT && abort_at > 0 &&
        ml_monotonic_now() >= abort_at - 0.05) {
        response->status = MONLIGHT_ABORTED;
        response->retryable = false;
        snprintf(response->detail, sizeof response->detail,
                 "aborted at the shutdown deadline");
    }

    /* Drop the body pointer before the handle goes back to the pool. */
    curl_easy_setopt(handle, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, NULL);
    return_handle(transport, handle);
}

static void curl_post(ml_transport *base, const char *url, const char *body,
                      size_t length, ml_response *response)
{
    perform((curl_transport *)base, url, body, length, true, response);
}

static void curl_get(ml_transport *base, const char *url,
                     ml_response *response)
{
    perform((curl_transport *)base, url, NULL, 0, false, response);
}

static void curl_prepare_fork(ml_transport *base)
{
    curl_transport *transport = (curl_transport *)base;
    pthread_mutex_lock(&transport->pool_lock);
}

static void curl_parent_after_fork(ml_transport *base)
{
    curl_transport *transport = (curl_transport *)base;
    pthread_mutex_unlock(&transport->pool_lock);
}

/*
 * The pooled handles hold the parent's connections: cleaning them up here
 * could send a TLS close_notify on a socket the parent still uses, so they
 * are abandoned instead. The cost is their memory, once per fork.
 */
static void curl_after_fork_child(ml_transport *base)
{
    curl_transport *transport = (curl_transport *)base;
    transport->pool_count = 0;
    pthread_mutex_unlock(&transport->pool_lock);
}

static void curl_destroy(ml_transport *base)
{
    curl_transport *transport = (curl_transport *)base;

    for (size_t i = 0; i < transport->pool_count; i++)
        curl_easy_cleanup(transport->pool[i]);
    curl_slist_free_all(transport->post_headers);
    pthread_mutex_destroy(&transport->pool_lock);
    free(transport);
}

static const ml_transport_ops curl_ops = {
    curl_post,          curl_get,           curl_after_fork_child,
    curl_prepare_fork,  curl_parent_after_fork, curl_destroy,
};

ml_transport *ml_curl_transport_new(const ml_config *config)
{
    curl_transport *transport = calloc(1, sizeof *transport);
    if (!transport)
        return NULL;
    transport->base.ops = &curl_ops;
    atomic_init(&transport->base.abort_at, 0.0);
    transport->config = config;
    pthread_mutex_init(&transport->pool_lock, NULL);

    /* The key was checked for header-breaking bytes when it was set. */
    size_t key_header_size = strlen(config->api_key) + sizeof "X-API-Key: ";
    char *key_header = malloc(key_header_size);
    struct curl_slist *headers = NULL;
    if (key_header) {
        snprintf(key_header, key_header_size, "X-API-Key: %s",
                 config->api_key);
        headers = curl_slist_append(headers, key_header);
        free(key_header);
    }
    struct curl_slist *more = headers;
    if (more)
        more = curl_slist_append(headers, "Content-Type: application/json");
    if (more)
        more = curl_slist_append(headers, "Expect:");
    if (!more) {
        curl_slist_free_all(headers);
        pthread_mutex_destroy(&transport->pool_lock);
        free(transport);
        return NULL;
    }
    transport->post_headers = headers;
    return &transport->base;
}
