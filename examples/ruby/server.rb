# frozen_string_literal: true

# Serves config.ru with WEBrick on 127.0.0.1 and a free port, and writes
# the port to the file named by the first argument once it listens. On
# SIGTERM or SIGINT it stops, shuts the monlight clients down (delivering
# what they still buffer) and prints their stats. Exits 1 when a client
# failed to deliver or dropped anything.
require "rack"
require "webrick"

port_file = ARGV.fetch(0) { abort "usage: ruby server.rb PORT_FILE" }
app, = Rack::Builder.parse_file(File.expand_path("config.ru", __dir__))

server = nil
%w[TERM INT].each { |signal| trap(signal) { server&.shutdown } }

# The app's errors reach WEBrick on purpose (the middleware raises them
# again after reporting), so WEBrick's own error log is silenced.
Rack::Handler::WEBrick.run(app, Host: "127.0.0.1", Port: 0, AccessLog: [],
                                Logger: WEBrick::Log.new($stderr, WEBrick::Log::FATAL)) do |started|
  server = started
  File.write("#{port_file}.tmp", "#{started.listeners.first.addr[1]}\n")
  File.rename("#{port_file}.tmp", port_file)
end

clients = { "errors" => Demo::ERRORS, "metrics" => Demo::METRICS }.compact
clients.each_value(&:shutdown)

problems = []
clients.each do |name, client|
  stats = client.stats
  puts "ruby demo: #{name} client: #{stats.map { |key, value| "#{key} #{value}" }.join(', ')}"
  problems << "#{name}: nothing delivered" if stats[:delivered].zero?
  %i[dropped failed pending].each do |counter|
    problems << "#{name}: #{stats[counter]} #{counter}" if stats[counter].positive?
  end
end
problems.each { |problem| warn "ruby demo: #{problem}" }
exit(problems.empty? ? 0 : 1)
