<?php
// OPcache preload (opcache.preload=/path/to/preload.php; the image's php.ini sets it): compiled
// once at startup and shared by every worker thread. Preload your framework's hot classes here;
// this sample preloads one helper. Declared conditionally, so that opening this file as a page
// after it was preloaded does not declare the function twice.

if (!function_exists('tokio_php_preloaded_greeting')) {
    function tokio_php_preloaded_greeting(string $name): string
    {
        return "Hello, {$name}, from a preloaded function";
    }
}

// Opened as a page (preloading runs without a request): say whether it was preloaded.
if (isset($_SERVER['REQUEST_URI'])) {
    $status = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
    $preloaded = is_array($status) ? ($status['preload_statistics']['functions'] ?? []) : [];
    header('Content-Type: text/plain; charset=utf-8');
    if (in_array('tokio_php_preloaded_greeting', $preloaded, true)) {
        echo tokio_php_preloaded_greeting('visitor'), "\n";
    } else {
        echo "Not preloaded: set opcache.preload to this file (PHP_INI_OPCACHE__PRELOAD=", __FILE__, ").\n";
    }
}
