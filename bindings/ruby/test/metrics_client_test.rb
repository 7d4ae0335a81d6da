# frozen_string_literal: true

require_relative "test_helper"

class MetricsClientTest < MonlightTest
  TIMESTAMP = /\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\z/.freeze

  def test_each_type_arrives_with_labels_in_order
    client = metrics_client
    client.counter("signups_total", labels: { plan: "pro", region: :eu })
    client.counter("page_views", labels: { "page" => "/home" }, value: 5)
    client.histogram("response_time_ms", 42.5, labels: { endpoint: "/api/users" })
    client.gauge("active_connections", 15)

    assert_equal true, client.flush
    counter, views, histogram, gauge = stored_metrics(@project)
    assert_equal({ "name" => "signups_total", "type" => "counter", "value" => 1,
                   "labels" => { "plan" => "pro", "region" => "eu" } }, counter.slice("name", "type", "value", "labels"))
    assert_equal %w[plan region], counter["labels"].keys
    assert_equal 5, views["value"]
    assert_equal({ "name" => "response_time_ms", "type" => "histogram", "value" => 42.5 },
                 histogram.slice("name", "type", "value"))
    assert_equal "gauge", gauge["type"]
    refute gauge.key?("labels")
    assert_match TIMESTAMP, gauge["timestamp"]
  end

  def test_nan_is_dropped_with_a_warning
    client = metrics_client
    client.gauge("queue_depth", 3)
    assert_nil client.gauge("queue_depth", Float::NAN)
    client.histogram("latency", Float::INFINITY)
    client.gauge("queue_depth", 4)

    assert_includes log_text, %(metric "queue_depth" rejected: value is not a finite number)
    assert_equal true, client.flush
    assert_equal [3, 4], stored_metrics(@project).map { |metric| metric["value"] }
    assert_equal 2, client.stats[:dropped]
  end

  def test_background_thread_flushes
    client = metrics_client(flush_interval: 0.2)
    client.start
    client.start
    client.counter("ticks")

    metric = wait_for("the background flush", timeout: 3.0) { stored_metrics(@project).first }
    assert_equal "ticks", metric["name"]
  end

  def test_flush_releases_the_gvl
    client = metrics_client(timeout: 5.0)
    client.counter("slow")
    control(delay: 1.0)
    ticks = 0
    ticker = Thread.new do
      loop do
        ticks += 1
        sleep 0.01
      end
    end
    sleep 0.05 # lets the ticker start

    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    before = ticks
    assert_equal true, client.flush
    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    during = ticks - before
    ticker.kill.join

    assert_operator elapsed, :>=, 0.9, "the receiver's delay did not apply"
    # 100 ticks a second when the GVL is free; 0 or 1 if flush held it.
    assert_operator during, :>=, 30, "another thread ran only #{during} times during a #{elapsed.round(2)} s flush"
  end

  def test_server_down_logs_and_keeps_the_batch
    client = metrics_client(base_url: closed_port_url, timeout: 1.0)
    client.counter("lost")

    assert_equal false, client.flush
    assert_match(/metrics: sending 1 metrics to http:\/\/127\.0\.0\.1:\d+\/api\/metrics failed/, log_text)
    assert_equal 1, client.stats[:pending]
  end

  def test_wrong_key_logs_and_counts_failed
    client = metrics_client(api_key: "wrong-key")
    client.counter("unauthorised")

    assert_equal false, client.flush
    assert_match(/401/, log_text)
    refute_includes log_text, "wrong-key"
    assert_equal 1, client.stats[:failed]
  end

  def test_retryable_failure_is_sent_once_later
    client = metrics_client
    client.counter("retried")
    control(fail_next: 1, status: 503)

    assert_equal false, client.flush
    assert_equal 1, client.stats[:pending]
    assert_equal true, client.flush
    assert_equal ["retried"], stored_metrics(@project).map { |metric| metric["name"] }
  end

  def test_stats_count_deliveries
    client = metrics_client
    3.times { client.counter("events") }
    assert_equal 3, client.stats[:pending]
    client.flush

    assert_equal({ delivered: 3, dropped: 0, retried: 0, failed: 0, pending: 0 }, client.stats)
  end

  def test_shutdown_flushes_and_then_warns
    client = metrics_client
    client.counter("before_shutdown")
    client.shutdown

    assert_equal ["before_shutdown"], stored_metrics(@project).map { |metric| metric["name"] }
    assert_nil client.counter("after_shutdown")
    client.counter("after_shutdown")
    assert_equal 1, log_text.scan("dropped because the client is shut down").length
  end

  def test_invalid_arguments_name_the_argument
    client = metrics_client
    cases = {
      "name" => -> { client.counter(7) },
      "labels" => -> { client.counter("c", labels: [%w[a b]]) },
      "labels could not be converted" => lambda {
        unprintable = Object.new
        def unprintable.to_s = raise("to_s fails")
        client.counter("c", labels: { "k" => unprintable })
      },
      "value" => -> { client.gauge("g", "12") },
      "flush_interval" => -> { Monlight::MetricsClient.new(base_url: URL, api_key: "k", flush_interval: 0) },
      "timeout" => -> { Monlight::MetricsClient.new(base_url: URL, api_key: "k", timeout: Float::NAN) },
      "base_url" => -> { Monlight::MetricsClient.new(base_url: nil, api_key: "k") }
    }
    cases.each do |argument, call|
      error = assert_raises(ArgumentError, argument) { call.call }
      assert_includes error.message, argument
    end
  end

  def test_concurrent_recording
    client = metrics_client
    threads = 4.times.map do |thread|
      Thread.new { 250.times { client.counter("concurrent", labels: { thread: thread.to_s }) } }
    end
    threads.each(&:join)

    assert_equal true, client.flush
    assert_equal 1000, stored_metrics(@project).length
  end
end
