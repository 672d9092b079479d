<?php
// Which PHP answers on this peer and whether OPcache (and its JIT) is on: for versions.txt and
// the start-up check, never loaded.
$status = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
printf(
    "PHP %s %s, SAPI %s, opcache %s, jit %s\n",
    PHP_VERSION,
    PHP_ZTS ? 'ZTS' : 'NTS',
    PHP_SAPI,
    is_array($status) && $status['opcache_enabled'] ? 'on' : 'off',
    is_array($status) && !empty($status['jit']['on']) ? 'on (' . ini_get('opcache.jit') . ')' : 'off'
);
