<?php
// phpinfo(): PHP's version, configuration and extensions, as PHP sees them under tokio_php.
// It shows the environment too (the server's settings): keep it out of a public deployment.
phpinfo();
