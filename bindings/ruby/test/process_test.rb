# frozen_string_literal: true

require_relative "test_helper"
require "rbconfig"

# Fork and exit: what each process sends, and that nothing is sent twice.
class ProcessTest < MonlightTest
  CHILD_TIMEOUT = 20.0

  # Waits for a child, killing it after CHILD_TIMEOUT seconds, and returns
  # its Process::Status.
  def wait_child(pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + CHILD_TIMEOUT
    loop do
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status if status

      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        Process.kill(:KILL, pid)
        Process.wait(pid)
        flunk "child #{pid} did not exit within #{CHILD_TIMEOUT} s"
      end
      sleep 0.02
    end
  end

  # Forks after flushing the standard streams, whose buffered output the
  # child would otherwise write a second time when it exits.
  def fork_child(&block)
    $stdout.flush
    $stderr.flush
    Process.fork(&block)
  end

  def metric_names
    stored_metrics(@project).map { |metric| metric["name"] }
  end

  def test_fork_child_sends_only_its_own_metrics
    client = metrics_client
    client.counter("recorded_before_fork")

    pid = fork_child do
      client.counter("recorded_in_child")
      # A normal exit: the exit hook delivers the child's buffer.
    end
    assert wait_child(pid).success?
    assert_equal true, client.flush

    names = metric_names
    assert_equal 1, names.count("recorded_before_fork"), names.inspect
    assert_equal 1, names.count("recorded_in_child"), names.inspect
  end

  def test_fork_restarts_the_flush_thread
    client = metrics_client(flush_interval: 0.2)
    client.start
    client.counter("parent_buffer")

    pid = fork_child do
      client.counter("sent_by_child_thread")
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
      sleep 0.05 until client.stats[:delivered].positive? || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      # exit! skips the exit hook, so only the restarted thread can have sent.
      exit!(client.stats[:delivered] == 1 ? 0 : 1)
    end
    assert wait_child(pid).success?, "the child's flush thread did not deliver its metric"
    client.flush

    names = metric_names
    assert_equal 1, names.count("sent_by_child_thread"), names.inspect
    assert_equal 1, names.count("parent_buffer"), names.inspect
  end

  def test_fork_child_reports_errors
    client = error_client
    client.report_error(RuntimeError.new("queued in the parent"))

    pid = fork_child do
      client.report_error(RuntimeError.new("queued in the child"))
      exit(client.report_error_sync(RuntimeError.new("sent by the child")) ? 0 : 1)
    end
    assert wait_child(pid).success?
    wait_for("three reports") { stored_errors(@project).length >= 3 }

    messages = stored_errors(@project).map { |report| report["message"] }.sort
    assert_equal ["queued in the child", "queued in the parent", "sent by the child"], messages
  end

  def run_ruby(script)
    load_path = ENV.fetch("MONLIGHT_TEST_RUBYLIB").split(":").flat_map { |dir| ["-I", dir] }
    environment = { "MONLIGHT_TEST_URL" => URL, "MONLIGHT_TEST_PROJECT" => @project }
    pid = Process.spawn(environment, RbConfig.ruby, *load_path, "-e", script)
    wait_child(pid)
  end

  def test_exit_without_shutdown_delivers
    # Slow responses make delivery at exit take a while, which only the exit
    # hook waits for: Ruby frees the clients and exits without waiting.
    control(delay: 0.3, delay_next: 2)
    status = run_ruby(<<~RUBY)
      require "monlight"
      url = ENV.fetch("MONLIGHT_TEST_URL")
      project = ENV.fetch("MONLIGHT_TEST_PROJECT")
      metrics = Monlight::MetricsClient.new(base_url: url, api_key: "test-key", project: project)
      metrics.start
      metrics.counter("recorded_before_exit")
      at_exit { metrics.counter("recorded_in_at_exit") }
      errors = Monlight::ErrorClient.new(base_url: url, api_key: "test-key", project: project)
      errors.report_error(RuntimeError.new("queued before exit"))
    RUBY

    assert status.success?
    assert_equal %w[recorded_before_exit recorded_in_at_exit], metric_names.sort
    assert_equal ["queued before exit"], stored_errors(@project).map { |report| report["message"] }
  end

  def test_client_created_at_exit_delivers
    status = run_ruby(<<~RUBY)
      require "monlight"
      at_exit do
        metrics = Monlight::MetricsClient.new(base_url: ENV.fetch("MONLIGHT_TEST_URL"), api_key: "test-key",
                                              project: ENV.fetch("MONLIGHT_TEST_PROJECT"))
        metrics.counter("recorded_by_late_client")
      end
    RUBY

    assert status.success?
    assert_equal ["recorded_by_late_client"], metric_names
  end
end
