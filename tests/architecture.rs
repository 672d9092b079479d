//! The module layout's rules (docs/architecture.md), read from the sources: dependencies
//! between the crate's parts point one way, and `unsafe` lives only in the FFI modules.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Each part of the crate with the parts it may use. A part is a top-level module (`src/x.rs`
/// or `src/x/`); the order is the layering, lowest first, and a part may only use parts listed
/// before it (cycles are impossible).
const LAYERS: &[(&str, &[&str])] = &[
    ("http", &[]),
    ("telemetry", &["http"]),
    ("php", &["http", "telemetry"]),
    ("layer", &["http", "telemetry"]),
    ("server", &["http", "telemetry"]),
    ("stub", &["http", "php"]),
    ("admin", &["http", "telemetry", "php", "server"]),
    ("config", &["http", "telemetry", "php", "layer", "server"]),
    ("stack", &["http", "telemetry", "layer", "stub", "config"]),
];

/// Parts outside the layering: the crate root (re-exports) and the fuzzing entry points, which
/// reach into every parser on purpose.
const UNLAYERED: &[&str] = &["lib", "fuzz"];

/// The only files that may contain `unsafe`.
const FFI_FILES: &[&str] = &["src/php/ffi.rs", "src/php/runtime.rs", "src/php/thread.rs"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The library's sources (not the binary's `main.rs`), relative to the crate, sorted.
fn library_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.retain(|f| !f.ends_with("src/main.rs"));
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .map(|f| f.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    files.sort();
    files
}

/// `src/layer/try_files/route.rs` → `["layer", "try_files", "route"]`; `mod.rs` is its directory.
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix("src")
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a source file with comments and string literals blanked, so that doc examples,
/// prose and messages do not count as dependencies.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            for rest in chars.by_ref() {
                if rest == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '"' {
            in_string = true;
            out.push('"');
        } else if c == '\'' {
            // A char literal such as '"' must not open a string; lifetimes pass through.
            out.push(c);
            let lookahead: String = chars.clone().take(3).collect();
            if lookahead.starts_with("\"'") || lookahead.starts_with("\\\"") {
                let skip = if lookahead.starts_with("\\\"") { 3 } else { 2 };
                for _ in 0..skip {
                    chars.next();
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The top-level parts `code` (in the module at `module`) refers to through `crate::` or a
/// `super::` chain that climbs out of its own part.
fn parts_used(module: &[String], code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b'$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            // `crate::{a, b}`: each name in the group.
            let group = rest.trim_start_matches('{');
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let item = item.trim();
                let first: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() {
                    used.insert(first);
                }
            }
        } else {
            used.insert(name);
        }
    }
    for (at, _) in code.match_indices("super::") {
        if at > 0 && (is_ident(bytes[at - 1]) || code[..at].ends_with("super::")) {
            continue;
        }
        let mut depth = 0;
        let mut rest = &code[at..];
        while let Some(after) = rest.strip_prefix("super::") {
            depth += 1;
            rest = after;
        }
        // A `mod tests` inside a file is one level deeper than the file itself.
        let in_test_module = code[..at].contains("mod tests {");
        let level = module.len() + usize::from(in_test_module);
        if depth >= level {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

fn top_level_modules() -> BTreeSet<String> {
    library_sources()
        .iter()
        .map(|f| module_path(f))
        .filter(|m| !m.is_empty())
        .map(|m| m[0].clone())
        .collect()
}

#[test]
fn every_part_of_the_crate_has_a_place_in_the_layering() {
    let known: BTreeSet<String> = LAYERS
        .iter()
        .map(|(name, _)| name.to_string())
        .chain(UNLAYERED.iter().map(|n| n.to_string()))
        .collect();
    let unplaced: Vec<String> = top_level_modules()
        .into_iter()
        .filter(|m| !known.contains(m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "add these modules to LAYERS in tests/architecture.rs and docs/architecture.md: {unplaced:?}"
    );
}

#[test]
fn the_layering_lists_only_lower_parts_as_allowed() {
    for (at, (name, allowed)) in LAYERS.iter().enumerate() {
        for dependency in *allowed {
            let position = LAYERS.iter().position(|(n, _)| n == dependency);
            assert!(
                position.is_some_and(|p| p < at),
                "{name} may use {dependency}, which is not below it in LAYERS"
            );
        }
    }
}

#[test]
fn dependencies_between_parts_point_one_way() {
    let parts = top_level_modules();
    let mut violations = Vec::new();
    for file in library_sources() {
        let module = module_path(&file);
        let Some(part) = module.first() else {
            continue; // lib.rs
        };
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| name == part) else {
            continue; // unlayered
        };
        let text = fs::read_to_string(&file).unwrap();
        for used in parts_used(&module, &code_only(&text)) {
            if &used == part {
                continue;
            }
            if !parts.contains(&used) {
                violations.push(format!(
                    "{}: uses crate::{used}, an item of the crate root; name its module instead",
                    file.display()
                ));
            } else if !allowed.contains(&used.as_str()) {
                violations.push(format!("{}: {part} must not use {used}", file.display()));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn unsafe_code_lives_only_in_the_ffi_modules() {
    let mut offenders = Vec::new();
    for file in library_sources() {
        let code = code_only(&fs::read_to_string(&file).unwrap());
        let has_unsafe = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == "unsafe");
        let path = file.to_string_lossy().into_owned();
        if has_unsafe && !FFI_FILES.contains(&path.as_str()) {
            offenders.push(path);
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe outside the FFI modules: {offenders:?}"
    );
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[lints.rust]\nunsafe_code = \"deny\""));
    assert!(manifest.contains("[lints.clippy]\nundocumented_unsafe_blocks = \"deny\""));
}

#[test]
fn the_checker_sees_crate_paths_and_super_chains_but_not_comments() {
    let module = vec![
        "layer".to_string(),
        "try_files".to_string(),
        "route".to_string(),
    ];
    let code = code_only(
        "use crate::http::Script;\n// crate::php::Hidden\nlet s = \"crate::stack\";\nuse crate::{telemetry::Metrics, config};\nuse super::super::super::server::X;\nuse super::rule::Y;\n",
    );
    let used = parts_used(&module, &code);
    let expected: BTreeSet<String> = ["http", "telemetry", "config", "server"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(used, expected);
}
