/*
 * registry.c: process-wide state, kept to what exit and fork need.
 *
 * Every live client is on one list, for two reasons. An atexit() handler
 * delivers the buffered data of every client when the process exits
 * normally. And the pthread_atfork() handlers take every client's lock
 * before a fork, so that no lock is copied into the child while another
 * thread holds it; the child then resets each client (see the
 * child_after_fork hooks).
 */
#include "internal.h"

#include <curl/curl.h>
#include <stdlib.h>

/* Guards clients and the shutdown_all_* fields. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_changed = PTHREAD_COND_INITIALIZER;
static ml_client *clients;

/* monlight_shutdown_all() runs without holding registry_lock, since a
 * client's shutdown calls the host's log callback, which may wait for an
 * interpreter lock that a forking thread holds while it waits for
 * registry_lock. Meanwhile clients are not removed (freed), so the list
 * it walks stays valid. */
static bool shutdown_all_running;
static pthread_t shutdown_all_thread;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_succeeded;

static void at_exit(void)
{
    monlight_shutdown_all();
}

static void prepare_fork(void)
{
    pthread_mutex_lock(&registry_lock);
    for (ml_client *client = clients; client; client = client->next)
        client->ops->prepare_fork(client);
}

static void parent_after_fork(void)
{
    for (ml_client *client = clients; client; client = client->next)
        client->ops->parent_after_fork(client);
    pthread_mutex_unlock(&registry_lock);
}

static void child_after_fork(void)
{
    for (ml_client *client = clients; client; client = client->next)
        client->ops->child_after_fork(client);
    /* A shutdown_all running in another thread of the parent does not
     * run here. */
    shutdown_all_running = false;
    pthread_cond_init(&registry_changed, NULL);
    pthread_mutex_init(&registry_lock, NULL);
}

static void global_init(void)
{
    /* curl_global_init() is not thread-safe on every libcurl build, so it
     * runs here, once, behind pthread_once. */
    init_succeeded = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!init_succeeded)
        return;
    atexit(at_exit);
    pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
}

bool ml_global_init(void)
{
    pthread_once(&init_once, global_init);
    return init_succeeded;
}

void ml_registry_add(ml_client *client)
{
    pthread_mutex_lock(&registry_lock);
    client->prev = NULL;
    client->next = clients;
    if (clients)
        clients->prev = client;
    clients = client;
    pthread_mutex_unlock(&registry_lock);
}

void ml_registry_remove(ml_client *client)
{
    pthread_mutex_lock(&registry_lock);
    while (shutdown_all_running &&
           !pthread_equal(shutdown_all_thread, pthread_self()))
        pthread_cond_wait(&registry_changed, &registry_lock);
    if (client->prev)
        client->prev->next = client->next;
    else if (clients == client)
        clients = client->next;
    if (client->next)
        client->next->prev = client->prev;
    client->prev = client->next = NULL;
    pthread_mutex_unlock(&registry_lock);
}

/*
 * Shuts every registered client down. The clients stay registered (their
 * owners free them), and a second call finds them shut down already.
 * Every deadline counts from this call, and every transfer in flight
 * learns its deadline before the first client is shut down, so clients
 * waiting on a dead service finish together rather than one after the
 * other.
 */
void monlight_shutdown_all(void)
{
    double started = ml_monotonic_now();

    pthread_mutex_lock(&registry_lock);
    while (shutdown_all_running)
        pthread_cond_wait(&registry_changed, &registry_lock);
    shutdown_all_running = true;
    shutdown_all_thread = pthread_self();
    for (ml_client *client = clients; client; client = client->next) {
        ml_client_core *core = (ml_client_core *)client;
        double deadline = started + core->config.exit_deadline;
        double current = atomic_load(&core->transport->abort_at);
        if (current == 0 || deadline < current)
            atomic_store(&core->transport->abort_at, deadline);
    }

    for (ml_client *client = clients; client;) {
        pthread_mutex_unlock(&registry_lock);
        client->ops->shutdown(client, started);
        pthread_mutex_lock(&registry_lock);
        client = client->next;
    }

    shutdown_all_running = false;
    pthread_cond_broadcast(&registry_changed);
    pthread_mutex_unlock(&registry_lock);
}
