# frozen_string_literal: true

require_relative "test_helper"
require "rack"
require "rack/lint"
require "rack/mock"
require "sinatra/base"
require "webrick"
require "monlight/rack"

# Raise sites at fixed lines, called from nested methods of the app.
module Checkout
  class PaymentError < StandardError; end

  module_function

  def charge(amount)
    authorise(amount)
  end

  def authorise(amount)
    raise PaymentError, "card declined for #{amount}"
  end

  def refund(amount)
    raise PaymentError, "refund of #{amount} failed"
  end

  AUTHORISE_LINE = instance_method(:authorise).source_location[1] + 1
  REFUND_LINE = instance_method(:refund).source_location[1] + 1
end

# A Sinatra app whose errors reach the middleware.
class ShopApp < Sinatra::Base
  set :environment, :test
  set :raise_errors, true
  set :show_exceptions, false
  set :logging, false

  get("/users/:id") { "user #{params[:id]}" }
  get("/slow") do
    sleep 0.2
    "slow"
  end
  get("/checkout") { Checkout.charge(params.fetch("amount", "10")) }
  get("/refund") { Checkout.refund(params.fetch("amount", "10")) }
end

# The same routes, but Sinatra turns the error into a 500 response itself.
class HandlingShopApp < ShopApp
  set :raise_errors, false
end

class RackMiddlewareTest < MonlightTest
  def stack(app, **options)
    Rack::Lint.new(Monlight::Rack::Middleware.new(Rack::Lint.new(app), **options))
  end

  def request_labels
    stored_metrics(@project).select { |metric| metric["name"] == "http_requests_total" }
                            .map { |metric| metric["labels"] }
  end

  def test_labels_use_the_sinatra_route
    metrics = metrics_client
    app = stack(ShopApp, metrics_client: metrics)

    assert_equal 200, Rack::MockRequest.new(app).get("/users/42").status
    assert_equal 404, Rack::MockRequest.new(app).post("/nowhere").status
    metrics.flush

    assert_equal [{ "method" => "GET", "endpoint" => "/users/:id", "status" => "200" },
                  { "method" => "POST", "endpoint" => "<unmatched>", "status" => "404" }], request_labels
    assert_equal %w[method endpoint status], request_labels.first.keys
  end

  def test_duration_is_in_seconds
    metrics = metrics_client
    Rack::MockRequest.new(stack(ShopApp, metrics_client: metrics)).get("/slow")
    metrics.flush

    duration = stored_metrics(@project).find { |metric| metric["name"] == "http_request_duration_seconds" }
    assert_equal "histogram", duration["type"]
    assert_equal({ "method" => "GET", "endpoint" => "/slow", "status" => "200" }, duration["labels"])
    assert_operator duration["value"], :>=, 0.2
    assert_operator duration["value"], :<, 5
  end

  def test_labels_use_the_rails_route_pattern
    metrics = metrics_client
    rails_like = lambda do |env|
      env["action_dispatch.route_uri_pattern"] = "/orders/:id(.:format)"
      [201, { "content-type" => "text/plain" }, ["created"]]
    end

    Rack::MockRequest.new(stack(rails_like, metrics_client: metrics)).put("/orders/9.json")
    metrics.flush

    assert_equal [{ "method" => "PUT", "endpoint" => "/orders/:id", "status" => "201" }], request_labels
  end

  def test_endpoint_callable_takes_precedence
    metrics = metrics_client
    plain = ->(_env) { [200, { "content-type" => "text/plain" }, ["ok"]] }
    endpoint = ->(env) { env["PATH_INFO"].sub(/\d+/, ":n") }

    Rack::MockRequest.new(stack(plain, metrics_client: metrics, endpoint: endpoint)).get("/items/5")
    metrics.flush

    assert_equal "/items/:n", request_labels.first["endpoint"]
  end

  def test_exception_is_reported_and_raised_again
    errors = error_client
    metrics = metrics_client
    app = stack(ShopApp, metrics_client: metrics, error_client: errors,
                         context: ->(env) { { user_id: env["HTTP_X_USER"], extra: { "cart" => 3 } } })

    raised = assert_raises(Checkout::PaymentError) do
      Rack::MockRequest.new(app).get("/checkout?amount=12", "HTTP_AUTHORIZATION" => "Bearer t",
                                                            "HTTP_COOKIE" => "s=1", "HTTP_X_USER" => "7",
                                                            "HTTP_X_REQUEST_ID" => "abc")
    end
    assert_equal "card declined for 12", raised.message

    report = wait_for("the report") { stored_errors(@project).first }
    assert_equal "Checkout::PaymentError", report["exception_type"]
    assert_equal "http://example.org/checkout?amount=12", report["request_url"]
    assert_equal "GET", report["request_method"]
    assert_equal "abc", report.dig("request_headers", "X-Request-Id")
    refute report["request_headers"].key?("Authorization")
    refute report["request_headers"].key?("Cookie")
    assert_equal "7", report["user_id"]
    assert_equal({ "cart" => 3 }, report["extra"])
    assert_equal Checkout::AUTHORISE_LINE.to_s, report.dig("frame", "line")

    metrics.flush
    assert_equal [{ "method" => "GET", "endpoint" => "/checkout", "status" => "500" }], request_labels
  end

  def test_rescued_exception_is_reported
    errors = error_client
    response = Rack::MockRequest.new(stack(HandlingShopApp, error_client: errors)).get("/refund")

    assert_equal 500, response.status
    report = wait_for("the report") { stored_errors(@project).first }
    assert_equal "refund of 10 failed", report["message"]
  end

  def test_without_clients_passes_through
    response = [200, { "content-type" => "text/plain" }, ["untouched"]]
    app = ->(_env) { response }

    assert_same response, Monlight::Rack::Middleware.new(app).call(Rack::MockRequest.env_for("/"))
  end

  def test_broken_client_does_not_break_the_request
    broken = Object.new
    def broken.counter(*, **) = raise(IOError, "metrics are down")

    response = Rack::MockRequest.new(stack(ShopApp, metrics_client: broken)).get("/users/1")

    assert_equal 200, response.status
    assert_includes log_text, "internal error: rack: recording the metrics of a request failed: IOError"
    @log.truncate(0) # the internal error was the point of this test
  end
