# frozen_string_literal: true

require "rbconfig"

require "monlight/text"

module Monlight
  # Writes a Ruby exception as a traceback that the error tracker can group.
  #
  # The tracker fingerprints an error by the file and line of the last frame
  # of the form `File "PATH", line N`, as in a Python traceback. So frames
  # are written in that form, outermost first, with the deepest frame of the
  # application last:
  #
  #   Traceback (most recent call last):
  #     File "/app/config.ru", line 12, in block in <main>
  #     File "/app/app.rb", line 42, in load_user
  #       from /usr/lib/ruby/3.1.0/json/common.rb:216:in `parse'
  #   JSON::ParserError: unexpected token
  #
  # Frames deeper than the application's deepest, in gems or the standard
  # library, keep Ruby's own `from` form, which the tracker does not match:
  # they are shown but do not decide the group. An exception raised with no
  # application frame at all is grouped by its deepest frame. Causes come
  # first, each as its own traceback, as Python prints them.
  #
  # @api private
  module Traceback
    # Frames kept per exception: the deepest ones, since those group it.
    MAX_FRAMES = 200
    # Causes written before the exception itself.
    MAX_CAUSES = 10

    CAUSE_SEPARATOR = "\nThe above exception was the cause of the following exception:\n\n"

    # One frame: absolute path when known, line number and method label.
    Frame = Struct.new(:path, :line, :label)

    # Paths of the standard library, installed gems and monlight itself.
    LIBRARY_PREFIXES = [
      *RbConfig::CONFIG.values_at("rubylibprefix", "rubylibdir", "rubyarchdir", "vendordir",
                                  "sitedir"),
      *(defined?(Gem) ? [*Gem.path, Gem.default_dir] : []),
      File.expand_path("..", __dir__)
    ].compact.reject(&:empty?).map { |dir| File.join(File.expand_path(dir), "") }.uniq.freeze

    # `path:line:in 'label'` or `path:line:in `label'`, as in Exception#backtrace.
    BACKTRACE_LINE = /\A(?<path>.+?):(?<line>\d+)(?::in [`'](?<label>.*)')?\z/.freeze

    module_function

    # Returns the traceback text of exception. fallback_locations are used
    # for an exception that was never raised and so has no backtrace.
    def format(exception, fallback_locations = [])
      chain = cause_chain(exception)
      parts = chain.reverse.map.with_index do |error, index|
        own = index == chain.length - 1
        frames = frames_of(error)
        note = nil
        if frames.empty? && own && !fallback_locations.empty?
          frames = fallback_locations.map { |location| frame_of_location(location) }
          note = "  (the exception was not raised, so these are the frames of the report call)\n"
        end
        "Traceback (most recent call last):\n#{note}#{format_frames(frames)}#{exception_line(error)}\n"
      end
      parts.join(CAUSE_SEPARATOR)
    end

    # Returns exception followed by its causes, stopping at a repeat.
    def cause_chain(exception)
      chain = [exception]
      seen = { exception => true }.compare_by_identity
      while chain.length <= MAX_CAUSES
        cause = chain.last.cause
        break if cause.nil? || seen.key?(cause)

        seen[cause] = true
        chain << cause
      end
      chain
    end

    # Returns the frames of a raised exception, deepest first as Ruby lists
    # them.
    def frames_of(exception)
      locations = exception.backtrace_locations
      return locations.map { |location| frame_of_location(location) } if locations

      (exception.backtrace || []).map { |line| frame_of_line(line.to_s) }
    end

    def frame_of_location(location)
      Frame.new(location.absolute_path || location.path, location.lineno, location.label)
    end

    def frame_of_line(line)
      match = BACKTRACE_LINE.match(line)
      return Frame.new(line, 0, nil) unless match

      Frame.new(match[:path], match[:line].to_i, match[:label])
    end

    # Writes deepest-first frames outermost first, the deepest application
    # frame as the last one in Python form.
    def format_frames(frames)
      omitted = frames.length > MAX_FRAMES ? frames.length - MAX_FRAMES : 0
      frames = frames.first(MAX_FRAMES)
      deepest_app = frames.index { |frame| !library?(frame.path) } || 0

      text = +""
      text << "  ... #{omitted} outer frames omitted ...\n" if omitted.positive?
      frames[deepest_app..].reverse_each { |frame| text << python_frame(frame) }
      frames[0...deepest_app].reverse_each { |frame| text << ruby_frame(frame) }
      text
    end

    def python_frame(frame)
      # The tracker reads the path up to the next double quote.
      path = Text.utf8(frame.path).tr("\"\n", "'?")
      "  File \"#{path}\", line #{frame.line}, in #{Text.utf8(frame.label || '<unknown>')}\n"
    end

    def ruby_frame(frame)
      label = frame.label ? ":in `#{Text.utf8(frame.label)}'" : ""
      "    from #{Text.utf8(frame.path)}:#{frame.line}#{label}\n"
    end

    def library?(path)
      path = path.to_s
      path.start_with?("<internal:") || LIBRARY_PREFIXES.any? { |prefix| path.start_with?(prefix) }
    end

    # `Class::Name: message`, the last line of each traceback.
    def exception_line(exception)
      "#{Text.utf8(type_name(exception))}: #{message_of(exception)}"
    end

    # Returns the class name, or for an anonymous class the name of its
    # nearest named ancestor, which stays the same from run to run.
    def type_name(exception)
      klass = exception.class
      klass.name || klass.ancestors.find { |ancestor| ancestor.is_a?(Class) && ancestor.name }&.name || "Exception"
    end

    def message_of(exception)
      Text.utf8(exception.message)
    rescue StandardError => e
      "(the exception's message raised #{e.class})"
    end
  end
end
