# frozen_string_literal: true

module Monlight
  # Records counters, histograms and gauges for a monlight metrics
  # collector.
  #
  #   metrics = Monlight::MetricsClient.new(base_url: "http://localhost:5012", api_key: key)
  #   metrics.start
  #   metrics.counter("signups_total", labels: { plan: "pro" })
  #   metrics.histogram("response_time_ms", 42.5, labels: { endpoint: "/api/users" })
  #   metrics.gauge("active_connections", 15)
  #
  # A record call stamps the metric with the current time (UTC, whole
  # seconds) and appends it to a buffer in the engine. It never waits on
  # the network. The buffer is sent every flush_interval seconds once #start has
  # been called, by #flush, by #shutdown and when the process exits
  # normally. Batches that fail with a retryable error are kept and retried.
  #
  # A metric the collector would reject, with a NaN or infinite value or an
  # empty name or one over 200 bytes, is dropped with a warning on
  # Monlight.logger, and counted in stats[:dropped]. Labels keep the order
  # given, keys and values sent as strings.
  #
  # A client may be shared by every thread. In a forked child it starts
  # empty (the parent sends its own buffer) and its flush thread, when
  # #start had been called, restarts with the child's first metric.
  class MetricsClient
    # Creates a client. Raises ArgumentError naming the argument when one is
    # invalid.
    #
    # - flush_interval: seconds between two sends by the background thread.
    # - timeout: seconds one send may take.
    # - project: sent with every metric when given.
    def initialize(base_url:, api_key:, flush_interval: 10.0, timeout: 5.0, project: nil)
      options = Options.build(
        strings: { base_url: base_url, api_key: api_key, project: project },
        numbers: { flush_interval: flush_interval, timeout: timeout }
      )
      status, @handle = Native.metrics_client_new(options)
      Status.check!(status, Native.options_last_error(options))
      @warned_shut_down = false
      ExitHook.arm
    ensure
      Log.after_call
    end

    # Adds value (default 1) to a counter. Returns nil.
    def counter(name, labels: {}, value: 1)
      record(Native::COUNTER, name, value, labels)
    end

    # Records one observation of a histogram. Returns nil.
    def histogram(name, value, labels: {})
      record(Native::HISTOGRAM, name, value, labels)
    end

    # Records the current value of a gauge. Returns nil.
    def gauge(name, value, labels: {})
      record(Native::GAUGE, name, value, labels)
    end

    # Starts the background thread that sends the buffer every
    # flush_interval seconds. Calling it again does nothing. If the thread
    # cannot be started, a warning is logged and metrics are sent only by
    # #flush, #shutdown and at exit.
    def start
      status = Native.metrics_client_start(@handle)
      warn_shut_down("start() has no effect after shutdown") if status == Native::SHUT_DOWN
      nil
    ensure
      Log.after_call
    end

    # Sends everything buffered now from the calling thread, in batches of
    # at most 1000 metrics. It waits at most `timeout` seconds per batch,
    # while other Ruby threads run. Returns true when every batch was
    # accepted (or nothing was buffered), false otherwise. Batches that
    # failed with a retryable error stay buffered for the next send.
    def flush
      status = Native.metrics_client_flush(@handle)
      warn_shut_down("flush() has no effect after shutdown") if status == Native::SHUT_DOWN
      status == Native::OK
    ensure
      Log.after_call
    end

    # Stops the background thread and sends what is buffered, waiting at
    # most the exit deadline (3 s). Later metrics are dropped with a
    # warning. Calling it again does nothing.
    def shutdown
      Native.metrics_client_shutdown(@handle)
      nil
    ensure
      Log.after_call
    end

    # Returns the client's counters: metrics delivered, dropped (rejected
    # at record time, over the buffer cap, or left at the exit deadline),
    # retried (repeated send attempts), failed (rejected by the collector)
    # and pending (buffered or in flight).
    def stats
      {
        delivered: Native.metrics_client_stat(@handle, Native::STAT_DELIVERED),
        dropped: Native.metrics_client_stat(@handle, Native::STAT_DROPPED),
        retried: Native.metrics_client_stat(@handle, Native::STAT_RETRIED),
        failed: Native.metrics_client_stat(@handle, Native::STAT_FAILED),
        pending: Native.metrics_client_stat(@handle, Native::STAT_PENDING)
      }
    end

    private

    def record(type, name, value, labels)
      status = Native.metrics_client_record(@handle, type, metric_name(name), metric_value(value),
                                            label_strings(labels))
      warn_shut_down("metric #{name.inspect} dropped because the client is shut down") if status == Native::SHUT_DOWN
      nil
    ensure
      Log.after_call
    end

    def metric_name(name)
      return name if name.is_a?(String)
      return name.to_s if name.is_a?(Symbol)

      raise ArgumentError, "name must be a String or Symbol, got #{name.class}"
    end

    # NaN and infinities pass: the engine rejects them with a warning.
    def metric_value(value)
      return value.to_f if value.is_a?(Numeric) && value.real?

      raise ArgumentError, "value must be a real number, got #{value.inspect}"
    end

    # Encodings whose Strings go to the engine as they are; it replaces
    # invalid UTF-8 itself.
    LABEL_ENCODINGS = [Encoding::UTF_8, Encoding::US_ASCII, Encoding::BINARY].freeze

    # Returns labels as the extension takes them, in the same order: keys
    # and values that are Symbols or UTF-8 Strings as they are, anything
    # else converted by to_s into UTF-8.
    def label_strings(labels)
      raise ArgumentError, "labels must be a Hash, got #{labels.class}" unless labels.is_a?(Hash)
      return labels if labels.all? { |key, value| plain_label_text?(key) && plain_label_text?(value) }

      labels.each_with_object({}) { |(key, value), strings| strings[Text.utf8(key)] = Text.utf8(value) }
    rescue ArgumentError
      raise
    rescue StandardError => e
      # A key or value whose own to_s (or a Hash subclass whose each)
      # raises is a bad argument like any other, reported in Ruby's terms.
      raise ArgumentError, "labels could not be converted to Strings (#{e.class}: #{e.message})"
    end

    def plain_label_text?(text)
      text.is_a?(Symbol) || (text.is_a?(String) && LABEL_ENCODINGS.include?(text.encoding))
    end

    # Warns, once per client, that a call came after #shutdown.
    def warn_shut_down(message)
      return if @warned_shut_down

      @warned_shut_down = true
      Log.warn("metrics: #{message} (later calls after shutdown are not logged)")
    end
  end
end
