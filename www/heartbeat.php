<?php
// tokio_request_heartbeat(): a long task that keeps proving it is alive. REQUEST_TIMEOUT stops a
// request that runs too long; every heartbeat moves this request's deadline N seconds from now
// (N at most REQUEST_TIMEOUT), so a task that keeps beating keeps running, and restarts PHP's
// max_execution_time with it.
// Each step is flushed as it finishes. Try it: curl -N 'http://127.0.0.1:8080/heartbeat.php?steps=5'
$steps = max(1, min(30, (int) ($_GET['steps'] ?? 3)));
header('Content-Type: text/plain; charset=utf-8');
for ($step = 1; $step <= $steps; $step++) {
    usleep(500000); // one slow step of a batch job
    $extended = tokio_request_heartbeat(5);
    printf("step %d/%d done, deadline %s\n", $step, $steps, $extended ? 'moved 5 s ahead' : 'not moved');
    flush();
}
echo "all steps done\n";
