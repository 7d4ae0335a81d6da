# frozen_string_literal: true

module Monlight
  # Text conversion shared by the report and JSON code.
  #
  # @api private
  module Text
    module_function

    # Returns value.to_s as valid UTF-8: text in another encoding is
    # transcoded, and bytes that are not valid UTF-8 become U+FFFD. Never
    # raises for a String; other objects must have a to_s that does not.
    def utf8(value)
      string = value.to_s
      string = string.dup.force_encoding(Encoding::UTF_8) if string.encoding == Encoding::BINARY
      if string.encoding != Encoding::UTF_8
        string = string.encode(Encoding::UTF_8, invalid: :replace, undef: :replace)
      end
      string.valid_encoding? ? string : string.scrub
    rescue EncodingError
      string.b.force_encoding(Encoding::UTF_8).scrub
    end
  end
end
