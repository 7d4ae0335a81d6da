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

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER; /* guards clients */
static ml_client *clients;
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
 * Every deadline counts from this call, so clients that wait on a dead
 * service one after the other still finish within the longest deadline.
 */
void monlight_shutdown_all(void)
{
    double started = ml_monotonic_now();
    pthread_mutex_lock(&registry_lock);
    for (ml_client *client = clients; client; client = client->next)
        client->ops->shutdown(client, started);
    pthread_mutex_unlock(&registry_lock);
}
