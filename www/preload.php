<?php
// OPcache preload (opcache.preload=/path/to/preload.php): compiled once at startup and shared by
// every worker thread. Preload your framework's hot classes here; this sample preloads a helper.

function tokio_php_preloaded_greeting(string $name): string
{
    return "Hello, {$name}, from a preloaded function";
}
