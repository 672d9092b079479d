//! `scripts/build-php.sh` with a user's own PHP (`PHP_CONFIG`): a usable ZTS PHP is accepted as
//! is, anything else is refused with a message saying why.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A fake PHP install: a `php-config` answering like the real one, a `php_config.h` and libphp.
fn fake_php(dir: &Path, version_id: u32, zts: bool, with_libphp: bool) -> std::path::PathBuf {
    let prefix = dir.join(format!("php-{version_id}-{zts}-{with_libphp}"));
    std::fs::create_dir_all(prefix.join("include/php/main")).unwrap();
    std::fs::create_dir_all(prefix.join("lib")).unwrap();
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let zts_line = if zts {
        "#define ZTS 1"
    } else {
        "/* #undef ZTS */"
    };
    std::fs::write(
        prefix.join("include/php/main/php_config.h"),
        format!("{zts_line}\n"),
    )
    .unwrap();
    if with_libphp {
        std::fs::write(prefix.join("lib/libphp.so"), b"").unwrap();
    }
    let php_config = prefix.join("bin/php-config");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  --vernum) echo {version_id} ;;\n  --version) echo fake-{version_id} ;;\n  --include-dir) echo {prefix}/include/php ;;\n  --prefix) echo {prefix} ;;\nesac\n",
        prefix = prefix.display()
    );
    std::fs::write(&php_config, script).unwrap();
    std::fs::set_permissions(&php_config, std::fs::Permissions::from_mode(0o755)).unwrap();
    php_config
}

fn build_php(php_config: &Path) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-php.sh"))
        .env("PHP_CONFIG", php_config)
        .output()
        .unwrap()
}

#[test]
fn a_zts_php_with_libphp_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let php_config = fake_php(dir.path(), 80400, true, true);
    let output = build_php(&php_config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        php_config.to_str().unwrap()
    );
}

#[test]
fn unusable_php_builds_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (version_id, zts, libphp, reason) in [
        (80232, false, true, "non-thread-safe"),
        (80110, true, true, "supports PHP 8.2 to 8.4"),
        (80500, true, true, "supports PHP 8.2 to 8.4"),
        (80300, true, false, "--enable-embed"),
    ] {
        let output = build_php(&fake_php(dir.path(), version_id, zts, libphp));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{version_id} zts={zts} must be refused"
        );
        assert!(stderr.contains(reason), "{version_id}: {stderr}");
    }
    let output = build_php(&dir.path().join("no/such/php-config"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an executable php-config"));
}
