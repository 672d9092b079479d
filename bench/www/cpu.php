<?php
// CPU-bound with no I/O and a tiny answer: integer and float arithmetic in a tight loop, then a
// chain of hashes — the interpreter's (and JIT's) speed, not the server's.
$acc = 0;
$x = 0.0;
for ($i = 1; $i <= 200000; $i++) {
    $acc = ($acc * 31 + $i * $i) % 1000003;
    $x += ($i % 7) * 0.5 - ($acc & 3);
}
$hash = '';
for ($i = 0; $i < 3000; $i++) {
    $hash = md5($hash . $i);
    $acc ^= crc32($hash);
}
printf("acc=%d x=%.1f md5=%s\n", $acc, $x, $hash);
