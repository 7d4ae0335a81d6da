# frozen_string_literal: true

module Monlight
  # The gem's version, which is also the version of the engine compiled into
  # it (Monlight::Native.version).
  VERSION = "0.1.0"
end
