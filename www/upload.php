<?php
$uploaded = [];
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    foreach ($_FILES['files']['name'] ?? [] as $i => $name) {
        $uploaded[] = [
            'name' => $name,
            'size' => $_FILES['files']['size'][$i],
            'ok' => $_FILES['files']['error'][$i] === UPLOAD_ERR_OK && is_uploaded_file($_FILES['files']['tmp_name'][$i]),
            'sha256' => is_file($_FILES['files']['tmp_name'][$i]) ? hash_file('sha256', $_FILES['files']['tmp_name'][$i]) : '',
        ];
    }
}
?><!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Upload — tokio_php</title>
<style>body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; }</style>
</head>
<body>
<h1>Upload files</h1>
<form method="post" enctype="multipart/form-data">
  <input type="file" name="files[]" multiple>
  <button type="submit">Upload</button>
</form>
<?php if ($uploaded): ?>
<h2>Received</h2>
<ul>
<?php foreach ($uploaded as $file): ?>
  <li><?= htmlspecialchars($file['name']) ?> — <?= (int)$file['size'] ?> bytes,
      <?= $file['ok'] ? 'ok' : 'failed' ?>, sha256 <code><?= htmlspecialchars($file['sha256']) ?></code></li>
<?php endforeach; ?>
</ul>
<?php endif; ?>
<p><a href="/">Back</a></p>
</body>
</html>
