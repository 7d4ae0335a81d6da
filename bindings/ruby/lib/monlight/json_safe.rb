# frozen_string_literal: true

require "json"

require "monlight/text"

module Monlight
  # Encodes the `extra` of an error report as JSON without ever raising.
  #
  # Values that JSON cannot represent are written as strings. Symbols and
  # other objects are written by to_s (or inspect when to_s raises), NaN
  # and Infinity as "NaN" and "Infinity". Text that is not valid UTF-8 gets
  # U+FFFD in place of the bad bytes. A container that contains itself is written as
  # "[cycle]" where it recurs, and nesting deeper than MAX_DEPTH as
  # "[too deep]".
  #
  # @api private
  module JSONSafe
    MAX_DEPTH = 32
    CYCLE = "[cycle]"
    TOO_DEEP = "[too deep]"

    module_function

    # Returns the JSON text of value.
    def generate(value)
      JSON.generate(convert(value, {}.compare_by_identity, 0))
    rescue StandardError, SystemStackError => e
      JSON.generate({ "monlight_error" => "extra could not be encoded as JSON: #{e.class}" })
    end

    # Returns value as plain Hash, Array, String, Integer, Float, true,
    # false and nil. `open` contains the containers being converted, which are
    # the ancestors of value.
    def convert(value, open, depth)
      case value
      when nil, true, false, Integer then value
      when Float then value.finite? ? value : value.to_s
      when String then text(value)
      when Symbol then text(value.to_s)
      when Hash, Array then convert_container(value, open, depth)
      else text(describe(value))
      end
    end

    def convert_container(container, open, depth)
      return CYCLE if open.key?(container)
      return TOO_DEEP if depth >= MAX_DEPTH

      open[container] = true
      begin
        if container.is_a?(Hash)
          container.each_with_object({}) do |(key, item), out|
            out[key.is_a?(String) ? text(key) : text(describe(key))] = convert(item, open, depth + 1)
          end
        else
          container.map { |item| convert(item, open, depth + 1) }
        end
      ensure
        open.delete(container)
      end
    end

    def describe(value)
      value.to_s
    rescue StandardError
      begin
        value.inspect
      rescue StandardError
        "#<#{value.class}>"
      end
    end

    def text(value)
      Text.utf8(value)
    end
  end
end
