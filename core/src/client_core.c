/*
 * client_core.c: the parts the error client and the metrics client share.
 * These are the creation and destruction of their configuration,
 * transport, lock and log limiter, the last-error message, the counters,
 * and the halves of the fork hooks that do not depend on the client kind.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

monlight_status ml_core_init(ml_client_core *core, monlight_options *options,
                             const char *path, const ml_client_ops *ops)
{
    if (!ml_global_init()) {
        snprintf(options->last_error, sizeof options->last_error,
                 "libcurl could not be initialised");
        return MONLIGHT_TRANSPORT_FAILED;
    }

    monlight_status status = ml_config_init(&core->config, options, path);
    if (status != MONLIGHT_OK)
        return status;
    core->transport = ml_curl_transport_new(&core->config);
    if (!core->transport) {
        ml_config_free(&core->config);
        snprintf(options->last_error, sizeof options->last_error, "out of memory");
        return MONLIGHT_NO_MEMORY;
    }

    pthread_mutex_init(&core->lock, NULL);
    ml_cond_init_monotonic(&core->wake);
    ml_log_limiter_init(&core->limiter);
    core->registry.ops = ops;
    return MONLIGHT_OK;
}

void ml_core_destroy(ml_client_core *core)
{
    core->transport->ops->destroy(core->transport);
    pthread_cond_destroy(&core->wake);
    pthread_mutex_destroy(&core->lock);
    ml_log_limiter_destroy(&core->limiter);
    ml_config_free(&core->config);
}

void ml_core_set_last_error(ml_client_core *core, const char *format, ...)
{
    va_list args;
    pthread_mutex_lock(&core->lock);
    va_start(args, format);
    vsnprintf(core->last_error, sizeof core->last_error, format, args);
    va_end(args);
    pthread_mutex_unlock(&core->lock);
}

size_t ml_core_copy_last_error(ml_client_core *core, char *buffer, size_t size)
{
    if (!core) {
        if (buffer && size)
            buffer[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&core->lock);
    size_t length = strlen(core->last_error);
    if (buffer && size)
        snprintf(buffer, size, "%s", core->last_error);
    pthread_mutex_unlock(&core->lock);
    return length;
}

uint64_t ml_core_counter(ml_client_core *core, monlight_stat stat)
{
    switch (stat) {
    case MONLIGHT_STAT_DELIVERED: return atomic_load(&core->delivered);
    case MONLIGHT_STAT_DROPPED: return atomic_load(&core->dropped);
    case MONLIGHT_STAT_RETRIED: return atomic_load(&core->retried);
    case MONLIGHT_STAT_FAILED: return atomic_load(&core->failed);
    case MONLIGHT_STAT_PENDING: break; /* kept by each client kind */
    }
    return 0;
}

void ml_core_prepare_fork(ml_client_core *core)
{
    pthread_mutex_lock(&core->lock);
    core->transport->ops->prepare_fork(core->transport);
}

void ml_core_parent_after_fork(ml_client_core *core)
{
    core->transport->ops->parent_after_fork(core->transport);
    pthread_mutex_unlock(&core->lock);
}

void ml_core_child_after_fork(ml_client_core *core)
{
    /* The thread that forked, the only thread in the child, took the lock
     * before the fork. The condition variable and the limiter's lock may
     * have been in use by threads that do not exist here, so all three
     * are made anew. The counters are the parent's, so the child counts
     * from zero. */
    core->transport->ops->after_fork_child(core->transport);
    atomic_store(&core->delivered, 0);
    atomic_store(&core->dropped, 0);
    atomic_store(&core->retried, 0);
    atomic_store(&core->failed, 0);
    pthread_mutex_init(&core->lock, NULL);
    ml_cond_init_monotonic(&core->wake);
    ml_log_limiter_init(&core->limiter);
}
