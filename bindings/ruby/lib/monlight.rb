# frozen_string_literal: true

# monlight reports application errors to a monlight error tracker and
# metrics to a monlight metrics collector. The work is done by the monlight
# C engine, compiled into the Monlight::Native extension; the classes here
# are its Ruby interface:
#
#   errors = Monlight::ErrorClient.new(base_url: "http://localhost:5010", api_key: key)
#   errors.report_error(exception, { request_url: "/users/42" })
#
#   metrics = Monlight::MetricsClient.new(base_url: "http://localhost:5012", api_key: key)
#   metrics.start
#   metrics.counter("signups_total", labels: { plan: "pro" })
#
# Monlight::Rack::Middleware (require "monlight/rack") instruments a Rack app.
require "monlight/version"
require "monlight/native"
require "monlight/status"
require "monlight/log"
require "monlight/options"
require "monlight/text"
require "monlight/json_safe"
require "monlight/traceback"
require "monlight/error_client"
require "monlight/metrics_client"

module Monlight
  autoload :Rack, "monlight/rack"

  # The version of the engine compiled into the extension.
  ENGINE_VERSION = Native.version
end
