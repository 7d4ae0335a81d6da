/*
 * clock.c: time, sleeping, jitter and the retry backoff.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <time.h>

double ml_monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t ml_wall_seconds(void)
{
    struct timespec ts;

    /* The coarse clock is read without a system call and is precise to a
     * few milliseconds, far finer than the whole seconds the collector
     * stores. */
#ifdef CLOCK_REALTIME_COARSE
    if (clock_gettime(CLOCK_REALTIME_COARSE, &ts) == 0)
        return (int64_t)ts.tv_sec;
#endif
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

void ml_sleep(double seconds)
{
    if (!(seconds > 0))
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

double ml_random_unit(void)
{
    /* xorshift64*: jitter needs spread, not secrecy. The state is shared
     * by all threads; a lost update between two threads only repeats a
     * value, which is harmless for jitter. */
    static _Atomic uint64_t state = 0;
    uint64_t x = atomic_load_explicit(&state, memory_order_relaxed);

    if (x == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
            0x9E3779B97F4A7C15ull;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    atomic_store_explicit(&state, x, memory_order_relaxed);
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

void ml_deadline_to_timespec(double monotonic_seconds, struct timespec *ts)
{
    if (monotonic_seconds < 0)
        monotonic_seconds = 0;
    if (monotonic_seconds > 4e9)
        monotonic_seconds = 4e9;
    ts->tv_sec = (time_t)monotonic_seconds;
    ts->tv_nsec = (long)((monotonic_seconds - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int ml_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        return rc;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

double ml_backoff_delay(int attempt, double max_delay, double retry_after)
{
    /* A server's own figure wins, even over the cap: retrying earlier than
     * it asked only earns another 429. It is kept between one second (the
     * services count in whole seconds, and a tiny figure would make a
     * client hammer them) and an hour (so that one response cannot park the
     * queue for days). */
    if (retry_after > 0) {
        if (retry_after < ML_RETRY_AFTER_MIN)
            return ML_RETRY_AFTER_MIN;
        return retry_after > ML_RETRY_AFTER_MAX ? ML_RETRY_AFTER_MAX : retry_after;
    }

    double ceiling = ldexp(1.0, attempt > 30 ? 30 : attempt - 1);
    if (ceiling > max_delay)
        ceiling = max_delay;

    /* Full jitter between half the ceiling and the ceiling, so that many
     * processes restarted together do not retry in step. */
    return ceiling / 2 + ml_random_unit() * ceiling / 2;
}
