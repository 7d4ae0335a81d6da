# frozen_string_literal: true

module Monlight
  # Reports exceptions to a monlight error tracker.
  #
  #   client = Monlight::ErrorClient.new(base_url: "http://localhost:5010", api_key: key,
  #                                      project: "my-app")
  #   begin
  #     work
  #   rescue => e
  #     client.report_error(e, { request_url: "/users/42", user_id: 42 })
  #   end
  #
  # Reporting never raises into the application (only a wrong argument type
  # raises ArgumentError) and never waits longer than `timeout`: a failed
  # delivery becomes a warning on Monlight.logger. The headers Authorization,
  # Cookie, Set-Cookie and X-API-Key, and those of `excluded_headers`, are
  # removed before a report leaves the process.
  #
  # A client may be shared by every thread. It is shut down when the process
  # exits normally, delivering what is still queued within a few seconds.
  class ErrorClient
    # Creates a client. Raises ArgumentError naming the argument when one is
    # invalid (a base_url that is not http:// or https://, an empty api_key,
    # a timeout that is not a positive number, ...).
    #
    # - project: the project errors are filed under.
    # - environment: sent with each report.
    # - timeout: seconds one delivery may take.
    # - excluded_headers: more header names to remove, in any case.
    def initialize(base_url:, api_key:, project: "default", environment: "prod", timeout: 5.0,
                   excluded_headers: [])
      options = Options.build(
        strings: { base_url: base_url, api_key: api_key, project: project, environment: environment },
        numbers: { timeout: timeout },
        excluded_headers: excluded_headers
      )
      status, @handle = Native.error_client_new(options)
      Status.check!(status, Native.options_last_error(options))
      @warned_shut_down = false
      ExitHook.arm
    ensure
      Log.after_call
    end

    # Queues a report of exception and returns nil at once; a background
    # thread delivers it, retrying while the tracker is unreachable or
    # rate limiting. request_context may carry:
    #
    # - request_url, request_method: Strings.
    # - request_headers: a Hash of header name => value.
    # - user_id: sent as a String.
    # - extra: a Hash, sent as a JSON object (see Monlight::JSONSafe for how
    #   values JSON cannot represent are written).
    #
    # Raises ArgumentError when exception is not an Exception or
    # request_context not a Hash; other problems are logged.
    def report_error(exception, request_context = {})
      report = build_report(exception, request_context, caller_locations(1))
      return nil unless report

      status = Native.error_client_enqueue(@handle, report)
      warn_shut_down if status == Native::SHUT_DOWN
      nil
    ensure
      Native.report_release(report) if report
      Log.after_call
    end

    # Sends a report of exception from the calling thread and waits for the
    # tracker's response, at most `timeout` seconds, while other Ruby
    # threads run. Returns true when the tracker stored the report, false
    # otherwise. After a failure where nothing reached the tracker (refused
    # connection, 429, 503) the report is also retried in the background.
    # Raises ArgumentError like report_error.
    def report_error_sync(exception, request_context = {})
      report = build_report(exception, request_context, caller_locations(1))
      return false unless report

      status = Native.error_client_send(@handle, report)
      warn_shut_down if status == Native::SHUT_DOWN
      status == Native::OK
    ensure
      Native.report_release(report) if report
      Log.after_call
    end

    # Delivers the queued reports, waiting at most the exit deadline (3 s),
    # and stops the background thread. Later reports are dropped with a
    # warning. Calling it again does nothing.
    def shutdown
      Native.error_client_shutdown(@handle)
      nil
    ensure
      Log.after_call
    end

    # Returns the client's counters: reports delivered, dropped (queue full,
    # or left at the exit deadline), retried (repeated attempts), failed
    # (rejected by the tracker) and pending (queued or in flight).
    def stats
      {
        delivered: Native.error_client_stat(@handle, Native::STAT_DELIVERED),
        dropped: Native.error_client_stat(@handle, Native::STAT_DROPPED),
        retried: Native.error_client_stat(@handle, Native::STAT_RETRIED),
        failed: Native.error_client_stat(@handle, Native::STAT_FAILED),
        pending: Native.error_client_stat(@handle, Native::STAT_PENDING)
      }
    end

    private

    # Returns the engine report, or nil after logging why none could be
    # built. fallback_locations stand in for the backtrace of an exception
    # that was never raised.
    def build_report(exception, request_context, fallback_locations)
      unless exception.is_a?(Exception)
        raise ArgumentError, "exception must be an Exception, got #{exception.class}"
      end
      unless request_context.is_a?(Hash)
        raise ArgumentError, "request_context must be a Hash, got #{request_context.class}"
      end

      # A context value or an exception method that raises costs what it
      # touched, not the report: the report is built again without the
      # request context, then with only the class name.
      fill_report(exception, request_context, fallback_locations) ||
        (request_context.empty? ? nil : fill_report(exception, {}, fallback_locations)) ||
        minimal_report(exception)
    end

    def minimal_report(exception)
      report = Native.report_new
      return nil unless report

      set(report, Native::FIELD_EXCEPTION_TYPE, exception.class.name || "Exception")
      set(report, Native::FIELD_MESSAGE, "(the exception's message could not be read)")
      report
    rescue StandardError => e
      Native.report_release(report) if report
      Log.internal_error("error report: even a minimal report of #{exception.class} failed", e)
      nil
    end

    def fill_report(exception, request_context, fallback_locations)
      report = Native.report_new
      raise NoMemoryError, "monlight: out of memory while creating a report" unless report

      set(report, Native::FIELD_EXCEPTION_TYPE, Traceback.type_name(exception))
      set(report, Native::FIELD_MESSAGE, Traceback.message_of(exception))
      set(report, Native::FIELD_TRACEBACK, Traceback.format(exception, fallback_locations))
      add_context(report, request_context)
      report
    rescue StandardError => e
      # Most often an application object whose to_s or message raises;
      # build_report tries again with less.
      Native.report_release(report) if report
      Log.warn("error report: building the report of #{exception.class} failed " \
               "(#{e.class}: #{e.message}); sending what can be read")
      nil
    end

    def add_context(report, context)
      url = context_value(context, :request_url)
      set(report, Native::FIELD_REQUEST_URL, url) unless url.nil?
      method = context_value(context, :request_method)
      set(report, Native::FIELD_REQUEST_METHOD, method) unless method.nil?
      user_id = context_value(context, :user_id)
      set(report, Native::FIELD_USER_ID, user_id) unless user_id.nil?
      extra = context_value(context, :extra)
      set(report, Native::FIELD_EXTRA_JSON, JSONSafe.generate(extra)) unless extra.nil?

      headers = context_value(context, :request_headers)
      return if headers.nil?

      unless headers.respond_to?(:each_pair)
        Log.warn("error report: request_headers must be a Hash, got #{headers.class}; headers not sent")
        return
      end
      headers.each_pair do |name, value|
        value = value.join(", ") if value.is_a?(Array)
        Native.report_add_header(report, Text.utf8(name), Text.utf8(value))
      end
    end

    def context_value(context, key)
      context.key?(key) ? context[key] : context[key.to_s]
    end

    def set(report, field, value)
      Native.report_set(report, field, Text.utf8(value))
    end

    # Warns, once per client, that a report came after #shutdown.
    def warn_shut_down
      return if @warned_shut_down

      @warned_shut_down = true
      Log.warn("error report: dropped because the client is shut down " \
               "(later reports after shutdown are not logged)")
    end
  end
end
