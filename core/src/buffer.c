/*
 * buffer.c: the growable byte buffer every serializer writes into.
 *
 * A failed allocation marks the buffer as failed instead of returning an
 * error from every append, so that a serializer can write a whole body
 * and check once at the end.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ml_buf_init(ml_buf *buf)
{
    buf->data = NULL;
    buf->length = 0;
    buf->capacity = 0;
    buf->failed = false;
    buf->borrowed = false;
}

void ml_buf_init_with(ml_buf *buf, char *storage, size_t size)
{
    ml_buf_init(buf);
    buf->data = storage;
    buf->capacity = size;
    buf->borrowed = true;
}

void ml_buf_free(ml_buf *buf)
{
    if (!buf->borrowed)
        free(buf->data);
    ml_buf_init(buf);
}

void ml_buf_clear(ml_buf *buf)
{
    buf->length = 0;
    buf->failed = false;
}

bool ml_buf_reserve(ml_buf *buf, size_t extra)
{
    if (buf->failed)
        return false;
    if (extra < buf->capacity - buf->length)
        return true;

    /* One byte more than asked for keeps room for ml_buf_cstr()'s NUL. */
    if (extra > SIZE_MAX / 2 - buf->length) {
        buf->failed = true;
        return false;
    }
    size_t needed = buf->length + extra + 1;
    size_t capacity = buf->capacity ? buf->capacity : 64;
    while (capacity < needed)
        capacity *= 2;

    char *data;
    if (buf->borrowed) {
        data = malloc(capacity);
        if (data && buf->length)
            memcpy(data, buf->data, buf->length);
    } else {
        data = realloc(buf->data, capacity);
    }
    if (!data) {
        buf->failed = true;
        return false;
    }
    buf->data = data;
    buf->borrowed = false;
    buf->capacity = capacity;
    return true;
}

void ml_buf_append(ml_buf *buf, const void *data, size_t length)
{
    if (length == 0 || !ml_buf_reserve(buf, length))
        return;
    memcpy(buf->data + buf->length, data, length);
    buf->length += length;
}

void ml_buf_append_char(ml_buf *buf, char c)
{
    if (!ml_buf_reserve(buf, 1))
        return;
    buf->data[buf->length++] = c;
}

void ml_buf_append_str(ml_buf *buf, const char *s)
{
    ml_buf_append(buf, s, strlen(s));
}

void ml_buf_printf(ml_buf *buf, const char *format, ...)
{
    va_list args;
    char small[256];

    va_start(args, format);
    int needed = vsnprintf(small, sizeof small, format, args);
    va_end(args);
    if (needed < 0) {
        buf->failed = true;
        return;
    }
    if ((size_t)needed < sizeof small) {
        ml_buf_append(buf, small, (size_t)needed);
        return;
    }

    if (!ml_buf_reserve(buf, (size_t)needed))
        return;
    va_start(args, format);
    vsnprintf(buf->data + buf->length, (size_t)needed + 1, format, args);
    va_end(args);
    buf->length += (size_t)needed;
}

const char *ml_buf_cstr(ml_buf *buf)
{
    if (!ml_buf_reserve(buf, 0))
        return "";
    buf->data[buf->length] = '\0';
    return buf->data;
}
