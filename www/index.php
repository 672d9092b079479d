<?php
// The welcome page: what is serving this request, and the demos next to it.

$server = function_exists('tokio_server_info') ? tokio_server_info() : [];
$opcache = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
$jit = is_array($opcache) ? ($opcache['jit'] ?? []) : [];
$preloaded = is_array($opcache) ? ($opcache['preload_statistics']['functions'] ?? []) : [];

$info = [
    'Server' => trim(($server['server'] ?? $_SERVER['SERVER_SOFTWARE'] ?? 'unknown') . ' ' . ($server['version'] ?? '')),
    'PHP' => PHP_VERSION . (PHP_ZTS ? ' (thread-safe)' : ' (not thread-safe)'),
    'PHP workers' => isset($server['workers']) ? $server['workers'] . ' threads, queue of ' . $server['queue_capacity'] : 'n/a',
    'This request ran on worker' => function_exists('tokio_worker_id') ? (string) tokio_worker_id() : 'n/a',
    'OPcache' => is_array($opcache) && $opcache['opcache_enabled'] ? 'on' : 'off',
    'JIT' => !empty($jit['on']) ? 'on (' . ini_get('opcache.jit') . ', ' . ini_get('opcache.jit_buffer_size') . ' buffer)' : 'off',
    'Preloaded functions' => $preloaded ? implode(', ', $preloaded) : 'none (opcache.preload is not set)',
    'Protocol' => $_SERVER['SERVER_PROTOCOL'] ?? '',
    'HTTPS' => !empty($_SERVER['HTTPS']) ? 'yes' : 'no',
    'Request id' => function_exists('tokio_request_id') ? tokio_request_id() : '',
    'Trace id' => $_SERVER['TRACE_ID'] ?? '',
    'Your address' => $_SERVER['REMOTE_ADDR'] ?? '',
];

$demos = [
    'hello.php' => 'the smallest script: Hello, World!',
    'info.php' => 'phpinfo(): PHP\'s configuration and extensions',
    'session.php' => 'a session that counts your visits',
    'upload.php' => 'a file upload through $_FILES',
    'sse.php' => 'Server-Sent Events, streamed as PHP echoes them',
    'finish.php' => 'tokio_finish_request(): answer first, keep working after',
    'heartbeat.php' => 'tokio_request_heartbeat(): a long task that extends its own timeout',
    'preload.php' => 'the OPcache preload script and whether it was preloaded',
];
?><!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tokio_php</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.6rem; }
  h2 { font-size: 1.2rem; margin-top: 2rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
  th { width: 40%; font-weight: 600; }
  code { background: #f3f3f3; padding: 0 .25rem; }
</style>
</head>
<body>
<h1>It works: PHP runs inside tokio_php</h1>
<p>This page was executed by an embedded, thread-safe PHP on one of the server's worker threads.</p>
<table id="server">
<?php foreach ($info as $name => $value): ?>
  <tr><th><?= htmlspecialchars($name) ?></th><td><?= htmlspecialchars((string) $value) ?></td></tr>
<?php endforeach; ?>
</table>

<h2>Try</h2>
<ul id="demos">
<?php foreach ($demos as $href => $what): ?>
  <li><a href="<?= htmlspecialchars($href) ?>"><code><?= htmlspecialchars($href) ?></code></a>: <?= htmlspecialchars($what) ?></li>
<?php endforeach; ?>
</ul>

<p>A page that does not exist gets <code>errors/404.html</code> (<code>ERROR_PAGES_DIR</code>).
Put your own application in <code>www/</code> (or point <code>DOCUMENT_ROOT</code> at it). The
server's own endpoints — <code>/health</code>, <code>/metrics</code>, <code>/config</code> — are on
the internal address (<code>INTERNAL_ADDR</code>), not here.</p>
</body>
</html>
