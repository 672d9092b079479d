//! Finds a ZTS libphp through `php-config`, compiles the C SAPI shim in `ext/`, generates its
//! bindings with bindgen and links libphp with an rpath, so the binary runs without
//! `LD_LIBRARY_PATH`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_SOURCES: &[&str] = &[
    "ext/tokio_php_sapi.c",
    "ext/tokio_php_worker.c",
    "ext/tokio_php_stack_guard.c",
];
/// The header bindgen turns into Rust; the shim's other headers are internal to it.
const SHIM_HEADER: &str = "ext/tokio_php_sapi.h";

fn main() {
    for source in SHIM_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-changed=ext/tokio_php_stack_guard.h");
    println!("cargo:rerun-if-changed=ext/tokio_php_sapi_private.h");
    println!("cargo:rerun-if-changed={SHIM_HEADER}");
    println!("cargo:rerun-if-env-changed=PHP_CONFIG");
    println!("cargo:rerun-if-env-changed=TOKIO_PHP_CACHE");

    let php_config = find_php_config();
    println!("cargo:rerun-if-changed={}", php_config.display());
    let php = PhpInstall::probe(&php_config);
    php.check_supported();

    emit_build_id();
    compile_shim(&php);
    generate_bindings();
    link_libphp(&php);
}

/// `PHP_CONFIG` wins; otherwise the prefix `scripts/build-php.sh` builds into; otherwise `PATH`.
fn find_php_config() -> PathBuf {
    if let Some(path) = env::var_os("PHP_CONFIG") {
        return PathBuf::from(path);
    }
    let cache = env::var_os("TOKIO_PHP_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tokio_php")))
        .or_else(|| env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/tokio_php")));
    if let Some(candidate) = cache.map(|c| c.join("php-8.2-zts/bin/php-config")) {
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("php-config")
}

struct PhpInstall {
    php_config: PathBuf,
    includes: Vec<String>,
    include_dir: PathBuf,
    lib_dir: PathBuf,
    version_id: u32,
}

impl PhpInstall {
    fn probe(php_config: &Path) -> Self {
        let includes = run(php_config, "--includes")
            .split_whitespace()
            .map(|flag| flag.trim_start_matches("-I").to_string())
            .collect();
        let include_dir = PathBuf::from(run(php_config, "--include-dir").trim());
        let lib_dir = PathBuf::from(run(php_config, "--prefix").trim()).join("lib");
        let version_id = run(php_config, "--vernum")
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                fail(&format!(
                    "{} --vernum did not print a number",
                    php_config.display()
                ))
            });
        PhpInstall {
            php_config: php_config.to_path_buf(),
            includes,
            include_dir,
            lib_dir,
            version_id,
        }
    }

    fn php_config_h(&self) -> String {
        let path = self.include_dir.join("main/php_config.h");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())))
    }

    fn check_supported(&self) {
        let which = self.php_config.display();
        if !(80200..80500).contains(&self.version_id) {
            fail(&format!(
                "{which} is PHP {}; tokio_php supports PHP 8.2 to 8.4",
                self.version_id
            ));
        }
        let config_h = self.php_config_h();
        if !config_h.lines().any(|l| l.trim() == "#define ZTS 1") {
            fail(&format!(
                "{which} is a non-thread-safe (NTS) PHP; tokio_php needs a ZTS build with the embed SAPI. \
                 Run scripts/build-php.sh (or `make php`), or point PHP_CONFIG at a ZTS php-config."
            ));
        }
        if config_h
            .lines()
            .any(|l| l.trim() == "#define ZEND_SIGNALS 1")
        {
            fail(&format!(
                "{which} was built with Zend signals; rebuild PHP with --disable-zend-signals"
            ));
        }
    }

    /// `libphp.so` (upstream and the official images) or `libphp8.x.so` (distribution style).
    fn lib_name(&self) -> String {
        let entries = std::fs::read_dir(&self.lib_dir)
            .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", self.lib_dir.display())));
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("libphp") && n.ends_with(".so"))
            .collect();
        names.sort();
        names
            .first()
            .map(|n| {
                n.trim_start_matches("lib")
                    .trim_end_matches(".so")
                    .to_string()
            })
            .unwrap_or_else(|| {
                fail(&format!(
                    "no libphp*.so in {}: PHP must be built with --enable-embed",
                    self.lib_dir.display()
                ))
            })
    }
}

/// `TOKIO_PHP_BUILD`: the version plus the git commit, for tokio_server_info() and logs.
fn emit_build_id() {
    let version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TOKIO_PHP_BUILD={version} ({commit})");
    println!("cargo:rerun-if-changed=.git/HEAD");
}

fn compile_shim(php: &PhpInstall) {
    let mut build = cc::Build::new();
    build
        .files(SHIM_SOURCES)
        .include("ext")
        .define("_GNU_SOURCE", None)
        .warnings(true);
    // PHP's headers trip these; they are not ours to fix.
    build
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-missing-field-initializers");
    for dir in &php.includes {
        build.include(dir);
    }
    build.compile("tokio_php_sapi");
}

fn generate_bindings() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindgen::Builder::default()
        .header(SHIM_HEADER)
        .allowlist_function("tp_.*")
        .allowlist_type("tp_.*")
        .default_enum_style(bindgen::EnumVariation::Rust {
            non_exhaustive: false,
        })
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on {SHIM_HEADER}: {e}")))
        .write_to_file(out.join("sapi_bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}

fn link_libphp(php: &PhpInstall) {
    let lib_dir = php.lib_dir.display();
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=dylib={}", php.lib_name());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!(
        "cargo:rustc-env=TOKIO_PHP_PHP_CONFIG={}",
        php.php_config.display()
    );
}

fn run(php_config: &Path, arg: &str) -> String {
    let output = Command::new(php_config).arg(arg).output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run `{} {arg}`: {e}. Run scripts/build-php.sh (or `make php`) to build a ZTS PHP, \
             or set PHP_CONFIG to a ZTS php-config.",
            php_config.display()
        ))
    });
    if !output.status.success() {
        fail(&format!("`{} {arg}` failed", php_config.display()));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
