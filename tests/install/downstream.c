/*
 * downstream.c: a program as a user would write it against an installed
 * libmonlight: one counter and one error report, delivered to the URL in
 * MONLIGHT_URL with the key in MONLIGHT_API_KEY. Exits 0 when both were
 * accepted.
 */
#include <monlight.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    const char *url = getenv("MONLIGHT_URL");
    const char *key = getenv("MONLIGHT_API_KEY");
    if (!url || !key) {
        fprintf(stderr, "downstream: set MONLIGHT_URL and MONLIGHT_API_KEY\n");
        return 2;
    }
    if (strcmp(monlight_version(), MONLIGHT_VERSION_STRING) != 0) {
        fprintf(stderr, "downstream: header %s but library %s\n",
                MONLIGHT_VERSION_STRING, monlight_version());
        return 1;
    }

    monlight_options *options = monlight_options_new();
    monlight_options_set_string(options, MONLIGHT_OPT_BASE_URL, url, strlen(url));
    monlight_options_set_string(options, MONLIGHT_OPT_API_KEY, key, strlen(key));
    monlight_metrics_client *metrics = NULL;
    monlight_error_client *errors = NULL;
    if (monlight_metrics_client_new(options, &metrics) != MONLIGHT_OK ||
        monlight_error_client_new(options, &errors) != MONLIGHT_OK) {
        fprintf(stderr, "downstream: %s\n", monlight_options_last_error(options));
        return 1;
    }
    monlight_options_free(options);

    monlight_label label = {"linked", 6, "yes", 3};
    monlight_counter(metrics, "downstream_runs_total", 1, &label, 1);
    monlight_status flushed = monlight_metrics_client_flush(metrics);

    monlight_report *report = monlight_report_new();
    monlight_report_set(report, MONLIGHT_FIELD_EXCEPTION_TYPE, "DownstreamCheck", 15);
    monlight_report_set(report, MONLIGHT_FIELD_MESSAGE, "installed copy works", 20);
    monlight_status sent = monlight_error_client_send(errors, report);
    monlight_report_free(report);

    monlight_metrics_client_free(metrics);
    monlight_error_client_free(errors);
    printf("downstream: flush %s, send %s\n", monlight_status_name(flushed),
           monlight_status_name(sent));
    return flushed == MONLIGHT_OK && sent == MONLIGHT_OK ? 0 : 1;
}
