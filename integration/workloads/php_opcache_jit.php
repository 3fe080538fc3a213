<?php
// php_opcache_jit.php: make PHP's opcache compile and JIT a lot of code.
//
//   php -n -d zend_extension=opcache.so -d opcache.enable_cli=1 -d opcache.protect_memory=1 \
//       -d opcache.jit=tracing -d opcache.jit_buffer_size=64M php_opcache_jit.php [FILES] [FUNCS]
//
// Generates FILES source files of FUNCS distinct functions each in a fresh temporary folder,
// includes them all and calls every function often enough for the tracing JIT to compile it.
// With opcache.protect_memory=1 opcache makes its shared memory writable around every script
// it caches and read-only again afterwards, and the JIT makes its code buffer writable around
// every trace it writes: both are repeated mprotect calls on the same ranges.
// Prints one deterministic line; the folder is removed at the end.

$files = isset($argv[1]) ? (int)$argv[1] : 60;
$funcs = isset($argv[2]) ? (int)$argv[2] : 10;

$dir = sys_get_temp_dir() . '/php_opcache_jit.' . getmypid();
if (!mkdir($dir, 0700)) {
    fwrite(STDERR, "php_opcache_jit: cannot create $dir\n");
    exit(2);
}

// Bodies differ in constants and shape so every function gets its own traces. Integer
// arithmetic is masked to 31 bits: results are exact and the same on every run.
$shapes = [
    '$acc = (($acc * %d) ^ ($i + %d)) & 0x7fffffff;',
    '$acc = ($acc + $i * %d + %d) & 0x7fffffff;',
    'if ($i %% 3 == 0) { $acc = ($acc + %d) & 0x7fffffff; } else { $acc ^= $i * %d; }',
    '$acc = (($acc << 1) ^ ($acc >> %d %% 13 + 1) ^ %d) & 0x7fffffff;',
];

$names = [];
for ($f = 0; $f < $files; $f++) {
    $code = "<?php\n";
    for ($k = 0; $k < $funcs; $k++) {
        $n = $f * $funcs + $k;
        $body = sprintf($shapes[$n % count($shapes)], $n % 89 + 3, $n * 7 + 1);
        $code .= "function gen_$n(int \$limit): int {\n"
               . "    \$acc = $n;\n"
               . "    for (\$i = 1; \$i <= \$limit; \$i++) {\n"
               . "        $body\n"
               . "    }\n"
               . "    return \$acc;\n"
               . "}\n";
        $names[] = "gen_$n";
    }
    file_put_contents("$dir/gen_$f.php", $code);
    // opcache does not cache a file changed within opcache.file_update_protection seconds
    // (default 2): date the new files back so they are cached and JIT-compiled.
    touch("$dir/gen_$f.php", time() - 60);
}

$sum = 0;
foreach (glob("$dir/gen_*.php") as $path) {
    require $path;
}
// 150 calls of a 100-iteration loop: past the tracing JIT's hot-loop and hot-function
// counters (64 and 127), so loops and functions are compiled.
foreach ($names as $name) {
    for ($c = 0; $c < 150; $c++) {
        $sum = (($sum * 31) ^ $name(100)) & 0xffffffff;
    }
}

foreach (glob("$dir/gen_*.php") as $path) {
    unlink($path);
}
rmdir($dir);

$status = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
$jit = is_array($status) && !empty($status['jit']['on']) ? 'on' : 'off';
printf("php_opcache_jit files=%d functions=%d jit=%s checksum=%08x\n", $files, count($names), $jit, $sum);
