/*
 * log.c: the engine's only way to speak. Lines go to the host's callback,
 * or to stderr with a "monlight: " prefix when the host set none.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

void ml_log_limiter_init(ml_log_limiter *limiter)
{
    pthread_mutex_init(&limiter->lock, NULL);
    limiter->window_start = 0;
    limiter->emitted = 0;
    limiter->suppressed = 0;
}

void ml_log_limiter_destroy(ml_log_limiter *limiter)
{
    pthread_mutex_destroy(&limiter->lock);
}

static void emit(const ml_logger *logger, monlight_log_level level,
                 const char *line)
{
    if (logger && logger->callback) {
        logger->callback(level, line, logger->user_data);
        return;
    }

    /* One write per line keeps lines from several threads whole. */
    char out[1100];
    int n = snprintf(out, sizeof out, "monlight: %s\n", line);
    if (n > 0)
        fwrite(out, 1, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1,
               stderr);
}

/*
 * Decides whether a line may be logged now. Returns the number of lines
 * suppressed in the previous window when a new window starts, so that the
 * caller can say so, or 0.
 */
static bool limiter_allows(ml_log_limiter *limiter, unsigned *suppressed)
{
    int64_t now = ml_wall_seconds();
    bool allowed;

    *suppressed = 0;
    pthread_mutex_lock(&limiter->lock);
    if (now - limiter->window_start >= 60) {
        *suppressed = limiter->suppressed;
        limiter->window_start = now;
        limiter->emitted = 0;
        limiter->suppressed = 0;
    }
    allowed = limiter->emitted < ML_LOG_BURST;
    if (allowed)
        limiter->emitted++;
    else
        limiter->suppressed++;
    pthread_mutex_unlock(&limiter->lock);
    return allowed;
}

void ml_log(const ml_logger *logger, ml_log_limiter *limiter,
            monlight_log_level level, const char *format, ...)
{
    unsigned suppressed = 0;

    if (limiter && !limiter_allows(limiter, &suppressed))
        return;

    if (suppressed > 0) {
        char note[96];
        snprintf(note, sizeof note,
                 "%u similar warnings were suppressed in the last minute",
                 suppressed);
        emit(logger, MONLIGHT_LOG_WARNING, note);
    }

    char line[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    emit(logger, level, line);
}
