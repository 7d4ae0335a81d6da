# frozen_string_literal: true

require "logger"

module Monlight
  class << self
    # The Logger that receives monlight's warnings: failed deliveries,
    # rejected metrics, dropped data. Any object with Logger#add works, and
    # nil silences monlight.
    attr_writer :logger

    # The Logger in use; by default a standard Logger writing to $stderr.
    def logger
      return @logger if defined?(@logger)

      @logger = ::Logger.new($stderr)
    end
  end

  # Carries the engine's log lines to Monlight.logger.
  #
  # The engine logs from its own threads, where no Ruby code may run, so its
  # lines wait in a bounded queue inside the extension (Native::LOG_QUEUE_MAX
  # lines, then new ones are dropped and counted). The queue is drained:
  #
  # - by a watcher thread, "monlight-log", which waits without the GVL and
  #   wakes as soon as a line is queued. Each process starts its own with
  #   its first client, and a forked child restarts it on its first call.
  # - at the end of every public call, so that a warning caused by the call
  #   (a NaN metric, say) is logged before the call returns.
  # - at exit, after the last delivery.
  #
  # @api private
  module Log
    SEVERITIES = {
      Native::LOG_DEBUG => ::Logger::DEBUG,
      Native::LOG_INFO => ::Logger::INFO,
      Native::LOG_WARNING => ::Logger::WARN,
      Native::LOG_ERROR => ::Logger::ERROR
    }.freeze

    PROGNAME = "monlight"

    # Seconds the watcher waits for a line before it checks again; a queued
    # line ends the wait at once.
    WATCH_INTERVAL = 5.0

    # Serialises draining, so that lines reach the logger in order.
    @drain_lock = Mutex.new
    @watcher_lock = Mutex.new
    @watcher = nil

    class << self
      # Drains the queue and makes sure this process has a watcher. Called
      # at the end of every public call.
      def after_call
        start_watcher unless @watcher&.alive?
        drain
      end

      # Writes the queued lines to the logger. With wait: false it returns
      # at once when another thread is draining (that thread, or the
      # watcher, writes the lines), which also keeps a logger that calls
      # back into monlight from deadlocking.
      def drain(wait: false)
        if wait
          @drain_lock.synchronize { write_lines(Native.log_drain) }
        elsif @drain_lock.try_lock
          begin
            write_lines(Native.log_drain)
          ensure
            @drain_lock.unlock
          end
        end
        nil
      end

      # Logs a warning of the Ruby layer itself.
      def warn(message)
        write(::Logger::WARN, message)
      end

      # Logs an exception that monlight's own code raised and rescued so as
      # not to break the application. Such a line starts with "internal
      # error", which the test suite treats as a failure.
      def internal_error(context, exception)
        warn("internal error: #{context}: #{exception.class}: #{exception.message}")
      end

      private

      def start_watcher
        @watcher_lock.synchronize do
          return if @watcher&.alive?

          @watcher = Thread.new { watch }
        end
      end

      def watch
        Thread.current.name = "monlight-log"
        Thread.current.report_on_exception = false
        loop do
          Native.log_wait(WATCH_INTERVAL)
          drain(wait: true)
        end
      end

      def write_lines(lines)
        lines&.each { |level, message| write(SEVERITIES.fetch(level, ::Logger::WARN), message) }
      end

      # A logger that raises must not break the application, so the line
      # goes to $stderr instead, and is lost only if that fails too.
      def write(severity, message)
        Monlight.logger&.add(severity, message, PROGNAME)
      rescue StandardError => e
        begin
          $stderr.write("monlight: the logger raised #{e.class} (#{e.message}); line was: #{message}\n")
        rescue StandardError
          nil
        end
      end
    end
  end

  # Delivers what every client still holds when the process exits normally.
  #
  # Ruby runs at_exit blocks before it frees its objects, and the engine's
  # own atexit() handler would run only after that, so the hook is Ruby's:
  # it is armed by the first client and calls monlight_shutdown_all without
  # the GVL. A client created by a later at_exit block arms it again. exit!,
  # a fatal signal or a crash skip it, and what was buffered is lost.
  #
  # @api private
  module ExitHook
    @armed = false
    @lock = Mutex.new

    class << self
      def arm
        return if @armed

        @lock.synchronize do
          return if @armed

          @armed = true
          at_exit { run }
        end
      end

      private

      def run
        @armed = false
        Native.shutdown_all_at_exit
        Log.drain(wait: true)
      end
    end
  end
end
