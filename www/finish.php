<?php
// tokio_finish_request() (alias fastcgi_finish_request()): the client gets its answer at once,
// the script goes on (here: two seconds of "work") and its worker is busy until it ends. What it
// prints afterwards goes nowhere; its log line shows it ran (the server's log, type "error").
// Try it: time curl http://127.0.0.1:8080/finish.php   (returns right away)
$started = microtime(true);
header('Content-Type: text/plain; charset=utf-8');
echo "Answered at once; the script keeps working for two more seconds after this response.\n";
tokio_finish_request();

sleep(2); // stands in for sending mail, writing a report, calling a slow API, …
error_log(sprintf('finish.php: work after the response took %.1f s', microtime(true) - $started));
echo "nobody reads this\n";
