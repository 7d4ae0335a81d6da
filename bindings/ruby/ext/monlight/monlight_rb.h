/*
 * monlight_rb.h: C helpers of the Ruby extension, for what the generated
 * SWIG wrapper cannot do by itself. swig/monlight.i exposes them in
 * Monlight::Native under the names of the engine calls they stand for.
 *
 * - The calls that wait on the network release the GVL while they wait,
 *   so that other Ruby threads keep running. They cannot be interrupted
 *   (Thread#raise, Thread#kill and Timeout take effect once the call has
 *   returned), and each returns within the engine's own bound: the
 *   client's timeout per request, or its exit deadline for a shutdown.
 * - The engine logs from its background threads, where no Ruby code may
 *   run. Its lines are kept in a bounded queue here and handed to Ruby by
 *   mlrb_log_drain(), which the Ruby layer calls from its own thread.
 * - Clients are freed by Ruby's garbage collector. A GC free function must
 *   not wait on the network, so a client that still has buffered data is
 *   shut down and freed on a short-lived thread of its own.
 *
 * Every function except mlrb_log_drain() and mlrb_init() may be called
 * without the GVL; the mlrb_*_release() functions are called by the GC.
 */
#ifndef MONLIGHT_RB_H
#define MONLIGHT_RB_H

#include <stdbool.h>

#include <ruby.h>

#include "monlight.h"

/* Lines the log queue keeps before it drops new ones (and counts them). */
#define MLRB_LOG_QUEUE_MAX 256

/* Sets up the log queue and its fork handlers. Called once, by the
 * extension's Init function. */
void mlrb_init(void);

/* ------------------------------------------------------------------ */
/* Calls that wait on the network, run without the GVL                */
/* ------------------------------------------------------------------ */

/* monlight_error_client_send(). */
monlight_status mlrb_error_client_send(monlight_error_client *client,
                                       const monlight_report *report);

/* monlight_error_client_enqueue() without a completion callback. It only
 * waits when the background thread cannot be started and the report is
 * sent from the calling thread instead. */
monlight_status mlrb_error_client_enqueue(monlight_error_client *client,
                                          const monlight_report *report);

/* monlight_error_client_shutdown(). */
monlight_status mlrb_error_client_shutdown(monlight_error_client *client);

/* monlight_metrics_client_flush(). */
monlight_status mlrb_metrics_client_flush(monlight_metrics_client *client);

/* monlight_metrics_client_shutdown(). */
monlight_status mlrb_metrics_client_shutdown(monlight_metrics_client *client);

/*
 * monlight_shutdown_all(), for the Ruby layer's at_exit hook: Ruby tears
 * its objects down before the engine's own atexit() handler runs. From
 * this call on, clients that the GC releases are freed at once, because
 * a freeing thread would not outlive the process.
 */
void mlrb_shutdown_all_at_exit(void);

/* ------------------------------------------------------------------ */
/* Log queue                                                          */
/* ------------------------------------------------------------------ */

/* Makes clients created from these options log into the queue. */
monlight_status mlrb_options_use_log_queue(monlight_options *options);

/*
 * Takes every queued line and returns them, oldest first, as an Array of
 * [level, message] pairs: level an Integer (MONLIGHT_LOG_*), message a
 * UTF-8 String. When lines were dropped because the queue was full, a
 * warning saying how many comes last. Returns nil when nothing is queued,
 * so that the frequent empty drain allocates nothing. Needs the GVL.
 */
VALUE mlrb_log_drain(void);

/*
 * Waits without the GVL until a line is queued or `seconds` have passed,
 * and returns whether lines are queued. Thread#kill and the VM's own
 * shutdown end the wait early.
 */
bool mlrb_log_wait(double seconds);

/* ------------------------------------------------------------------ */
/* Release by the garbage collector                                   */
/* ------------------------------------------------------------------ */

/* Frees a client whose Ruby object the GC has collected; see above. */
void mlrb_error_client_release(monlight_error_client *client);
void mlrb_metrics_client_release(monlight_metrics_client *client);

#endif /* MONLIGHT_RB_H */
