<?php
// PGO training (scripts/build-php.sh): WordPress's own code, which needs no database —
// hooks, options from the object cache, translations, formatting (wptexturize, wpautop,
// kses, esc_*), shortcodes, block parsing and theme.json styles. WP_DIR and WP_THEME_DIR name
// the Debian packages' trees (scripts/fetch-debian-app.sh).
$wp = getenv('WP_DIR') ?: '/usr/share/wordpress';
define('ABSPATH', $wp . '/');
define('WPINC', 'wp-includes');
define('WP_CONTENT_DIR', ABSPATH . 'wp-content');
define('WP_DEBUG', false);
require ABSPATH . WPINC . '/load.php';
require ABSPATH . WPINC . '/compat.php';
require ABSPATH . WPINC . '/plugin.php';
require ABSPATH . WPINC . '/functions.php';
require ABSPATH . WPINC . '/l10n.php';
require ABSPATH . WPINC . '/pomo/translations.php';
$GLOBALS['locale'] = 'en_US';
require ABSPATH . WPINC . '/class-wp-object-cache.php';
require ABSPATH . WPINC . '/cache.php';
wp_cache_init();
wp_cache_add('alloptions', [
    'blog_charset' => 'UTF-8', 'html_type' => 'text/html', 'use_smilies' => '0',
    'home' => 'https://example.org', 'siteurl' => 'https://example.org', 'use_balanceTags' => '0',
], 'options');
require ABSPATH . WPINC . '/formatting.php';
require ABSPATH . WPINC . '/kses.php';
require ABSPATH . WPINC . '/shortcodes.php';
require ABSPATH . WPINC . '/class-wp-block-parser.php';
require ABSPATH . WPINC . '/blocks.php';
require ABSPATH . WPINC . '/class-wp-block-type-registry.php';

$post = <<<'HTML'
<!-- wp:paragraph -->
<p>WordPress "quotes" -- and dashes... It's <strong>bold</strong> & <em>em</em>; see https://example.org/path?a=1&b=2 or mail@example.org.</p>
<!-- /wp:paragraph -->
<!-- wp:list -->
<ul><li>One <a href="https://example.org/one" onclick="evil()">link</a></li><li>Two <script>alert(1)</script></li></ul>
<!-- /wp:list -->
[gallery ids="1,2,3" size="medium"] [caption id="c1" align="alignleft" width="300"]<img src="x.png" alt="x" /> Caption[/caption]

Second paragraph with 'single quotes', (c) 2024, 1/2 and 10x10.
Line two of the same paragraph.
HTML;

add_shortcode('gallery', fn ($atts) => '<div class="gallery">' . esc_html(implode(',', (array) shortcode_atts(['ids' => '', 'size' => 'thumbnail'], $atts))) . '</div>');
add_shortcode('caption', fn ($atts, $content = '') => '<figure>' . do_shortcode($content) . '</figure>');
for ($i = 0; $i < 20; $i++) {
    add_filter('the_content', fn ($c) => $c, 10 + $i);
}
$rounds = (int) (getenv('WP_TRAIN_ROUNDS') ?: 20);
$out = 0;
for ($r = 0; $r < $rounds; $r++) {
    $blocks = parse_blocks($post);
    $html = apply_filters('the_content', $post);
    $html = wptexturize($html);
    $html = wpautop($html);
    $html = do_shortcode($html);
    $html = wp_kses_post($html);
    $html = make_clickable($html);
    $title = sanitize_title('Hello World, this is post ' . $r . ' — with ünïcödé');
    $attr = esc_attr('a "quoted" <value> & more ' . $r);
    $url = esc_url('https://example.org/?p=' . $r . '&x=<y>');
    $args = wp_parse_args(['a' => $r, 'b' => [1, 2, 3]], ['a' => 0, 'c' => 'd']);
    $json = wp_json_encode(['blocks' => count($blocks), 'title' => $title, 'args' => $args]);
    $query = add_query_arg(['page' => $r, 'q' => 'search term'], 'https://example.org/list/');
    $out += strlen($html) + strlen($attr) + strlen($url) + strlen($json) + strlen($query);
}
require ABSPATH . WPINC . '/class-wp-theme-json-schema.php';
require ABSPATH . WPINC . '/class-wp-theme-json.php';
require ABSPATH . WPINC . '/class-wp-theme-json-data.php';
$theme_dir = getenv('WP_THEME_DIR') ?: ABSPATH . 'wp-content/themes/twentytwentythree';
$core_json = json_decode(file_get_contents(ABSPATH . WPINC . '/theme.json'), true);
$theme_json = json_decode(file_get_contents($theme_dir . '/theme.json'), true);
for ($r = 0; $r < max(1, intdiv($rounds, 10)); $r++) {
    $core = new WP_Theme_JSON($core_json, 'default');
    $core->merge(new WP_Theme_JSON($theme_json, 'theme'));
    $out += strlen($core->get_stylesheet(['variables', 'presets']));
    $out += count($core->get_settings());
}
echo $out, "\n";