end

# The middleware in a real server: Sinatra under WEBrick on loopback.
class RackServerTest < MonlightTest
  def setup
    super
    @errors = error_client
    @metrics = metrics_client
    app = Rack::Lint.new(Monlight::Rack::Middleware.new(ShopApp, metrics_client: @metrics, error_client: @errors))
    started = Queue.new
    @server_thread = Thread.new do
      Rack::Handler::WEBrick.run(app, Host: "127.0.0.1", Port: 0, Logger: WEBrick::Log.new(File::NULL),
                                      AccessLog: []) { |server| started << server }
    end
    @server = started.pop
    @base = "http://127.0.0.1:#{@server.listeners.first.addr[1]}"
  end

  def teardown
    @server&.shutdown
    @server_thread&.join(5)
    super
  end

  def get(path, headers = {})
    uri = URI("#{@base}#{path}")
    Net::HTTP.start(uri.host, uri.port, open_timeout: 5, read_timeout: 10) do |http|
      http.get(uri.request_uri, headers)
    end
  end

  def test_metrics_and_errors_from_a_real_server
    assert_equal "200", get("/users/7").code
    assert_equal "404", get("/missing").code
    assert_equal "500", get("/checkout?amount=1", "Authorization" => "Bearer t", "X-Trace" => "t1").code
    assert_equal "500", get("/checkout?amount=2").code
    assert_equal "500", get("/refund").code

    reports = wait_for("three reports") { stored_errors(@project).then { |all| all if all.length == 3 } }
    first, second, refund = reports.sort_by { |report| report["message"] }
    assert_equal "card declined for 1", first["message"]
    assert_equal "#{@base}/checkout?amount=1", first["request_url"]
    assert_equal "t1", first.dig("request_headers", "X-Trace")
    refute first["request_headers"].key?("Authorization")
    assert_equal({ "shape" => "python", "file" => File.expand_path(__FILE__),
                   "line" => Checkout::AUTHORISE_LINE.to_s }, first["frame"])
    assert_equal first["fingerprint"], second["fingerprint"], "same raise line, same group"
    assert_equal "refund of 10 failed", refund["message"]
    refute_equal first["fingerprint"], refund["fingerprint"], "different raise line, different group"

    @metrics.flush
    labels = stored_metrics(@project).select { |metric| metric["name"] == "http_requests_total" }
                                     .map { |metric| metric["labels"].values_at("method", "endpoint", "status") }
    assert_equal [%w[GET /users/:id 200], %w[GET <unmatched> 404], %w[GET /checkout 500], %w[GET /checkout 500],
                  %w[GET /refund 500]], labels
  end
end
