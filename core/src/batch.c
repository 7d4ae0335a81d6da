/*
 * batch.c: metric batches. A batch stores each distinct series (name,
 * type and label set) once, as the JSON text that starts its metrics, and
 * each recorded metric as a 24-byte entry pointing at it; the JSON body is
 * written in one pass when the batch is sent.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

uint64_t ml_hash(uint64_t seed, const void *data, size_t length)
{
    /* Multiply-and-fold over 64-bit words: a few instructions per eight
     * bytes, against several per byte for a bytewise hash. The length is
     * mixed in first, so that ("ab", "c") and ("a", "bc") differ. */
    const unsigned char *p = data;
    uint64_t hash = seed ^ ((uint64_t)length * 0xC2B2AE3D27D4EB4Full);
    uint64_t word;

    while (length >= 8) {
        memcpy(&word, p, 8);
        hash = (hash ^ word) * 0xFF51AFD7ED558CCDull;
        hash ^= hash >> 32;
        p += 8;
        length -= 8;
    }
    word = 0;
    if (length)
        memcpy(&word, p, length);
    hash = (hash ^ word) * 0xC4CEB9FE1A85EC53ull;
    hash ^= hash >> 29;
    return hash;
}

ml_batch *ml_batch_new(void)
{
    ml_batch *batch = calloc(1, sizeof *batch);
    if (batch)
        ml_buf_init(&batch->arena);
    return batch;
}

void ml_batch_free(ml_batch *batch)
{
    if (!batch)
        return;
    free(batch->entries);
    free(batch->series);
    free(batch->slots);
    ml_buf_free(&batch->arena);
    free(batch);
}

/* "[" and "]" of the array plus the "," before each entry but the first
 * are counted in the entries' sizes. */
#define ARRAY_OVERHEAD 2

/* The maximum length of a number that ml_json_append_number() writes. */
#define NUMBER_MAX 24

size_t ml_entry_body_size(size_t series_length, size_t project_part)
{
    /* ,"value":N,"timestamp":"YYYY-MM-DDTHH:MM:SSZ"} and the comma. */
    return series_length + sizeof ",\"value\":" - 1 + NUMBER_MAX +
           sizeof ",\"timestamp\":\"2026-01-01T00:00:00Z\"" - 1 +
           project_part + 2;
}

static bool grow_slots(ml_batch *batch)
{
    uint32_t count = batch->slot_count ? batch->slot_count * 2 : 16;
    uint32_t *slots = calloc(count, sizeof *slots);
    if (!slots)
        return false;

    for (uint32_t i = 0; i < batch->series_count; i++) {
        uint32_t slot = (uint32_t)batch->series[i].hash & (count - 1);
        while (slots[slot])
            slot = (slot + 1) & (count - 1);
        slots[slot] = i + 1;
    }
    free(batch->slots);
    batch->slots = slots;
    batch->slot_count = count;
    return true;
}

/* Length of {"name":" before a plain name in the series text. */
#define NAME_PREFIX_LENGTH 9

static bool series_matches(const ml_batch *batch, const ml_series *series,
                           const ml_series_key *key)
{
    const char *text = batch->arena.data + series->offset;
    return series->hash == key->hash && series->name_plain &&
           series->type == (uint8_t)key->type &&
           series->name_length == key->name_length &&
           series->labels_length == key->labels_length &&
           memcmp(text + NAME_PREFIX_LENGTH, key->name, key->name_length) == 0 &&
           memcmp(text + series->length - key->labels_length, key->labels_json,
                  key->labels_length) == 0;
}

uint32_t ml_batch_find(const ml_batch *batch, const ml_series_key *key)
{
    if (!batch->slot_count)
        return UINT32_MAX;
    uint32_t mask = batch->slot_count - 1;
    for (uint32_t slot = (uint32_t)key->hash & mask; batch->slots[slot];
         slot = (slot + 1) & mask) {
        const ml_series *series = &batch->series[batch->slots[slot] - 1];
        if (series_matches(batch, series, key))
            return batch->slots[slot] - 1;
    }
    return UINT32_MAX;
}

