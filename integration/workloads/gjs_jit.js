// gjs_jit.js [FUNCTIONS] [CALLS] - compile-heavy JavaScript for SpiderMonkey's JITs: FUNCTIONS
// distinct functions (built with new Function, so each is new code), each called CALLS times,
// enough for the baseline JIT and, for the hot loop inside, Ion. Prints one deterministic line.
const args = typeof ARGV !== 'undefined' ? ARGV : [];
const functions = parseInt(args[0] || '400');
const calls = parseInt(args[1] || '300');
let sum = 0;
for (let i = 0; i < functions; i++) {
  const f = new Function('x', `let s = ${i}; for (let j = 0; j < 200; j++) { s = (s * 31 + x + j) | 0; } return s;`);
  for (let k = 0; k < calls; k++) sum = (sum + f(k)) | 0;
}
print(`gjs_jit functions=${functions} calls=${calls} checksum=${(sum >>> 0).toString(16)}`);
