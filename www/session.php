<?php
// A PHP session: a visit counter kept in $_SESSION, with the session cookie PHP sets.
// ?reset ends the session (session_destroy) and starts over.
session_start();
if (isset($_GET['reset'])) {
    $_SESSION = [];
    session_destroy();
    header('Location: session.php', true, 303);
    exit;
}
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
$_SESSION['first_visit'] ??= date(DATE_ATOM);
?><!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Session — tokio_php</title>
<style>body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; }</style>
</head>
<body>
<h1>Session</h1>
<p id="visits">Visits in this session: <strong><?= (int) $_SESSION['visits'] ?></strong></p>
<p>First visit: <?= htmlspecialchars($_SESSION['first_visit']) ?>; session handler:
<code><?= htmlspecialchars(ini_get('session.save_handler')) ?></code>; cookie:
<code><?= htmlspecialchars(session_name()) ?></code>.</p>
<p><a href="session.php">Visit again</a> · <a href="session.php?reset=1">End the session</a> · <a href="./">Start page</a></p>
</body>
</html>
