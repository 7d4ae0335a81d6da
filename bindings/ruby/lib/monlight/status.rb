# frozen_string_literal: true

module Monlight
  # Raised when a client cannot be created for a reason other than a bad
  # argument, such as libcurl failing to initialise. Reporting and recording
  # never raise it.
  class Error < StandardError
    # The engine's status as a Symbol, such as :transport_failed.
    attr_reader :status

    def initialize(message, status)
      super(message)
      @status = status
    end
  end

  # The one place where engine statuses become Ruby exceptions.
  #
  # @api private
  module Status
    module_function

    # Returns the status name as a lower-case Symbol, such as :timed_out.
    def name(code)
      Native.status_name(code).downcase.to_sym
    end

    # Raises the exception for a failed status, with the engine's message
    # for the call (or the status's default message when there is none).
    # Returns nil for OK.
    def check!(code, message)
      return nil if code == Native::OK

      detail = message.to_s.empty? ? Native.status_message(code) : message.to_s
      case code
      when Native::INVALID_ARGUMENT then raise ArgumentError, detail
      when Native::NO_MEMORY then raise NoMemoryError, "monlight: #{detail}"
      else raise Error.new("monlight: #{detail}", name(code))
      end
    end
  end
end
