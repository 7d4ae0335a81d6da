# frozen_string_literal: true

require_relative "test_helper"
require "json"

module Billing
  class ChargeError < StandardError; end
end

# Raise sites at fixed lines, for the grouping tests.
module RaiseSites
  module_function

  def first_site(message)
    raise Billing::ChargeError, message
  end

  def second_site(message)
    raise Billing::ChargeError, message
  end

  def nested_site
    first_site("inner")
  rescue Billing::ChargeError
    raise ArgumentError, "outer"
  end

  FIRST_LINE = instance_method(:first_site).source_location[1] + 1
  SECOND_LINE = instance_method(:second_site).source_location[1] + 1
end

class ErrorClientTest < MonlightTest
  def capture
    yield
    flunk "the block did not raise"
  rescue StandardError => e
    e
  end

  def test_sync_report_sends_every_field
    client = error_client(environment: "staging", excluded_headers: ["X-Session"])
    error = capture { RaiseSites.first_site("card declined") }

    delivered = client.report_error_sync(error, {
      request_url: "http://shop.test/charge?id=7",
      "request_method" => "POST",
      request_headers: { "Authorization" => "Bearer secret", "cookie" => "a=b", "X-Session" => "s1",
                         "Accept" => %w[text/html application/json], "User-Agent" => "test" },
      user_id: 42,
      extra: { order: 7, tags: [:a, "b"], ratio: 0.5 }
    })

    assert_equal true, delivered
    report = stored_errors(@project).fetch(0)
    assert_equal "Billing::ChargeError", report["exception_type"]
    assert_equal "card declined", report["message"]
    assert_equal "http://shop.test/charge?id=7", report["request_url"]
    assert_equal "POST", report["request_method"]
    assert_equal "42", report["user_id"]
    assert_equal({ "order" => 7, "tags" => %w[a b], "ratio" => 0.5 }, report["extra"])
    assert_equal({ "Accept" => "text/html, application/json", "User-Agent" => "test" }, report["request_headers"])
    assert_equal "staging", report["environment"]
  end

  def test_queued_report_arrives
    client = error_client
    error = capture { RaiseSites.first_site("queued") }

    assert_nil client.report_error(error)

    report = wait_for("the queued report") { stored_errors(@project).first }
    assert_equal "queued", report["message"]
  end

  def test_context_that_raises_still_sends_the_report
    client = error_client
    error = capture { RaiseSites.first_site("context breaks") }
    user = Object.new
    def user.to_s = raise("to_s fails")

    assert client.report_error_sync(error, { user_id: user })

    report = stored_errors(@project).first
    assert_equal "context breaks", report["message"]
    assert_nil report["user_id"]
    assert_includes log_text, "sending what can be read"
  end

  def test_traceback_groups_by_raise_line
    client = error_client
    client.report_error_sync(capture { RaiseSites.first_site("one") })
    client.report_error_sync(capture { RaiseSites.first_site("two") })
    client.report_error_sync(capture { RaiseSites.second_site("three") })

    first, again, other = stored_errors(@project)
    assert_equal({ "shape" => "python", "file" => File.expand_path(__FILE__), "line" => RaiseSites::FIRST_LINE.to_s },
                 first["frame"])
    assert_equal first["fingerprint"], again["fingerprint"]
    assert_equal RaiseSites::SECOND_LINE.to_s, other.dig("frame", "line")
    refute_equal first["fingerprint"], other["fingerprint"]
  end

  def test_traceback_is_python_shaped
    client = error_client
    client.report_error_sync(capture { RaiseSites.first_site("shape") })

    lines = stored_errors(@project).fetch(0)["traceback"].lines(chomp: true)
    assert_equal "Traceback (most recent call last):", lines.first
    assert_equal "Billing::ChargeError: shape", lines.last
    assert_equal %(  File "#{File.expand_path(__FILE__)}", line #{RaiseSites::FIRST_LINE}, in first_site), lines[-2]
  end

  def test_library_frames_do_not_group
    client = error_client
    parse_line = __LINE__ + 1
    error = capture { JSON.parse("{not json") }
    client.report_error_sync(error)

    report = stored_errors(@project).fetch(0)
    assert_equal File.expand_path(__FILE__), report.dig("frame", "file")
    assert_equal parse_line.to_s, report.dig("frame", "line")
    assert_match %r{^    from .*/json/common\.rb:\d+:in `parse'$}, report["traceback"]
  end

  def test_cause_is_written_first
    client = error_client
    client.report_error_sync(capture { RaiseSites.nested_site })

    report = stored_errors(@project).fetch(0)
    cause, main = report["traceback"].split("\nThe above exception was the cause of the following exception:\n\n")
    assert_match(/^Billing::ChargeError: inner$/, cause)
    assert_match(/^ArgumentError: outer$/, main)
    assert_equal "ArgumentError", report["exception_type"]
  end

  def test_unraised_exception_uses_call_site
    client = error_client
    report_line = __LINE__ + 1
    client.report_error_sync(RuntimeError.new("never raised"))

    report = stored_errors(@project).fetch(0)
    assert_equal report_line.to_s, report.dig("frame", "line")
    assert_includes report["traceback"], "the exception was not raised"
  end

  def test_anonymous_class_uses_named_ancestor
    client = error_client
    anonymous = Class.new(Billing::ChargeError)
    client.report_error_sync(anonymous.new("anonymous"))

    assert_equal "Billing::ChargeError", stored_errors(@project).fetch(0)["exception_type"]
  end

  def test_extra_with_cycle_and_odd_values
    client = error_client
    cyclic = { "name" => "loop" }
    cyclic["self"] = cyclic
    odd = Object.new
    def odd.to_s = raise("to_s is broken")

    client.report_error_sync(RuntimeError.new("extra"), {
      extra: { cyclic: cyclic, nan: Float::NAN, infinity: -Float::INFINITY, odd: odd,
               binary: "\xFF\xFEok".b, time: Time.utc(2024, 1, 2), 1 => "integer key" }
    })

    extra = stored_errors(@project).fetch(0)["extra"]
    assert_equal({ "name" => "loop", "self" => "[cycle]" }, extra["cyclic"])
    assert_equal "NaN", extra["nan"]
    assert_equal "-Infinity", extra["infinity"]
    assert_match(/\A#<Object:0x\h+>\z/, extra["odd"])
    assert_equal "\uFFFD\uFFFDok", extra["binary"]
    assert_equal "2024-01-02 00:00:00 UTC", extra["time"]
    assert_equal "integer key", extra["1"]
  end

  def test_non_utf8_message_is_converted
    client = error_client
    message = "caf\xE9".dup.force_encoding(Encoding::ISO_8859_1)
    client.report_error_sync(RuntimeError.new(message))

    assert_equal "café", stored_errors(@project).fetch(0)["message"]
  end

  def test_server_down_logs_and_returns_false
    client = error_client(base_url: closed_port_url, timeout: 1.0)

    assert_equal false, client.report_error_sync(RuntimeError.new("unreachable"))
    assert_match(/WARN -- monlight: error report: sending to http:\/\/127\.0\.0\.1:\d+\/api\/errors failed/, log_text)
  end

  def test_wrong_key_logs_and_returns_false
    client = error_client(api_key: "wrong-key")

    assert_equal false, client.report_error_sync(RuntimeError.new("unauthorised"))
    assert_match(/401/, log_text)
    refute_includes log_text, "wrong-key"
    assert_equal 1, client.stats[:failed]
  end

  def test_stats_count_deliveries
    client = error_client
    client.report_error_sync(RuntimeError.new("one"))
    client.report_error(RuntimeError.new("two"))
    wait_for("both reports") { stored_errors(@project).length == 2 }

    stats = wait_for("pending to reach 0") { client.stats.then { |s| s if s[:pending].zero? } }
    assert_equal({ delivered: 2, dropped: 0, retried: 0, failed: 0, pending: 0 }, stats)
  end

  def test_report_after_shutdown_warns_once
    client = error_client
    client.shutdown

    assert_nil client.report_error(RuntimeError.new("late"))
    assert_equal false, client.report_error_sync(RuntimeError.new("later"))
    assert_equal 1, log_text.scan("dropped because the client is shut down").length
  end

  def test_retry_after_503
    client = error_client
    control(fail_next: 1, status: 503)

    assert_equal false, client.report_error_sync(RuntimeError.new("retried"))
    report = wait_for("the background retry", timeout: 8.0) { stored_errors(@project).first }
    assert_equal "retried", report["message"]
    assert_equal 1, client.stats[:retried]
  end

  def test_invalid_arguments_name_the_argument
    cases = {
      "base_url" => -> { Monlight::ErrorClient.new(base_url: "ftp://tracker", api_key: "k") },
      "api_key" => -> { Monlight::ErrorClient.new(base_url: URL, api_key: "") },
      "timeout" => -> { Monlight::ErrorClient.new(base_url: URL, api_key: "k", timeout: 0) },
      "excluded_headers" => -> { Monlight::ErrorClient.new(base_url: URL, api_key: "k", excluded_headers: "x") },
      "project" => -> { Monlight::ErrorClient.new(base_url: URL, api_key: "k", project: 7) }
    }
    cases.each do |argument, create|
      error = assert_raises(ArgumentError, argument) { create.call }
      assert_includes error.message, argument
    end
  end

  def test_report_arguments_are_checked
    client = error_client

    error = assert_raises(ArgumentError) { client.report_error("not an exception") }
    assert_includes error.message, "exception"
    error = assert_raises(ArgumentError) { client.report_error_sync(RuntimeError.new, "/url") }
    assert_includes error.message, "request_context"
  end

  def test_odd_context_values_do_not_raise
    client = error_client

    delivered = client.report_error_sync(RuntimeError.new("odd"), {
      request_headers: "not a hash", request_url: :symbol, user_id: nil, unknown_key: 1
    })

    assert_equal true, delivered
    report = stored_errors(@project).fetch(0)
    assert_equal "symbol", report["request_url"]
    refute report.key?("user_id")
    assert_includes log_text, "request_headers must be a Hash"
  end
end
