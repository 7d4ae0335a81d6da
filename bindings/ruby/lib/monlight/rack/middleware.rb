# frozen_string_literal: true

module Monlight
  module Rack
    # Rack middleware that records request metrics and reports exceptions.
    #
    # For every request it records, with labels method, endpoint and status
    # in that order:
    #
    # - http_requests_total, a counter;
    # - http_request_duration_seconds, a histogram of the seconds the app
    #   took to return its response (streaming the body is not included).
    #
    # endpoint is the route template, never the raw path, so that label
    # values stay few: Sinatra's env["sinatra.route"] without its verb,
    # Rails' env["action_dispatch.route_uri_pattern"] (Rails 7.1 and later)
    # without "(.:format)", or what the `endpoint:` callable returns. A
    # request without a template gets UNMATCHED.
    #
    # An exception raised by the app is reported with the request's URL,
    # method and headers (the error client removes the private ones), then
    # raised again for the server or an outer middleware to handle. An
    # exception that a framework rescued and left in the env
    # (rack.exception, sinatra.error, action_dispatch.exception) is
    # reported too when the response status is 500 or more.
    #
    # Mount it first, so that it times the whole stack and catches what
    # other middleware raise:
    #
    #   use Monlight::Rack::Middleware, metrics_client: metrics, error_client: errors
    #
    # Either client may be nil; with neither it passes requests through
    # untouched. Its own failures are logged and never break a request.
    class Middleware
      UNMATCHED = "<unmatched>"

      # Env keys where frameworks leave an exception they rescued.
      RESCUED_EXCEPTION_KEYS = %w[rack.exception sinatra.error action_dispatch.exception].freeze

      # - metrics_client: a Monlight::MetricsClient, or nil.
      # - error_client: a Monlight::ErrorClient, or nil.
      # - endpoint: optional callable(env) returning the route template, or
      #   nil to fall back to the framework's.
      # - context: optional callable(env) returning more request_context for
      #   error reports, such as { user_id: ..., extra: {...} }.
      def initialize(app, metrics_client: nil, error_client: nil, endpoint: nil, context: nil)
        @app = app
        @metrics_client = metrics_client
        @error_client = error_client
        @endpoint = endpoint
        @context = context
      end

      def call(env)
        return @app.call(env) if @metrics_client.nil? && @error_client.nil?

        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        status = 500
        begin
          response = @app.call(env)
          status = response[0].to_i
          report_rescued(env) if status >= 500
          response
        rescue StandardError, ScriptError => e
          report(env, e)
          raise
        ensure
          record(env, status, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
        end
      end

      private

      def record(env, status, seconds)
        return if @metrics_client.nil?

        labels = { "method" => env["REQUEST_METHOD"].to_s, "endpoint" => endpoint(env), "status" => status.to_s }
        @metrics_client.counter("http_requests_total", labels: labels)
        @metrics_client.histogram("http_request_duration_seconds", seconds, labels: labels)
      rescue StandardError => e
        Log.internal_error("rack: recording the metrics of a request failed", e)
      end

      def endpoint(env)
        template = @endpoint&.call(env) || framework_route(env)
        template.nil? || template.to_s.empty? ? UNMATCHED : template.to_s
      rescue StandardError => e
        Log.warn("rack: the endpoint callable raised #{e.class}: #{e.message}; using #{UNMATCHED}")
        UNMATCHED
      end

      def framework_route(env)
        if (route = env["sinatra.route"])
          route.to_s.split(" ", 2).last # "GET /users/:id"
        elsif (pattern = env["action_dispatch.route_uri_pattern"])
          pattern.to_s.delete_suffix("(.:format)")
        end
      end

      def report_rescued(env)
        exception = RESCUED_EXCEPTION_KEYS.lazy.map { |key| env[key] }.find { |value| value.is_a?(Exception) }
        report(env, exception) if exception
      end

      def report(env, exception)
        return if @error_client.nil?

        @error_client.report_error(exception, request_context(env))
      rescue StandardError => e
        Log.internal_error("rack: reporting #{exception.class} failed", e)
      end

      def request_context(env)
        context = {
          request_url: request_url(env),
          request_method: env["REQUEST_METHOD"].to_s,
          request_headers: request_headers(env)
        }
        extra = extra_context(env)
        extra ? context.merge(extra.transform_keys { |key| key.respond_to?(:to_sym) ? key.to_sym : key }) : context
      end

      def extra_context(env)
        extra = @context&.call(env)
        return extra if extra.nil? || extra.is_a?(Hash)

        Log.warn("rack: the context callable returned #{extra.class}, not a Hash; ignored")
        nil
      rescue StandardError => e
        Log.warn("rack: the context callable raised #{e.class}: #{e.message}; ignored")
        nil
      end

      # Rebuilds the URL the client requested, as Rack::Request#url does.
      def request_url(env)
        scheme = env["rack.url_scheme"] || "http"
        host = env["HTTP_HOST"] || server_authority(env, scheme)
        query = env["QUERY_STRING"].to_s
        "#{scheme}://#{host}#{env['SCRIPT_NAME']}#{env['PATH_INFO']}#{query.empty? ? '' : "?#{query}"}"
      end

      def server_authority(env, scheme)
        port = env["SERVER_PORT"].to_s
        default = (scheme == "https" && port == "443") || (scheme == "http" && port == "80")
        default || port.empty? ? env["SERVER_NAME"].to_s : "#{env['SERVER_NAME']}:#{port}"
      end

      # Rack keeps request headers as HTTP_* keys (HTTP_USER_AGENT for
      # User-Agent), except Content-Type and Content-Length. HTTP_VERSION is
      # the protocol version that some servers add, not a header.
      def request_headers(env)
        env.each_with_object({}) do |(key, value), headers|
          next unless key.is_a?(String) && value.is_a?(String)

          name = if key.start_with?("HTTP_") && key != "HTTP_VERSION"
                   key.delete_prefix("HTTP_")
                 elsif key == "CONTENT_TYPE" || key == "CONTENT_LENGTH"
                   key
                 end
          headers[name.split("_").map(&:capitalize).join("-")] = value if name
        end
      end
    end
  end
end
