# frozen_string_literal: true

# Configures the build of monlight/native: the SWIG wrapper, the hand-written
# helpers (monlight_rb.c) and the monlight engine, compiled together into one
# extension that needs nothing of monlight at run time.
#
# Sources come from one of two places:
# - a packaged gem ships the generated wrapper (monlight_wrap.c) and a copy of
#   the engine (vendor/core), so installing it needs no SWIG;
# - in the repository, SWIG generates the wrapper from swig/monlight.i into
#   the build directory, and the engine is compiled from core/. The Makefile
#   regenerates the wrapper when the interface or a header changes.
require "mkmf"
require "shellwords"

EXT_DIR = __dir__
REPO_ROOT = File.expand_path("../../../..", EXT_DIR)
SHIPPED_WRAPPER = File.join(EXT_DIR, "monlight_wrap.c")
SHIPPED_CORE = File.join(EXT_DIR, "vendor", "core")
INTERFACE = File.join(REPO_ROOT, "swig", "monlight.i")

def engine_sources(core_dir)
  Dir[File.join(core_dir, "src", "*.c")].sort
end

if File.exist?(SHIPPED_WRAPPER) && File.directory?(SHIPPED_CORE)
  core_dir = SHIPPED_CORE
  generate_wrapper = false
elsif File.exist?(INTERFACE) && File.directory?(File.join(REPO_ROOT, "core", "src"))
  core_dir = File.join(REPO_ROOT, "core")
  generate_wrapper = true
  swig = find_executable("swig")
  abort "extconf: swig is required to build from the repository (apt-get install swig)" unless swig
else
  abort "extconf: found neither the packaged sources (#{SHIPPED_WRAPPER}, #{SHIPPED_CORE}) " \
        "nor the repository's #{INTERFACE}"
end

engine_c = engine_sources(core_dir)
abort "extconf: no engine sources in #{core_dir}/src" if engine_c.empty?

# The engine's own flags (see CMakeLists.txt), used here for every file: the
# wrapper and the helpers build cleanly with them too. Debian's Ruby leaves
# warnings out of CFLAGS, so they are added here.
$CFLAGS << " -std=c11 -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter"
$CPPFLAGS << " -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE"
$INCFLAGS << " -I#{File.join(core_dir, 'include').shellescape}"
$INCFLAGS << " -I#{File.join(core_dir, 'src').shellescape}"
$INCFLAGS << " -I#{EXT_DIR.shellescape}"

%w[libcurl libcjson].each do |package|
  pkg_config(package) or abort "extconf: pkg-config found no #{package} (apt-get install #{package == 'libcurl' ? 'libcurl4-openssl-dev' : 'libcjson-dev'})"
end
have_library("pthread") or abort "extconf: libpthread is missing"
have_library("m") or abort "extconf: libm is missing"

# Export Init_native alone: the engine's monlight_* symbols stay inside the
# extension, so another copy of the engine in the same process (a Python or
# Lua embedding, say) can neither replace nor be replaced by this one.
File.write("native.map", "{ global: Init_native; local: *; };\n")
$DLDFLAGS << " -Wl,--version-script=native.map"

$VPATH << File.join(core_dir, "src")
$srcs = ["monlight_wrap.c", "monlight_rb.c"] + engine_c.map { |path| File.basename(path) }

if generate_wrapper
  swig_command = [swig, "-ruby", "-I#{File.join(core_dir, 'include')}", "-I#{EXT_DIR}",
                  "-o", "monlight_wrap.c", INTERFACE]
  system(*swig_command) or abort "extconf: #{swig_command.join(' ')} failed"
end

create_makefile("monlight/native")

# mkmf tracks no header dependencies, so every object is made to depend on
# every header: a changed header rebuilds all files, and nothing else does.
headers = [File.join(core_dir, "include", "monlight.h"), File.join(core_dir, "src", "internal.h"),
           File.join(EXT_DIR, "monlight_rb.h")]
File.open("Makefile", "a") do |makefile|
  makefile.puts
  makefile.puts "$(OBJS): #{headers.map(&:shellescape).join(' ')}"
  if generate_wrapper
    makefile.puts "monlight_wrap.c: #{([INTERFACE] + headers).map(&:shellescape).join(' ')}"
    makefile.puts "\t#{swig_command.map(&:shellescape).join(' ')}"
  end
end
