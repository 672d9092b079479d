<?php
// Server-Sent Events: five clock ticks, one per second, each flushed to the browser at once.
// Try it: curl -N http://127.0.0.1:8080/sse.php
header('Content-Type: text/event-stream');
header('Cache-Control: no-cache');
for ($i = 1; $i <= 5; $i++) {
    echo "id: $i\nevent: tick\ndata: " . json_encode(['n' => $i, 'time' => date(DATE_ATOM)]) . "\n\n";
    flush();
    if ($i < 5) {
        sleep(1);
    }
}
