# frozen_string_literal: true

# Checks a monlight gem installed by run-tests.sh: it must load from the
# GEM_HOME given as the first argument (not from the repository) and
# deliver a report and a metric to the receiver at MONLIGHT_TEST_URL.
# Run without -I and without RUBYLIB; exits non-zero on failure.
require "json"
require "net/http"
require "uri"

gem_home = File.expand_path(ARGV.fetch(0))
url = ENV.fetch("MONLIGHT_TEST_URL")
project = "installed-gem-#{Process.pid}"
failures = []
checks = 0

check = lambda do |description, passed|
  checks += 1
  failures << description unless passed
end

require "monlight"

loaded_from = $LOADED_FEATURES.grep(%r{/monlight/(version\.rb|native\.so)\z})
check.call("monlight loads from #{gem_home}, not #{loaded_from.inspect}",
           !loaded_from.empty? && loaded_from.all? { |path| path.start_with?(gem_home) })

errors = Monlight::ErrorClient.new(base_url: url, api_key: "test-key", project: project)
check.call("report_error_sync returns true", errors.report_error_sync(RuntimeError.new("from the installed gem")))

metrics = Monlight::MetricsClient.new(base_url: url, api_key: "test-key", project: project)
metrics.counter("installed_gem_checks")
check.call("flush returns true", metrics.flush)

events = Net::HTTP.get(URI("#{url}/__control__/records")).each_line.map { |line| JSON.parse(line) }
stored_error = events.any? { |event| event["kind"] == "error" && event.dig("report", "project") == project }
stored_metric = events.any? do |event|
  event["kind"] == "metrics" && event["metrics"].any? { |metric| metric["project"] == project }
end
check.call("the receiver stored the report", stored_error)
check.call("the receiver stored the metric", stored_metric)

failures.each { |description| warn "installed gem check failed: #{description}" }
puts "installed gem: #{checks - failures.length} passed, #{failures.length} failed"
exit(failures.empty? ? 0 : 1)
