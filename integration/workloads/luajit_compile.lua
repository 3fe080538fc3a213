-- luajit_compile.lua: make LuaJIT write a lot of machine code.
--
-- Generates many distinct functions with load(), each with its own hot loop, so the JIT
-- records and assembles a new trace for every one of them. LuaJIT makes its machine-code
-- area writable before it writes a trace and executable again afterwards (two mprotect
-- calls on the same range per trace), which is the toggle pattern the shim turns into
-- PKRU writes. Prints one deterministic checksum line.
--
--   luajit luajit_compile.lua [FUNCTIONS] [ROUNDS]

local bit = require("bit")

local functions = tonumber(arg and arg[1]) or 1500
local rounds = tonumber(arg and arg[2]) or 2

-- Each generated function differs in its constants and in the shape of its loop body, so
-- no two share a trace. All arithmetic is 32-bit integer (bit ops): the result is exact.
local shapes = {
  "acc = bit.bxor(acc * %d + i, %d)",
  "acc = bit.band(acc + i * %d, 0x7fffffff) + %d",
  "acc = bit.rol(acc, %d %% 31 + 1) + i + %d",
  "if i %% 3 == 0 then acc = acc + %d else acc = bit.bxor(acc, i * %d) end",
  "acc = bit.tobit(acc * 33 + bit.rshift(i, %d %% 7) + %d)",
}

local function source(n)
  local shape = shapes[n % #shapes + 1]
  local body = string.format(shape, n % 97 + 3, n * 7 + 1)
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

local sum = 0
local made = 0
for round = 1, rounds do
  for n = 1, functions do
    local chunk = assert(load(source(n + round * 100000), "gen" .. n))
    local f = chunk(bit)
    made = made + 1
    -- 200 iterations: enough for the loop to get hot and be compiled (hotloop is 56).
    sum = bit.tobit(bit.bxor(sum * 31, f(200)))
  end
end

print(string.format("luajit_compile functions=%d checksum=%08x", made, bit.band(sum, 0xffffffff) % 0x100000000))
