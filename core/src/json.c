/*
 * json.c: UTF-8 checks and the JSON text writers.
 *
 * Everything the engine sends is written here, byte by byte, so that the
 * services' rules hold whatever the application passes in: text is valid
 * UTF-8 (invalid sequences become U+FFFD), control characters and NUL
 * bytes are escaped, and numbers are finite.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Returns the length of the valid UTF-8 sequence at s[0..remaining), or 0
 * when it is invalid (overlong forms, surrogates and code points past
 * U+10FFFF included).
 */
static size_t utf8_sequence_length(const unsigned char *s, size_t remaining)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;

    size_t length = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (remaining < length)
        return 0;
    for (size_t i = 1; i < length; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;

    /* The second byte's range rules out overlong forms and surrogates. */
    if (c == 0xE0 && s[1] < 0xA0)
        return 0;
    if (c == 0xED && s[1] > 0x9F)
        return 0;
    if (c == 0xF0 && s[1] < 0x90)
        return 0;
    if (c == 0xF4 && s[1] > 0x8F)
        return 0;
    return length;
}

bool ml_utf8_valid(const char *s, size_t length)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < length) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_length(p + i, length - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void ml_utf8_sanitize(ml_buf *out, const char *s, size_t length)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *p = (const unsigned char *)s;
    size_t run_start = 0;
    size_t i = 0;

    ml_buf_reserve(out, length);
    while (i < length) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_length(p + i, length - i);
        if (n > 0) {
            i += n;
            continue;
        }
        ml_buf_append(out, s + run_start, i - run_start);
        ml_buf_append(out, replacement, 3);
        i++;
        run_start = i;
    }
    ml_buf_append(out, s + run_start, length - run_start);
}

size_t ml_utf8_cut(const char *s, size_t length, size_t max)
{
    if (length <= max)
        return length;

    /* Step back over continuation bytes to the start of a character. */
    size_t cut = max;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    return cut;
}

/* Bytes the escaped form of one byte of valid UTF-8 takes. */
static size_t escaped_size(unsigned char c)
{
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' ||
        c == '\b' || c == '\f')
        return 2;
    if (c < 0x20 || c == 0x7F)
        return 6;
    return 1;
}

size_t ml_json_string_size(const char *s, size_t length)
{
    size_t size = 2;
    for (size_t i = 0; i < length; i++)
        size += escaped_size((unsigned char)s[i]);
    return size;
}

void ml_json_append_string(ml_buf *out, const char *s, size_t length)
{
    static const char hex[] = "0123456789abcdef";
    size_t run_start = 0;

    if (!ml_buf_reserve(out, length + 2))
        return;
    ml_buf_append_char(out, '"');
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)s[i];
        if (escaped_size(c) == 1)
            continue;

        ml_buf_append(out, s + run_start, i - run_start);
        run_start = i + 1;
        char escape[6] = {'\\', 0, 0, 0, 0, 0};
        switch (c) {
        case '"': escape[1] = '"'; break;
        case '\\': escape[1] = '\\'; break;
        case '\n': escape[1] = 'n'; break;
        case '\r': escape[1] = 'r'; break;
        case '\t': escape[1] = 't'; break;
        case '\b': escape[1] = 'b'; break;
        case '\f': escape[1] = 'f'; break;
        default:
            escape[1] = 'u';
            escape[2] = '0';
            escape[3] = '0';
            escape[4] = hex[c >> 4];
            escape[5] = hex[c & 0xF];
            ml_buf_append(out, escape, 6);
            continue;
        }
        ml_buf_append(out, escape, 2);
    }
    ml_buf_append(out, s + run_start, length - run_start);
    ml_buf_append_char(out, '"');
}

void ml_json_append_number(ml_buf *out, double value)
{
    char text[32];
    int n;

    /* Integral values (the usual counter increments) print without an
     * exponent or fraction; the bound keeps them exact in a double. */
    if (value == floor(value) && fabs(value) < 1e15) {
        n = snprintf(text, sizeof text, "%.0f", value);
    } else {
        /* Shortest of %.15g and %.17g that reads back as the same value. */
        n = snprintf(text, sizeof text, "%.15g", value);
        if (strtod(text, NULL) != value)
            n = snprintf(text, sizeof text, "%.17g", value);
    }
    if (n > 0)
        ml_buf_append(out, text, (size_t)n);
}

void ml_format_timestamp(int64_t seconds, char out[21])
{
    time_t t = (time_t)seconds;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Skips JSON whitespace. */
static size_t skip_space(const char *s, size_t length, size_t i)
{
    while (i < length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Checks a JSON string starting at s[i] == '"' by the strict grammar (no
 * raw control characters, only the standard escapes); returns the index
 * after its closing quote, or 0 when it is invalid. */
static size_t skip_string(const char *s, size_t length, size_t i)
{
    if (i >= length || s[i] != '"')
        return 0;
    for (i++; i < length; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        if (++i >= length)
            return 0;
        switch (s[i]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            break;
        case 'u':
            if (i + 4 >= length || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) ||
                !is_hex(s[i + 3]) || !is_hex(s[i + 4]))
                return 0;
            i += 4;
            break;
        default:
            return 0;
        }
    }
    return 0;
}

bool ml_labels_json_valid(const char *s, size_t length)
{
    if (!ml_utf8_valid(s, length))
        return false;

    size_t i = skip_space(s, length, 0);
    if (i >= length || s[i] != '{')
        return false;
    i = skip_space(s, length, i + 1);
    if (i < length && s[i] == '}')
        return skip_space(s, length, i + 1) == length;

    for (;;) {
        i = skip_string(s, length, i); /* key */
        if (i == 0)
            return false;
        i = skip_space(s, length, i);
        if (i >= length || s[i] != ':')
            return false;
        i = skip_string(s, length, skip_space(s, length, i + 1)); /* value */
        if (i == 0)
            return false;
        i = skip_space(s, length, i);
        if (i < length && s[i] == ',') {
            i = skip_space(s, length, i + 1);
            continue;
        }
        if (i < length && s[i] == '}')
            return skip_space(s, length, i + 1) == length;
        return false;
    }
}
