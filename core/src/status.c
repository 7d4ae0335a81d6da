/*
 * status.c: the version and the names and messages of status codes, all
 * generated from MONLIGHT_STATUS_LIST in monlight.h.
 */
#include "internal.h"

const char *monlight_version(void)
{
    return MONLIGHT_VERSION_STRING;
}

const char *monlight_status_name(monlight_status status)
{
    switch (status) {
#define STATUS_NAME_CASE(name, value, message) \
    case MONLIGHT_##name:                      \
        return #name;
        MONLIGHT_STATUS_LIST(STATUS_NAME_CASE)
#undef STATUS_NAME_CASE
    }
    return "UNKNOWN";
}

const char *monlight_status_message(monlight_status status)
{
    switch (status) {
#define STATUS_MESSAGE_CASE(name, value, message) \
    case MONLIGHT_##name:                         \
        return message;
        MONLIGHT_STATUS_LIST(STATUS_MESSAGE_CASE)
#undef STATUS_MESSAGE_CASE
    }
    return "unknown status";
}
