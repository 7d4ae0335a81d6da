# frozen_string_literal: true

require_relative "test_helper"

# How engine warnings reach Monlight.logger.
class LogTest < MonlightTest
  # A logger whose every call raises.
  class BrokenLogger < Logger
    def add(*)
      raise IOError, "log device is gone"
    end
  end

  def test_background_warning_reaches_the_logger
    client = error_client
    control(fail_next: 1, status: 500)
    client.report_error(RuntimeError.new("rejected in the background"))

    # No further call into monlight: the watcher thread must log it.
    line = wait_for("the background thread's warning") do
      @log.string.lines.find { |entry| entry.include?("not retried") }
    end
    assert_match(%r{WARN -- monlight: error report: sending to #{Regexp.escape(URL)}/api/errors failed}, line)
    assert_includes line, "500"
  end

  def test_warning_is_logged_before_the_call_returns
    client = metrics_client
    client.gauge("temperature", Float::NAN)

    assert_includes @log.string, %(metric "temperature" rejected)
  end

  def test_nil_logger_silences
    Monlight.logger = nil
    client = metrics_client

    assert_nil client.gauge("temperature", Float::NAN)
    assert_equal "", log_text
  end

  def test_raising_logger_falls_back_to_stderr
    Monlight.logger = BrokenLogger.new(File::NULL)
    client = metrics_client
    captured = StringIO.new
    original = $stderr
    $stderr = captured
    begin
      assert_nil client.gauge("temperature", Float::NAN)
      Monlight::Log.drain(wait: true)
    ensure
      $stderr = original
    end

    assert_includes captured.string, "monlight: the logger raised IOError (log device is gone)"
    assert_includes captured.string, %(metric "temperature" rejected)
  end

  # Clients log through the engine into a queue of Native::LOG_QUEUE_MAX
  # lines. Lines past it are dropped and counted. Each client logs at most
  # 20 warnings a minute, so overflowing the queue takes several clients,
  # driven through Native to keep the Ruby layer from draining in between.
  def test_full_queue_counts_dropped_lines
    options = Monlight::Options.build(strings: { base_url: URL, api_key: API_KEY })
    clients = 15.times.map { Monlight::Native.metrics_client_new(options).fetch(1) }
    clients.each do |client|
      20.times { Monlight::Native.metrics_client_record(client, Monlight::Native::GAUGE, "g", Float::NAN, {}) }
    end

    lines = log_text.lines
    rejected = lines.count { |line| line.include?('metric "g" rejected') }
    dropped_line = lines.find { |line| line.include?("log lines were dropped") }
    dropped = dropped_line ? dropped_line[/(\d+) log lines were dropped/, 1].to_i : 0
    # The watcher may drain between records, so how many are dropped varies;
    # none may be lost without being counted.
    assert_equal 300, rejected + dropped
    assert_operator rejected, :>=, Monlight::Native::LOG_QUEUE_MAX
  end
end
