/*
 * _fastpath.c: the record call of MetricsClient, as a plain CPython
 * extension function.
 *
 * cffi releases the GIL around every C call it makes. For a record call,
 * which takes the engine about 50 ns, the release and the reacquisition
 * cost more than the call, and with several threads recording each call
 * hands the GIL to another thread (a convoy). This function instead holds
 * the GIL while it turns the labels dict into JSON text on the stack and
 * calls the engine's monlight_metrics_client_record_json() through the
 * address cffi gives for it, so a record from Python costs one C call.
 *
 * It handles the common case only: a str name, a number, and a dict of
 * str to str (or None). For anything else it returns -1 without an
 * exception set, and the Python layer takes its general path, which
 * converts, validates and logs.
 */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030A0000
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* The engine's monlight_metrics_client_record_json(), with the enum
 * parameters as int and the returned status as int. */
typedef int (*record_json_fn)(void *client, int type, const char *name,
                              size_t name_length, double value,
                              const char *labels_json, size_t labels_length);

/* Label text longer than this goes through the general path. */
#define LABELS_BUFFER_SIZE 2048

#define TAKE_GENERAL_PATH (-1)

/*
 * Appends a JSON string literal for UTF-8 text, escaped exactly as the
 * engine and the Python layer escape label text (short escapes for the
 * usual control characters, \u00XX for the others and DEL), so that a
 * label set reads the same whichever path wrote it. Returns the new
 * length, or 0 when the text does not fit.
 */
static size_t append_json_string(char *buffer, size_t length, const char *text,
                                 Py_ssize_t text_length)
{
    static const char hex[] = "0123456789abcdef";

    if (length + 2 > LABELS_BUFFER_SIZE)
        return 0;
    buffer[length++] = '"';
    for (Py_ssize_t i = 0; i < text_length; i++) {
        unsigned char c = (unsigned char)text[i];
        char escape = 0;
        switch (c) {
        case '"': escape = '"'; break;
        case '\\': escape = '\\'; break;
        case '\n': escape = 'n'; break;
        case '\r': escape = 'r'; break;
        case '\t': escape = 't'; break;
        case '\b': escape = 'b'; break;
        case '\f': escape = 'f'; break;
        default: break;
        }
        if (escape) {
            if (length + 2 + 1 > LABELS_BUFFER_SIZE)
                return 0;
            buffer[length++] = '\\';
            buffer[length++] = escape;
        } else if (c < 0x20 || c == 0x7F) {
            if (length + 6 + 1 > LABELS_BUFFER_SIZE)
                return 0;
            memcpy(buffer + length, "\\u00", 4);
            buffer[length + 4] = hex[c >> 4];
            buffer[length + 5] = hex[c & 0xF];
            length += 6;
        } else {
            if (length + 1 + 1 > LABELS_BUFFER_SIZE)
                return 0;
            buffer[length++] = (char)c;
        }
    }
    buffer[length++] = '"';
    return length;
}

/* Writes {"key":"value",...} for a dict of str to str; returns its
 * length, or 0 when a key or value is not a str (or not encodable) or the
 * text does not fit. */
static size_t labels_to_json(PyObject *labels, char *buffer)
{
    Py_ssize_t position = 0;
    PyObject *key, *value;
    size_t length = 1;

    buffer[0] = '{';
    while (PyDict_Next(labels, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value))
            return 0;
        Py_ssize_t key_length, value_length;
        const char *key_text = PyUnicode_AsUTF8AndSize(key, &key_length);
        const char *value_text = key_text ? PyUnicode_AsUTF8AndSize(value, &value_length)
                                          : NULL;
        if (!value_text) {
            PyErr_Clear(); /* lone surrogates: the general path repairs them */
            return 0;
        }
        if (length > 1)
            buffer[length++] = ',';
        length = append_json_string(buffer, length, key_text, key_length);
        if (!length || length + 1 >= LABELS_BUFFER_SIZE)
            return 0;
        buffer[length++] = ':';
        length = append_json_string(buffer, length, value_text, value_length);
        if (!length || length + 1 >= LABELS_BUFFER_SIZE)
            return 0;
    }
    buffer[length++] = '}';
    return length;
}

/*
 * record(function, client, type, name, value, labels) -> int
 *
 * function and client are addresses as ints (from cffi); returns the
 * engine's status, or -1 for the general path.
 */
static PyObject *record(PyObject *module, PyObject *const *args, Py_ssize_t count)
{
    (void)module;
    if (count != 6) {
        PyErr_SetString(PyExc_TypeError, "record() takes 6 arguments");
        return NULL;
    }

    record_json_fn function = (record_json_fn)PyLong_AsVoidPtr(args[0]);
    void *client = PyLong_AsVoidPtr(args[1]);
    long type = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;

    PyObject *name = args[3];
    PyObject *value = args[4];
    PyObject *labels = args[5];
    if (!PyUnicode_CheckExact(name) ||
        !(PyFloat_CheckExact(value) || PyLong_CheckExact(value)) ||
        !(labels == Py_None || PyDict_CheckExact(labels)))
        return PyLong_FromLong(TAKE_GENERAL_PATH);

    Py_ssize_t name_length;
    const char *name_text = PyUnicode_AsUTF8AndSize(name, &name_length);
    double number = PyFloat_AsDouble(value); /* ints convert; huge ones fail */
    if (!name_text || PyErr_Occurred()) {
        PyErr_Clear();
        return PyLong_FromLong(TAKE_GENERAL_PATH);
    }

    char labels_json[LABELS_BUFFER_SIZE];
    size_t labels_length = 0;
    if (labels != Py_None && PyDict_Size(labels) > 0) {
        labels_length = labels_to_json(labels, labels_json);
        if (labels_length == 0)
            return PyLong_FromLong(TAKE_GENERAL_PATH);
    }

    int status = function(client, (int)type, name_text, (size_t)name_length, number,
                          labels_json, labels_length);
    return PyLong_FromLong(status);
}

/* labels_json(labels) -> bytes or None: the label text record() would
 * send, so that tests can compare it with the general path's. */
static PyObject *labels_json_for_tests(PyObject *module, PyObject *labels)
{
    (void)module;
    char buffer[LABELS_BUFFER_SIZE];
    if (!PyDict_CheckExact(labels))
        Py_RETURN_NONE;
    size_t length = labels_to_json(labels, buffer);
    if (length == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(buffer, (Py_ssize_t)length);
}

static PyMethodDef methods[] = {
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(function, client, type, name, value, labels) -> status, or -1 for "
     "the general path"},
    {"labels_json", labels_json_for_tests, METH_O,
     "labels_json(labels) -> the label text record() sends, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "monlight._fastpath",
    "MetricsClient's record call, made with the GIL held.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    return PyModule_Create(&module_definition);
}
