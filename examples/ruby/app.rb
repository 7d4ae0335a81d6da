# frozen_string_literal: true

# A small shop API, instrumented by monlight: every request is counted and
# timed by Monlight::Rack::Middleware, and an unhandled exception is
# reported to the error tracker. config.ru mounts it; demo.sh drives it.
#
# Configuration comes from the environment: MONLIGHT_ERROR_URL,
# MONLIGHT_METRICS_URL, MONLIGHT_API_KEY and MONLIGHT_PROJECT. A service
# whose URL is unset is left out, and the middleware then does nothing for it.
require "json"
require "sinatra/base"
require "monlight/rack"

module Demo
  class PaymentDeclined < StandardError; end

  # The nested calls behind POST /checkout: the error is raised two calls
  # deep, and the error tracker groups it by that raise line.
  module Payments
    module_function

    def charge(order_id, amount)
      authorise(order_id, amount)
    end

    def authorise(order_id, amount)
      raise PaymentDeclined, "card declined for order #{order_id} (#{amount} EUR)" if amount > 100

      "auth-#{order_id}"
    end
  end

  project = ENV.fetch("MONLIGHT_PROJECT", "monlight-demo")
  api_key = ENV.fetch("MONLIGHT_API_KEY", "")

  ERRORS = if ENV["MONLIGHT_ERROR_URL"]
             Monlight::ErrorClient.new(base_url: ENV["MONLIGHT_ERROR_URL"], api_key: api_key, project: project)
           end
  METRICS = if ENV["MONLIGHT_METRICS_URL"]
              Monlight::MetricsClient.new(base_url: ENV["MONLIGHT_METRICS_URL"], api_key: api_key,
                                          project: project, flush_interval: 2.0).tap(&:start)
            end

  class Shop < Sinatra::Base
    # Errors go through the middleware, which reports them and raises them
    # again, so that the server responds with a 500.
    set :raise_errors, true
    set :show_exceptions, false
    set :logging, false

    get "/" do
      content_type :json
      JSON.generate(status: "ok")
    end

    get "/orders/:id" do
      content_type :json
      JSON.generate(id: params[:id].to_i, items: 2)
    end

    post "/orders" do
      METRICS&.counter("orders_created_total", labels: { channel: "web" })
      status 201
      content_type :json
      JSON.generate(id: 3)
    end

    post "/checkout/:order_id" do
      amount = Integer(params.fetch("amount", "10"))
      METRICS&.histogram("checkout_amount_eur", amount)
      content_type :json
      JSON.generate(authorisation: Payments.charge(params[:order_id], amount))
    end
  end
end
