-- sysbench_jit.lua: a sysbench test whose events make LuaJIT compile new code.
--
--   sysbench sysbench_jit.lua --threads=N --events=E [--functions=F] run
--
-- Every event loads F fresh functions with load() and runs each one long enough to be
-- compiled, so each worker thread's LuaJIT keeps writing machine code and toggling its
-- code area with mprotect. Each result is checked against the same function run by the
-- interpreter. Which thread runs which event varies from run to run, so every event does
-- the same work and the totals are combined in the main thread; the line printed by
-- done() is deterministic (sysbench's own timing report is not).

local ffi = require("ffi")
local bit = require("bit")

sysbench.cmdline.options = {
  functions = {"functions compiled per event", 20},
}

ffi.cdef[[
void *malloc(size_t size);
void *memset(void *s, int c, size_t n);
int setenv(const char *name, const char *value, int overwrite);
char *getenv(const char *name);
typedef struct { double events, functions, mismatches, checksum; } sb_jit_slot;
]]

-- One slot per worker thread, shared by the Lua states of all threads (one process). The
-- main thread's state runs this chunk first and publishes the table's address; the workers'
-- states run it later and find it. Each worker writes only its own slot.
local MAX_THREADS = 1024
local SLOTS_ENV = "SB_JIT_SLOTS"
local slots
do
  local addr = ffi.C.getenv(SLOTS_ENV)
  if addr == nil then
    local bytes = MAX_THREADS * ffi.sizeof("sb_jit_slot")
    local p = ffi.C.malloc(bytes)
    ffi.C.memset(p, 0, bytes)
    ffi.C.setenv(SLOTS_ENV, tostring(tonumber(ffi.cast("uintptr_t", p))), 1)
    slots = ffi.cast("sb_jit_slot *", p)
  else
    slots = ffi.cast("sb_jit_slot *", ffi.cast("uintptr_t", tonumber(ffi.string(addr))))
  end
end

local shapes = {
  "acc = bit.bxor(acc * %d + i, %d)",
  "acc = bit.band(acc + i * %d, 0x7fffffff) + %d",
  "acc = bit.rol(acc, %d %% 31 + 1) + i + %d",
  "if i %% 3 == 0 then acc = acc + %d else acc = bit.bxor(acc, i * %d) end",
}

local function source(n)
  local body = string.format(shapes[n % #shapes + 1], n % 89 + 5, n * 13 + 7)
  return string.format([[
local bit = ...
return function(limit)
  local acc = %d
  for i = 1, limit do
    %s
    acc = bit.tobit(acc)
  end
  return acc
end
]], n, body)
end

local function make(n)
  return assert(load(source(n), "sbgen" .. n))(bit)
end

local ITERATIONS = 200   -- past LuaJIT's hot-loop threshold (56): every loop is compiled
local expected = {}

function thread_init(thread_id)
  -- The reference results, from the interpreter alone.
  for n = 1, sysbench.opt.functions do
    local f = make(n)
    jit.off(f)
    expected[n] = f(ITERATIONS)
  end
end

function event(thread_id)
  local slot = slots[thread_id]
  local value = 0
  for n = 1, sysbench.opt.functions do
    local r = make(n)(ITERATIONS)   -- a new prototype: the JIT compiles it afresh
    if r ~= expected[n] then slot.mismatches = slot.mismatches + 1 end
    value = bit.tobit(bit.bxor(value * 31, r))
  end
  slot.events = slot.events + 1
  slot.functions = slot.functions + sysbench.opt.functions
  slot.checksum = (slot.checksum + value % 4294967296) % 4294967296
end

function done()
  local events, functions, mismatches, checksum = 0, 0, 0, 0
  for t = 0, sysbench.opt.threads - 1 do
    events = events + slots[t].events
    functions = functions + slots[t].functions
    mismatches = mismatches + slots[t].mismatches
    checksum = (checksum + slots[t].checksum) % 4294967296
  end
  print(string.format("sysbench_jit events=%d functions=%d mismatches=%d checksum=%08x",
                      events, functions, mismatches, checksum))
end
