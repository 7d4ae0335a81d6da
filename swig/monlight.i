/*
 * monlight.i: the SWIG description of the monlight C API (monlight.h).
 *
 * The module it generates is private to a binding (in Ruby:
 * Monlight::Native, under the gem's own classes). It keeps the C API
 * call for call, with these changes:
 *
 * - Names lose their prefix: monlight_options_new becomes options_new and
 *   MONLIGHT_OPT_BASE_URL becomes OPT_BASE_URL.
 * - Options, reports and clients are objects that the garbage collector
 *   frees. The *_free functions are not exposed, except report_release,
 *   which frees a report early and safely.
 * - A pointer-and-length pair is one string argument.
 * - A function that creates a client through an out pointer returns
 *   [status, client], with client nil on failure.
 * - Every other status is returned as an Integer; the binding decides
 *   which become exceptions.
 * - The calls that wait on the network are replaced by versions that
 *   release the interpreter lock, and the log callback by a queue that
 *   the binding drains (monlight_rb.h, for Ruby).
 *
 * Ruby is the only target so far: its typemaps are under SWIGRUBY, and
 * another language needs its own before this file builds for it.
 */
#if defined(SWIGRUBY)
%module "monlight::native"
#else
#error "monlight.i has typemaps for Ruby only; add the target language's typemaps first"
#endif

%{
#include "monlight.h"
#include "monlight_rb.h"
%}

%include <stdint.i>

/* ------------------------------------------------------------------ */
/* Names                                                              */
/* ------------------------------------------------------------------ */

%rename("%(strip:[monlight_])s", %$isfunction) "";
%rename("%(strip:[MONLIGHT_])s", %$isenumitem) "";
%rename("%(strip:[MONLIGHT_])s", %$isconstant) "";

/* Macros that only matter to C: the export attribute, and the X-macro that
 * the status enum is generated from (its values are wrapped). */
%ignore MONLIGHT_API;
%ignore MONLIGHT_STATUS_LIST;
%ignore MONLIGHT_STATUS_ENUM_ENTRY;

/* The shorthands take NUL-terminated names; the binding uses the
 * pointer-and-length form. */
%ignore monlight_counter;
%ignore monlight_histogram;
%ignore monlight_gauge;

/* A label only exists as part of the labels typemap below. */
%ignore monlight_label;

/* ------------------------------------------------------------------ */
/* Handles freed by the garbage collector                             */
/* ------------------------------------------------------------------ */

/*
 * Each opaque handle becomes a class whose instances own the C object and
 * free it when collected. Instances only come from the *_new functions:
 * the classes have no Ruby constructor. The empty struct bodies exist for
 * SWIG alone; in C the types stay opaque.
 */
%define MONLIGHT_HANDLE(CTYPE, CLASS, FREE)
%nodefaultctor CTYPE;
%rename(CLASS) CTYPE;
struct CTYPE {};
%extend CTYPE {
    ~CTYPE() { FREE($self); }
}
%ignore FREE;
%enddef

MONLIGHT_HANDLE(monlight_options, Options, monlight_options_free)
MONLIGHT_HANDLE(monlight_report, Report, monlight_report_free)
MONLIGHT_HANDLE(monlight_error_client, ErrorClient, mlrb_error_client_release)
MONLIGHT_HANDLE(monlight_metrics_client, MetricsClient, mlrb_metrics_client_release)

%ignore monlight_error_client_free;
%ignore monlight_metrics_client_free;

/*
 * A report is freed as soon as it has been handed to the engine, which
 * copies it, instead of at the GC, which does not see its C memory. The
 * Ruby object is emptied, so a later use raises instead of reaching freed
 * memory, and so does a second release.
 */
%{
static void mlrb_report_release(VALUE report)
{
    void *pointer = NULL;
    int result = SWIG_ConvertPtr(report, &pointer, SWIGTYPE_p_monlight_report,
                                 SWIG_POINTER_RELEASE);

    if (!SWIG_IsOK(result))
        rb_raise(rb_eTypeError, "report_release expects a Report that was not released yet");
    monlight_report_free(pointer);
}
%}
%rename(report_release) mlrb_report_release;
void mlrb_report_release(VALUE report);

%newobject monlight_options_new;
%newobject monlight_report_new;

/* ------------------------------------------------------------------ */
/* Typemaps: strings with lengths                                     */
/* ------------------------------------------------------------------ */

/*
 * A Ruby String becomes its bytes and byte length, NUL bytes and any
 * encoding included: the engine copies the bytes and repairs invalid
 * UTF-8 itself. Anything but a String raises TypeError. The pointer is
 * only used during the call, which never runs Ruby code or releases the
 * GVL, so the String can neither change nor move meanwhile.
 */
%typemap(in) (const char *BYTES, size_t LENGTH) {
    Check_Type($input, T_STRING);
    $1 = RSTRING_PTR($input);
    $2 = (size_t)RSTRING_LEN($input);
}

%apply (const char *BYTES, size_t LENGTH) {
    (const char *value, size_t length),
    (const char *name, size_t length),
    (const char *name, size_t name_length),
    (const char *value, size_t value_length),
    (const char *labels_json, size_t labels_json_length)
};

