-- json.lua: a small JSON decoder for the tests, which read the receiver's
-- record file. No JSON library ships with every Lua the tests run under.
--
-- decode(text) returns the value: objects and arrays become tables, null
-- becomes json.null. The key order of each object, which the metrics
-- collector treats as significant, is kept in json.keys(object).

local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end })

local key_order = setmetatable({}, { __mode = "k" })

--- Returns the keys of a decoded object in the order of the text.
function json.keys(object)
    return key_order[object] or {}
end

local escapes = {
    ['"'] = '"', ["\\"] = "\\", ["/"] = "/",
    b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
}

-- Returns the UTF-8 bytes of a code point.
local function utf8_bytes(code)
    if code < 0x80 then
        return string.char(code)
    elseif code < 0x800 then
        return string.char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
    elseif code < 0x10000 then
        return string.char(0xE0 + math.floor(code / 0x1000),
                           0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
    end
    return string.char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
                       0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

local decode_value

local function skip_space(text, position)
    return text:find("[^ \t\r\n]", position) or #text + 1
end

local function fail(text, position, expected)
    error(string.format("invalid JSON at byte %d: expected %s near %q", position, expected,
                        text:sub(position, position + 20)), 0)
end

local function decode_string(text, position)
    local parts = {}
    position = position + 1
    while true do
        local stop = text:find('["\\]', position)
        if not stop then
            fail(text, position, "the end of a string")
        end
        parts[#parts + 1] = text:sub(position, stop - 1)
        if text:sub(stop, stop) == '"' then
            return table.concat(parts), stop + 1
        end
        local escape = text:sub(stop + 1, stop + 1)
        if escape == "u" then
            local code = tonumber(text:sub(stop + 2, stop + 5), 16)
            position = stop + 6
            if code and code >= 0xD800 and code <= 0xDBFF and text:sub(position, position + 1) == "\\u" then
                local low = tonumber(text:sub(position + 2, position + 5), 16)
                if low and low >= 0xDC00 and low <= 0xDFFF then
                    code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
                    position = position + 6
                end
            end
            if not code then
                fail(text, stop, "four hex digits")
            end
            parts[#parts + 1] = utf8_bytes(code)
        elseif escapes[escape] then
            parts[#parts + 1] = escapes[escape]
            position = stop + 2
        else
            fail(text, stop, "an escape")
        end
    end
end

local function decode_array(text, position)
    local array = {}
    position = skip_space(text, position + 1)
    if text:sub(position, position) == "]" then
        return array, position + 1
    end
    while true do
        array[#array + 1], position = decode_value(text, position)
        position = skip_space(text, position)
        local separator = text:sub(position, position)
        if separator == "]" then
            return array, position + 1
        elseif separator ~= "," then
            fail(text, position, "',' or ']'")
        end
        position = position + 1
    end
end

local function decode_object(text, position)
    local object, keys = {}, {}
    key_order[object] = keys
    position = skip_space(text, position + 1)
    if text:sub(position, position) == "}" then
        return object, position + 1
    end
    while true do
        position = skip_space(text, position)
        if text:sub(position, position) ~= '"' then
            fail(text, position, "a key")
        end
        local key
        key, position = decode_string(text, position)
        position = skip_space(text, position)
        if text:sub(position, position) ~= ":" then
            fail(text, position, "':'")
        end
        keys[#keys + 1] = key
        object[key], position = decode_value(text, position + 1)
        position = skip_space(text, position)
        local separator = text:sub(position, position)
        if separator == "}" then
            return object, position + 1
        elseif separator ~= "," then
            fail(text, position, "',' or '}'")
        end
        position = position + 1
    end
end

local literals = { ["true"] = true, ["false"] = false, ["null"] = json.null }

decode_value = function(text, position)
    position = skip_space(text, position)
    local first = text:sub(position, position)
    if first == "{" then
        return decode_object(text, position)
    elseif first == "[" then
        return decode_array(text, position)
    elseif first == '"' then
        return decode_string(text, position)
    end
    local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", position)
    if number and number ~= "" then
        return tonumber(number), position + #number
    end
    for word, value in pairs(literals) do
        if text:sub(position, position + #word - 1) == word then
            return value, position + #word
        end
    end
    fail(text, position, "a value")
end

--- Decodes one JSON text. Raises with the byte position on invalid input.
function json.decode(text)
    local value, position = decode_value(text, 1)
    position = skip_space(text, position)
    if position <= #text then
        fail(text, position, "the end of the text")
    end
    return value
end

return json
