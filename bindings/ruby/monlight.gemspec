# frozen_string_literal: true

require_relative "lib/monlight/version"

# Built by build-gem.sh, which stages this directory together with the
# generated SWIG wrapper and a copy of the engine (ext/monlight/vendor), so
# that installing the gem needs a C compiler and the libcurl and cJSON
# development headers, but not SWIG.
Gem::Specification.new do |spec|
  spec.name = "monlight"
  spec.version = Monlight::VERSION
  spec.summary = "Error tracking and metrics for the monlight services, with a Rack middleware"
  spec.description = <<~TEXT
    Reports exceptions to a monlight error tracker and records counters,
    histograms and gauges for a monlight metrics collector. Delivery runs in
    the monlight C engine, compiled into the gem's extension; a Rack
    middleware records request metrics and reports unhandled exceptions.
  TEXT
  spec.authors = ["The monlight developers"]
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir[
    "README.md",
    "lib/**/*.rb",
    "ext/monlight/extconf.rb",
    "ext/monlight/*.{c,h}",
    "ext/monlight/vendor/core/**/*.{c,h}"
  ]
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/monlight/extconf.rb"]
  spec.requirements = ["libcurl and cJSON development files (Debian: libcurl4-openssl-dev libcjson-dev)"]
end
