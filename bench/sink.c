/*
 * sink.c: a minimal keep-alive HTTP/1.1 server for the throughput
 * benchmarks.
 *
 * It reads each request's headers and Content-Length body and responds at
 * once, without validating anything: 201 with a short JSON object for
 * /api/errors, 202 for every other path. It exists so that the server's
 * own cost stays small and constant next to the client costs being
 * measured; the contract receiver (tests/receiver) is written in Python
 * and validates every body, which would dominate a loopback round trip.
 *
 * One thread, epoll, any number of connections. A connection stays open
 * until the client closes it or sends "Connection: close". Requests with
 * a chunked body get 411, since every client under test sends
 * Content-Length.
 *
 *   sink --port-file FILE [--capture FILE] [--max-seconds N]
 *
 * The sink listens on 127.0.0.1 on a free port, writes the port number to
 * --port-file, and exits on SIGTERM or SIGINT, or after --max-seconds
 * (default 600) so that it cannot outlive a benchmark run. With
 * --capture, the body of the first POST is written to that file before
 * the response is sent. On exit it prints the requests and body bytes it
 * received to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADER_BYTES 65536
#define MAX_EVENTS 64

typedef struct connection {
    int fd;
    char *data; /* bytes read and not yet consumed */
    size_t length;
    size_t capacity;
} connection;

static volatile sig_atomic_t stop_requested;
static unsigned long long request_count;
static unsigned long long body_bytes;
static const char *capture_path;
static bool captured;

static void on_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void close_connection(int epoll_fd, connection *conn)
{
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
    close(conn->fd);
    free(conn->data);
    free(conn);
}

/* Writes the whole buffer to the non-blocking socket, retrying on EAGAIN.
 * Responses are a few hundred bytes, so the socket buffer has room for
 * them unless the client stops reading. */
static bool write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t written = send(fd, data, length, MSG_NOSIGNAL);
        if (written < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return false;
        }
        data += written;
        length -= (size_t)written;
    }
    return true;
}

/* Returns the value of a header (case-insensitive name) inside the header
 * block, or NULL. The value runs to the next CR. */
static const char *find_header(const char *headers, size_t length,
                               const char *name)
{
    size_t name_length = strlen(name);
    const char *line = memchr(headers, '\n', length);
    const char *end = headers + length;

    while (line && line + 1 < end) {
        line++;
        if ((size_t)(end - line) > name_length &&
            strncasecmp(line, name, name_length) == 0 &&
            line[name_length] == ':') {
            const char *value = line + name_length + 1;
            while (value < end && (*value == ' ' || *value == '\t'))
                value++;
            return value;
        }
        line = memchr(line, '\n', (size_t)(end - line));
    }
    return NULL;
}

static void capture_body(const char *body, size_t length)
{
    FILE *file = fopen(capture_path, "wb");
    if (!file) {
        perror("sink: cannot write the capture file");
        return;
    }
    fwrite(body, 1, length, file);
    fclose(file);
}

/*
 * Responds to every complete request in the connection's buffer. Returns
 * false when the connection must be closed.
 */
static bool serve_requests(connection *conn)
{
    static const char metrics_response[] =
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
        "Content-Length: 21\r\n\r\n{\"status\":\"accepted\"}";
    static const char error_response[] =
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        "Content-Length: 52\r\n\r\n"
        "{\"status\":\"created\",\"id\":1,\"fingerprint\":\"00000000\"}";
    static const char chunked_response[] =
        "HTTP/1.1 411 Length Required\r\nContent-Type: application/json\r\n"
        "Content-Length: 35\r\nConnection: close\r\n\r\n"
        "{\"detail\":\"Content-Length required\"}";

    size_t consumed = 0;
    for (;;) {
        const char *start = conn->data + consumed;
        size_t available = conn->length - consumed;
        const char *header_end = memmem(start, available, "\r\n\r\n", 4);
        if (!header_end) {
            if (available > MAX_HEADER_BYTES)
                return false;
            break;
        }
        size_t header_length = (size_t)(header_end - start) + 4;

        const char *value = find_header(start, header_length, "content-length");
        size_t content_length = value ? strtoull(value, NULL, 10) : 0;
        const char *encoding = find_header(start, header_length, "transfer-encoding");
        if (encoding && strncasecmp(encoding, "chunked", 7) == 0) {
            write_all(conn->fd, chunked_response, sizeof chunked_response - 1);
            return false;
        }
        if (available < header_length + content_length)
            break;

        const char *connection_header = find_header(start, header_length, "connection");
        bool close_after = connection_header &&
                           strncasecmp(connection_header, "close", 5) == 0;
        bool is_error = header_length > 16 &&
                        memmem(start, header_length < 256 ? header_length : 256,
                               " /api/errors", 12) != NULL;

        if (capture_path && !captured && strncmp(start, "POST ", 5) == 0) {
            capture_body(start + header_length, content_length);
            captured = true;
        }
        request_count++;
        body_bytes += content_length;

        bool sent = is_error
                        ? write_all(conn->fd, error_response, sizeof error_response - 1)
                        : write_all(conn->fd, metrics_response, sizeof metrics_response - 1);
        if (!sent || close_after)
            return false;
        consumed += header_length + content_length;
    }

    memmove(conn->data, conn->data + consumed, conn->length - consumed);
    conn->length -= consumed;
    return true;
}

