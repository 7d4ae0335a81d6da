# frozen_string_literal: true

# Shared setup of the Ruby suite. run-tests.sh starts the contract receiver
# (tests/receiver) and passes its URL in MONLIGHT_TEST_URL; each test files
# its data under a project of its own, so that tests read only their own
# events from the receiver's record.
require "minitest/autorun"
require "json"
require "logger"
require "net/http"
require "socket"
require "stringio"
require "uri"

require "monlight"

module ReceiverHelpers
  URL = ENV.fetch("MONLIGHT_TEST_URL") do
    abort "MONLIGHT_TEST_URL is not set: run the suite with bindings/ruby/run-tests.sh, " \
          "which starts the contract receiver"
  end
  API_KEY = ENV.fetch("MONLIGHT_TEST_API_KEY", "test-key")

  # Every event the receiver recorded, oldest first.
  def receiver_events
    response = Net::HTTP.get_response(URI("#{URL}/__control__/records"))
    raise "GET /__control__/records failed with #{response.code}" unless response.code == "200"

    response.body.each_line.map { |line| JSON.parse(line) }
  end

  # The error reports stored for a project, as the client sent them, with
  # the receiver's fingerprint and grouping frame added.
  def stored_errors(project)
    receiver_events.select { |event| event["kind"] == "error" && event.dig("report", "project") == project }
                   .map { |event| event["report"].merge("fingerprint" => event["fingerprint"], "frame" => event["frame"]) }
  end

  # The metrics stored for a project, in the order they arrived.
  def stored_metrics(project)
    receiver_events.select { |event| event["kind"] == "metrics" }
                   .flat_map { |event| event["metrics"] }
                   .select { |metric| metric["project"] == project }
  end

  # Sets the receiver's fault injection, such as control(fail_next: 1, status: 503).
  def control(settings)
    uri = URI("#{URL}/__control__")
    response = Net::HTTP.post(uri, JSON.generate(settings), "Content-Type" => "application/json")
    raise "control #{settings} was rejected with #{response.code}: #{response.body}" unless response.code == "200"

    JSON.parse(response.body)
  end

  # Calls the block until it returns a true value, and returns that value.
  # Fails the test after timeout seconds.
  def wait_for(description, timeout: 5.0)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      result = yield
      return result if result
      flunk "timed out after #{timeout} s waiting for #{description}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.02
    end
  end

  # A loopback URL where nothing listens.
  def closed_port_url
    server = TCPServer.new("127.0.0.1", 0)
    port = server.addr[1]
    server.close
    "http://127.0.0.1:#{port}"
  end
end

# Base class of the suite: a fresh project name and captured log per test,
# and clients that are shut down when the test ends.
class MonlightTest < Minitest::Test
  include ReceiverHelpers

  def setup
    @project = "#{self.class.name}.#{name}"
    @log = StringIO.new
    Monlight.logger = Logger.new(@log)
    @clients = []
    control(reset: true)
  end

  def teardown
    @clients.each(&:shutdown)
    refute_match(/internal error/, log_text, "monlight rescued an exception of its own code")
  end

  # The log written so far, after draining the engine's queue.
  def log_text
    Monlight::Log.drain(wait: true)
    @log.string
  end

  def error_client(**options)
    client = Monlight::ErrorClient.new(**{ base_url: URL, api_key: API_KEY, project: @project }.merge(options))
    @clients << client
    client
  end

  def metrics_client(**options)
    client = Monlight::MetricsClient.new(**{ base_url: URL, api_key: API_KEY, project: @project }.merge(options))
    @clients << client
    client
  end
end