/* ------------------------------------------------------------------ */
/* Typemaps: labels                                                   */
/* ------------------------------------------------------------------ */

%{
typedef struct mlrb_label_fill {
    monlight_label *labels;
    size_t count;
} mlrb_label_fill;

/* Returns a label key or value as a String: Strings as they are, Symbols
 * as their name, which the symbol table keeps alive. Raises TypeError for
 * anything else. */
static VALUE mlrb_label_text(VALUE text)
{
    if (SYMBOL_P(text))
        return rb_sym2str(text);
    Check_Type(text, T_STRING);
    return text;
}

/* Adds one key => value pair of a labels Hash. */
static int mlrb_fill_label(VALUE key, VALUE value, VALUE data)
{
    mlrb_label_fill *fill = (mlrb_label_fill *)data;
    monlight_label *label = &fill->labels[fill->count++];

    key = mlrb_label_text(key);
    value = mlrb_label_text(value);
    label->key = RSTRING_PTR(key);
    label->key_length = (size_t)RSTRING_LEN(key);
    label->value = RSTRING_PTR(value);
    label->value_length = (size_t)RSTRING_LEN(value);
    return ST_CONTINUE;
}
%}

/*
 * A Hash whose keys and values are Strings or Symbols becomes an array of
 * labels in the Hash's order, which the engine keeps on the wire. The
 * array points into the Strings, which the Hash keeps alive for the call.
 */
%typemap(in) (const monlight_label *labels, size_t label_count)
    (VALUE storage = 0, mlrb_label_fill fill) {
    Check_Type($input, T_HASH);
    $2 = (size_t)RHASH_SIZE($input);
    fill.labels = ALLOCV_N(monlight_label, storage, $2);
    fill.count = 0;
    rb_hash_foreach($input, mlrb_fill_label, (VALUE)&fill);
    $1 = fill.labels;
}
%typemap(freearg) (const monlight_label *labels, size_t label_count) {
    if (storage$argnum)
        ALLOCV_END(storage$argnum);
}

/* ------------------------------------------------------------------ */
/* Typemaps: out pointers and buffers                                 */
/* ------------------------------------------------------------------ */

/* monlight_*_client_new(options, &client) returns [status, client]. */
%define MONLIGHT_CREATED_HANDLE(CTYPE)
%typemap(in, numinputs=0) CTYPE **client (CTYPE *created = NULL) {
    $1 = &created;
}
%typemap(argout) CTYPE **client {
    VALUE handle = *$1 ? SWIG_NewPointerObj(*$1, $*1_descriptor, SWIG_POINTER_OWN)
                       : Qnil;
    $result = rb_assoc_new($result, handle);
}
%enddef

MONLIGHT_CREATED_HANDLE(monlight_error_client)
MONLIGHT_CREATED_HANDLE(monlight_metrics_client)

/* monlight_*_client_last_error(client, buffer, size) returns the message
 * as a String, cut at 511 bytes; "" when no call has failed. */
%typemap(in, numinputs=0) (char *buffer, size_t size) (char message[512]) {
    message[0] = '\0';
    $1 = message;
    $2 = sizeof message;
}
%typemap(argout) (char *buffer, size_t size) {
    $result = rb_utf8_str_new_cstr($1);
}

/* ------------------------------------------------------------------ */
/* Calls that release the GVL, and the log queue                      */
/* ------------------------------------------------------------------ */

/* These wait on the network: monlight_rb.h has versions that let other
 * Ruby threads run meanwhile, exposed under the same names. */
%ignore monlight_error_client_send;
%ignore monlight_error_client_enqueue;
%ignore monlight_error_client_shutdown;
%ignore monlight_metrics_client_flush;
%ignore monlight_metrics_client_shutdown;
%ignore monlight_shutdown_all;

%rename(error_client_send) mlrb_error_client_send;
%rename(error_client_enqueue) mlrb_error_client_enqueue;
%rename(error_client_shutdown) mlrb_error_client_shutdown;
%rename(metrics_client_flush) mlrb_metrics_client_flush;
%rename(metrics_client_shutdown) mlrb_metrics_client_shutdown;
%rename(shutdown_all_at_exit) mlrb_shutdown_all_at_exit;

/* A C callback cannot call into Ruby from the engine's threads: clients
 * log into the queue instead, which Ruby drains. */
%ignore monlight_options_set_log;
%rename(options_use_log_queue) mlrb_options_use_log_queue;
%rename(log_drain) mlrb_log_drain;
%rename(log_wait) mlrb_log_wait;
%constant int LOG_QUEUE_MAX = MLRB_LOG_QUEUE_MAX;

%ignore mlrb_init;
%ignore mlrb_error_client_release;
%ignore mlrb_metrics_client_release;
%ignore MLRB_LOG_QUEUE_MAX;

%init %{
    mlrb_init();
%}

/* ------------------------------------------------------------------ */
/* The API                                                            */
/* ------------------------------------------------------------------ */

%include "monlight.h"
%include "monlight_rb.h"