/* Reads what the socket has and returns false on an error. It sets *eof
 * when the client has closed its side, so that the requests it sent still
 * get their responses before the connection is closed. */
static bool read_available(connection *conn, bool *eof)
{
    *eof = false;
    for (;;) {
        if (conn->capacity - conn->length < 16384) {
            size_t capacity = conn->capacity ? conn->capacity * 2 : 65536;
            char *data = realloc(conn->data, capacity);
            if (!data)
                return false;
            conn->data = data;
            conn->capacity = capacity;
        }
        ssize_t got = recv(conn->fd, conn->data + conn->length,
                           conn->capacity - conn->length, 0);
        if (got > 0) {
            conn->length += (size_t)got;
            continue;
        }
        if (got == 0) {
            *eof = true;
            return true;
        }
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

static int parse_arguments(int argc, char **argv, const char **port_file,
                           long *max_seconds)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
            *port_file = argv[++i];
        } else if (strcmp(argv[i], "--capture") == 0 && i + 1 < argc) {
            capture_path = argv[++i];
        } else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
            *max_seconds = strtol(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: sink --port-file FILE [--capture FILE] "
                            "[--max-seconds N]\n");
            return -1;
        }
    }
    if (!*port_file) {
        fprintf(stderr, "sink: --port-file is required\n");
        return -1;
    }
    return 0;
}

static int open_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int enable = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof enable);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = 0,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 ||
        listen(fd, 512) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool write_port_file(const char *path, int listener)
{
    struct sockaddr_in address;
    socklen_t size = sizeof address;
    if (getsockname(listener, (struct sockaddr *)&address, &size) < 0)
        return false;

    /* Written under a temporary name and renamed, so that a reader never
     * sees a partial number. */
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    FILE *file = fopen(temporary, "w");
    if (!file)
        return false;
    fprintf(file, "%u\n", ntohs(address.sin_port));
    if (fclose(file) != 0)
        return false;
    return rename(temporary, path) == 0;
}

static void accept_all(int epoll_fd, int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0)
            return;
        int enable = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &enable, sizeof enable);
        connection *conn = calloc(1, sizeof *conn);
        if (!conn) {
            close(fd);
            continue;
        }
        conn->fd = fd;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = conn};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) {
            close(fd);
            free(conn);
        }
    }
}

int main(int argc, char **argv)
{
    const char *port_file = NULL;
    long max_seconds = 600;
    if (parse_arguments(argc, argv, &port_file, &max_seconds) < 0)
        return 2;

    struct sigaction action = {.sa_handler = on_signal};
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGALRM, &action, NULL);
    alarm((unsigned)max_seconds);

    int listener = open_listener();
    int epoll_fd = epoll_create1(0);
    if (listener < 0 || epoll_fd < 0) {
        perror("sink: cannot listen on 127.0.0.1");
        return 1;
    }
    /* The listener's data pointer is NULL, which distinguishes it from the
     * connections in the loop below. */
    struct epoll_event listen_event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &listen_event);
    if (!write_port_file(port_file, listener)) {
        perror("sink: cannot write the port file");
        return 1;
    }

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int ready = epoll_wait(epoll_fd, events, MAX_EVENTS, 1000);
        for (int i = 0; i < ready; i++) {
            connection *conn = events[i].data.ptr;
            if (!conn) {
                accept_all(epoll_fd, listener);
                continue;
            }
            bool eof;
            if (!read_available(conn, &eof) || !serve_requests(conn) || eof)
                close_connection(epoll_fd, conn);
        }
    }

    fprintf(stderr, "sink: %llu requests, %llu body bytes\n", request_count,
            body_bytes);
    return 0;
}
