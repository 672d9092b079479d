<?php
// A server-rendered catalogue page: 600 rows computed here, escaped, number-formatted,
// interpolated and joined — the string work a typical PHP page does, with no I/O.
$categories = ['Tools & co', 'Books <2nd>', '"Garden"', "Kid's", 'Office'];
$rows = [];
$total = 0.0;
for ($id = 1; $id <= 600; $id++) {
    $name = $categories[$id % 5];
    $price = (($id * 7919) % 100000) / 100;
    $change = ((($id * 104729) % 2001) - 1000) / 100;
    $total += $price;
    $cells = [
        "<td>$id</td>",
        '<td>' . htmlspecialchars($name) . '</td>',
        '<td>' . number_format($price, 2) . '</td>',
        '<td>' . number_format($change, 2) . '%</td>',
    ];
    $rows[] = '<tr>' . implode('', $cells) . '</tr>';
}
$title = htmlspecialchars('Catalogue & prices');
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title><?= $title ?></title>
<style>body{font-family:sans-serif}td{text-align:right}</style>
</head>
<body>
<header><h1><?= $title ?></h1><p><?= count($rows) ?> items</p></header>
<table>
<thead><tr><th>Id</th><th>Name</th><th>Price</th><th>Change</th></tr></thead>
<tbody>
<?= implode("\n", $rows) ?>

</tbody>
</table>
<footer><p>Total: <?= number_format($total, 2) ?></p></footer>
</body>
</html>
