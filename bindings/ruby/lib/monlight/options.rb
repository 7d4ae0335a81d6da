# frozen_string_literal: true

module Monlight
  # Turns a client's keyword arguments into the engine's options, raising
  # ArgumentError that names the argument when one is invalid. The engine
  # checks values (URL scheme, key characters, ranges); this module checks
  # Ruby types first, so that each message names the keyword.
  #
  # @api private
  module Options
    STRING_OPTIONS = {
      base_url: Native::OPT_BASE_URL,
      api_key: Native::OPT_API_KEY,
      project: Native::OPT_PROJECT,
      environment: Native::OPT_ENVIRONMENT
    }.freeze

    NUMBER_OPTIONS = {
      timeout: Native::OPT_TIMEOUT,
      flush_interval: Native::OPT_FLUSH_INTERVAL
    }.freeze

    module_function

    # Builds options from strings and numbers keyed by keyword (nil values
    # keep the engine's default) and the extra excluded header names.
    def build(strings:, numbers: {}, excluded_headers: [])
      options = Native.options_new
      raise NoMemoryError, "monlight: out of memory while creating client options" unless options

      strings.each { |keyword, value| set_string(options, keyword, value) unless value.nil? }
      numbers.each { |keyword, value| set_number(options, keyword, value) unless value.nil? }
      header_names(excluded_headers).each do |name|
        Status.check!(Native.options_add_excluded_header(options, name), Native.options_last_error(options))
      end
      Status.check!(Native.options_use_log_queue(options), Native.options_last_error(options))
      options
    end

    def set_string(options, keyword, value)
      unless value.is_a?(String) || value.is_a?(Symbol)
        raise ArgumentError, "#{keyword} must be a String, got #{value.class}"
      end

      status = Native.options_set_string(options, STRING_OPTIONS.fetch(keyword), value.to_s)
      Status.check!(status, Native.options_last_error(options))
    end

    def set_number(options, keyword, value)
      unless value.is_a?(Numeric) && value.real? && value.to_f.finite?
        raise ArgumentError, "#{keyword} must be a finite number of seconds, got #{value.inspect}"
      end

      status = Native.options_set_number(options, NUMBER_OPTIONS.fetch(keyword), value.to_f)
      Status.check!(status, Native.options_last_error(options))
    end

    def header_names(names)
      unless names.respond_to?(:each) && !names.is_a?(String) && !names.is_a?(Hash)
        raise ArgumentError, "excluded_headers must be an Array of header names, got #{names.class}"
      end

      names.map do |name|
        unless (name.is_a?(String) || name.is_a?(Symbol)) && !name.empty?
          raise ArgumentError, "excluded_headers must contain non-empty header names, got #{name.inspect}"
        end

        name.to_s
      end
    end
  end
end