uint32_t ml_batch_series(ml_batch *batch, const ml_series_key *key,
                         const char *text, size_t length)
{
    /* A series whose name needed escaping is matched by its text. */
    if (batch->slot_count) {
        uint32_t mask = batch->slot_count - 1;
        for (uint32_t slot = (uint32_t)key->hash & mask; batch->slots[slot];
             slot = (slot + 1) & mask) {
            const ml_series *series = &batch->series[batch->slots[slot] - 1];
            if (series->hash == key->hash && series->length == length &&
                memcmp(batch->arena.data + series->offset, text, length) == 0)
                return batch->slots[slot] - 1;
        }
    }

    /* Keep the table at most half full. */
    if ((batch->series_count + 1) * 2 > batch->slot_count && !grow_slots(batch))
        return UINT32_MAX;
    if (batch->series_count == batch->series_capacity) {
        uint32_t capacity = batch->series_capacity ? batch->series_capacity * 2 : 4;
        ml_series *grown = realloc(batch->series, capacity * sizeof *grown);
        if (!grown)
            return UINT32_MAX;
        batch->series = grown;
        batch->series_capacity = capacity;
    }

    size_t offset = batch->arena.length;
    ml_buf_append(&batch->arena, text, length);
    if (batch->arena.failed)
        return UINT32_MAX;

    uint32_t index = batch->series_count++;
    bool name_plain = length >= NAME_PREFIX_LENGTH + key->name_length &&
                      memcmp(text + NAME_PREFIX_LENGTH, key->name,
                             key->name_length) == 0 &&
                      text[NAME_PREFIX_LENGTH + key->name_length] == '"';
    batch->series[index] = (ml_series){
        key->hash,          (uint32_t)offset,        (uint32_t)length,
        (uint32_t)key->name_length, (uint32_t)key->labels_length,
        (uint8_t)key->type, name_plain,
    };
    uint32_t slot = (uint32_t)key->hash & (batch->slot_count - 1);
    while (batch->slots[slot])
        slot = (slot + 1) & (batch->slot_count - 1);
    batch->slots[slot] = index + 1;
    return index;
}

bool ml_batch_append(ml_batch *batch, uint32_t series, double value,
                     int64_t timestamp, size_t entry_size)
{
    if (batch->count == batch->capacity) {
        uint32_t capacity = batch->capacity ? batch->capacity * 2 : 32;
        if (capacity > ML_METRICS_BATCH_MAX)
            capacity = ML_METRICS_BATCH_MAX;
        ml_entry *grown = realloc(batch->entries, capacity * sizeof *grown);
        if (!grown)
            return false;
        batch->entries = grown;
        batch->capacity = capacity;
    }

    batch->entries[batch->count++] = (ml_entry){value, timestamp, series};
    if (batch->body_size == 0)
        batch->body_size = ARRAY_OVERHEAD;
    batch->body_size += entry_size;
    return true;
}

void ml_batch_serialize(const ml_batch *batch, const char *project_part,
                        ml_buf *out)
{
    size_t project_length = strlen(project_part);
    int64_t formatted_second = -1;
    char timestamp[21];

    ml_buf_clear(out);
    ml_buf_reserve(out, batch->body_size + 16);
    ml_buf_append_char(out, '[');
    for (uint32_t i = 0; i < batch->count; i++) {
        const ml_entry *entry = &batch->entries[i];
        const ml_series *series = &batch->series[entry->series];

        /* Metrics recorded in the same second share one formatting. */
        if (entry->timestamp != formatted_second) {
            ml_format_timestamp(entry->timestamp, timestamp);
            formatted_second = entry->timestamp;
        }
        if (i > 0)
            ml_buf_append_char(out, ',');
        ml_buf_append(out, batch->arena.data + series->offset, series->length);
        ml_buf_append(out, ",\"value\":", sizeof ",\"value\":" - 1);
        ml_json_append_number(out, entry->value);
        ml_buf_append(out, ",\"timestamp\":\"", sizeof ",\"timestamp\":\"" - 1);
        ml_buf_append(out, timestamp, 20);
        ml_buf_append_char(out, '"');
        ml_buf_append(out, project_part, project_length);
        ml_buf_append_char(out, '}');
    }
    ml_buf_append_char(out, ']');
}
