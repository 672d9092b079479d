<?php
$info = [
    'PHP version' => PHP_VERSION,
    'Server' => $_SERVER['SERVER_SOFTWARE'] ?? 'unknown',
    'Protocol' => $_SERVER['SERVER_PROTOCOL'] ?? '',
    'Worker' => function_exists('tokio_worker_id') ? tokio_worker_id() : 'n/a',
    'Thread-safe (ZTS)' => PHP_ZTS ? 'yes' : 'no',
    'OPcache' => function_exists('opcache_get_status') && opcache_get_status(false) ? 'on' : 'off',
    'Your address' => $_SERVER['REMOTE_ADDR'] ?? '',
];
?><!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tokio_php</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.6rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }
  th { width: 40%; font-weight: 600; }
  code { background: #f3f3f3; padding: 0 .25rem; }
</style>
</head>
<body>
<h1>It works: PHP runs inside tokio_php</h1>
<p>This page was executed by an embedded, thread-safe PHP on one of the server's worker threads.</p>
<table>
<?php foreach ($info as $name => $value): ?>
  <tr><th><?= htmlspecialchars($name) ?></th><td><?= htmlspecialchars((string)$value) ?></td></tr>
<?php endforeach; ?>
</table>
<p>Try <a href="upload.php">a file upload</a>, <a href="sse.php">Server-Sent Events</a> or the benchmark script <a href="bench.php"><code>bench.php</code></a>.
Put your own application in <code>www/</code> (or point <code>DOCUMENT_ROOT</code> at it).</p>
</body>
</html>
