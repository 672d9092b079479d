<?php
// The smallest script: what `make bench` measures as the server's own cost per request.
echo "Hello, World!";
