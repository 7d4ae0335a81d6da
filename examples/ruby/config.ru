# frozen_string_literal: true

# rackup examples/ruby/config.ru (with MONLIGHT_* set, see app.rb)
require_relative "app"

use Monlight::Rack::Middleware, metrics_client: Demo::METRICS, error_client: Demo::ERRORS
run Demo::Shop
