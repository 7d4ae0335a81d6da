# frozen_string_literal: true

require "monlight"

module Monlight
  # The Rack integration: see Monlight::Rack::Middleware.
  module Rack
  end
end

require "monlight/rack/middleware"
