# ruby_yjit_compile.rb: make Ruby's YJIT (ruby --yjit, Ruby 3.1) write a lot of machine code.
#
# Generates many classes with class_eval'd source, each method and each block a distinct
# instruction sequence, and calls every one often enough (YJIT compiles an ISEQ on its 10th
# call) to be compiled, along with the side exits and the branch stubs it later patches.
#
# What YJIT 3.1 does with mprotect (strace, Debian's ruby3.1): it maps one 256 MiB code area
# (mmap PROT_READ|PROT_EXEC, MAP_FIXED_NOREPLACE near the interpreter), makes it read/write,
# fills it with 0x1E and makes it read/exec: the only two calls on the whole area. Its first
# half holds inline code, its second half outlined code (side exits, stubs). Before it writes
# a byte on a page other than the last one it made writable, it mprotects that one page
# read/write; when it is done it mprotects the whole second half, then the whole first half,
# read/exec. So each compilation is about two one-page read/write calls (one per half; in the
# first half sometimes an older page, when a jump is patched) and two 128 MiB read/exec calls,
# all from one thread. Prints one deterministic checksum line (starting "ruby_yjit_compile ")
# and, on another line, YJIT's code sizes, which depend on where the area happens to be mapped.
#
#   ruby --yjit ruby_yjit_compile.rb [CLASSES] [CALLS]      (default 100 classes, 30 calls)

classes = (ARGV[0] || 100).to_i
calls = (ARGV[1] || 30).to_i

MASK = 0xffffffff

# Method bodies: every shape compiles to different YJIT code (fixnum arithmetic, branches,
# arrays, hashes, strings, blocks, instance variables, case/when, calls to other methods).
# %{k} and %{m} are per-method constants, so that no two methods share an ISEQ's source.
SHAPES = [
  <<~'RUBY',
    def m%{i}(x)
      acc = %{k}
      j = 0
      while j < 8
        acc = ((acc * 31) ^ (x + j * %{m})) & MASK
        j += 1
      end
      acc
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      a = [x, %{k}, %{m}, x + 1]
      a.map { |v| (v * %{m} + %{k}) & MASK }.sum & MASK
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      h = { a: x, b: %{k} }
      h[:c] = (h[:a] + h[:b] * %{m}) & MASK
      h.each_value.inject(0) { |s, v| (s * 7 + v) & MASK }
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      @v%{i} = ((@v%{i} || %{k}) + x * %{m}) & MASK
      @v%{i} > %{k} ? @v%{i} - %{k} : @v%{i} + %{m}
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      case x %% 4
      when 0 then (x * %{k}) & MASK
      when 1 then (x + %{m}) & MASK
      when 2 then (x ^ %{k}) & MASK
      else (x - %{m}) & MASK
      end
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      s = "r%{k}-" + (x & 0xff).to_s
      (s.bytesize * %{m} + s.getbyte(1) + x) & MASK
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      t = 0
      3.times { |n| t = (t + helper(x + n) * %{m}) & MASK }
      (t + %{k}) & MASK
    end
  RUBY
  <<~'RUBY',
    def m%{i}(x)
      v = x > %{k} ? x - %{k} : x + %{m}
      v = -v if v.odd?
      v.abs.to_i & MASK
    end
  RUBY
].freeze

METHODS_PER_CLASS = 8

def class_source(c)
  methods = (0...METHODS_PER_CLASS).map do |i|
    n = c * METHODS_PER_CLASS + i
    format(SHAPES[(c + i) % SHAPES.size], i: i, k: n * 13 + 7, m: n % 89 + 3)
  end
  calls = (0...METHODS_PER_CLASS).map { |i| "r = (r * 33 + m#{i}(x + #{i})) & MASK" }
  <<~RUBY
    class Gen#{c}
      def helper(x)
        (x * #{c % 61 + 5} + #{c}) & MASK
      end
      #{methods.join("\n")}
      def run(x)
        r = #{c}
        #{calls.join("\n  ")}
        r
      end
    end
  RUBY
end

checksum = 0
compiled = 0
classes.times do |c|
  Object.class_eval(class_source(c), "gen#{c}.rb")
  obj = Object.const_get("Gen#{c}").new
  calls.times do |n|
    checksum = ((checksum * 31) ^ obj.run(n * 7 + c)) & MASK
  end
  compiled += METHODS_PER_CLASS + 2
end

puts format("ruby_yjit_compile classes=%d methods=%d calls=%d checksum=%08x",
            classes, compiled, calls, checksum)
if defined?(RubyVM::YJIT) && RubyVM::YJIT.enabled?
  stats = RubyVM::YJIT.runtime_stats
  puts "yjit inline_code_size=#{stats[:inline_code_size]} outlined_code_size=#{stats[:outlined_code_size]}"
else
  puts "yjit off"
end
