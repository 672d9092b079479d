//! The Kubernetes manifests in `deploy/kubernetes/`, checked without a cluster:
//! kubernetes-validate accepts every resource in strict mode against one Kubernetes version (and
//! rejects a broken one, so it is known to run), each kustomization lists exactly the resource
//! files beside it, and the numbers that must agree do — between the manifests, the Dockerfile
//! and `docker/php.ini`.
//!
//! kubernetes-validate is a peer `scripts/install-deps.sh` installs (PyPI, into the tools cache);
//! the tests that run it fail, saying so, when it is missing. The manifests are YAML read with
//! serde_yaml, a dev-dependency already.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{binary, Server};
use common::{json, Proto};
use serde_yaml::Value;

/// The Kubernetes version whose schemas the manifests must match: the newest that the installed
/// kubernetes-validate (1.37.0) bundles, so that a field removed or renamed in a current
/// Kubernetes fails here. kubernetes-validate keeps a dozen versions' schemas, so a newer
/// release still has this one; one without it stops with `FATAL … does not support`.
const KUBERNETES_VERSION: &str = "1.37";

/// How long one kubernetes-validate run may take (it takes well under a second).
const VALIDATE_LIMIT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a YAML file, empty ones left out (as kubectl and kubernetes-validate do).
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// The one resource of a manifest file (one resource per file).
fn resource(relative: &str) -> Value {
    let path = manifests_dir().join(relative);
    let mut documents = documents(&path);
    assert_eq!(documents.len(), 1, "{relative} holds one resource");
    documents.remove(0)
}

/// Every YAML file under deploy/kubernetes/, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// The resource manifests: every YAML file but kustomize's own (Kustomization, Component).
fn manifest_files() -> Vec<PathBuf> {
    yaml_files(&manifests_dir())
        .into_iter()
        .filter(|path| !is_kustomization(path))
        .collect()
}

/// kubernetes-validate in strict mode (unknown fields are errors) against
/// [`KUBERNETES_VERSION`]: its exit status and everything it printed.
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let program = common::require_program(
        "kubernetes-validate",
        "PyPI kubernetes-validate, into the tools cache",
    );
    let output = common::run_bounded(
        Command::new(program)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .args(files),
        VALIDATE_LIMIT,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn kubernetes_validate_accepts_every_manifest_in_strict_mode() {
    let files = manifest_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(manifests_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for expected in [
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
        "horizontalpodautoscaler.yaml",
        "configmap-php-ini.yaml",
        "redis/redis-deployment.yaml",
        "redis/redis-service.yaml",
        "tls/secret-tls.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let (success, output) = kubernetes_validate(&files);
    assert!(success, "kubernetes-validate:\n{output}");
    // A kind it has no schema for is only a warning (exit 0): every resource must have passed.
    for line in output.lines() {
        assert!(line.starts_with("INFO "), "not a pass: {line}\n{output}");
        assert!(
            line.ends_with(&format!("against version {KUBERNETES_VERSION}")),
            "{line}"
        );
    }
    let resources: usize = files.iter().map(|f| documents(f).len()).sum();
    let passed = output.lines().filter(|l| l.contains(" passed ")).count();
    assert_eq!(passed, resources, "{output}");
}

#[test]
fn kubernetes_validate_rejects_a_broken_manifest() {
    // The real Deployment (which passes, above) with one mistake each.
    let deployment = read(&manifests_dir().join("deployment.yaml"));
    let replicas = regex::Regex::new(r"(?m)^  replicas: \d+$").unwrap();
    assert!(
        replicas.is_match(&deployment),
        "deployment.yaml sets replicas"
    );
    let broken = [
        (
            replicas
                .replace(&deployment, "  replicas: \"two\"")
                .into_owned(),
            "spec.replicas: 'two' is not of type 'integer'",
        ),
        (
            // A misspelt field, which only strict mode catches.
            deployment.replacen("\nspec:\n", "\nspec:\n  replica: 2\n", 1),
            "'replica' was unexpected",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (manifest, complaint)) in broken.iter().enumerate() {
        assert_ne!(manifest, &deployment);
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        let (success, output) = kubernetes_validate(&[path]);
        assert!(!success, "broken-{i}.yaml passed:\n{output}");
        assert!(
            output.contains("ERROR") && output.contains(complaint),
            "broken-{i}.yaml: {output}"
        );
    }
}

/// The `resources:` of a kustomization file.
fn kustomization_resources(kustomization: &Value) -> BTreeSet<String> {
    kustomization["resources"]
        .as_sequence()
        .expect("a resources list")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// The resource files beside a kustomization file.
fn resource_files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && !is_kustomization(path))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn each_kustomization_lists_exactly_the_resource_files_beside_it() {
    let base_dir = manifests_dir();
    let base = documents(&base_dir.join("kustomization.yaml")).remove(0);
    assert_eq!(base["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(base["kind"], "Kustomization");
    assert_eq!(kustomization_resources(&base), resource_files_in(&base_dir));
    // Namespace-agnostic: `kubectl apply -k … -n NAME` or an overlay chooses it.
    assert!(base["namespace"].is_null(), "{base:?}");
    let labels = &base["labels"][0];
    assert_eq!(labels["pairs"]["app.kubernetes.io/name"], "tokio-php");

    // Every subdirectory is an optional component, listing its own files.
    let mut components = Vec::new();
    for entry in std::fs::read_dir(&base_dir).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let kustomization = dir.join("kustomization.yaml");
        assert!(
            kustomization.is_file(),
            "{} has no kustomization",
            dir.display()
        );
        let component = documents(&kustomization).remove(0);
        assert_eq!(component["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
        assert_eq!(component["kind"], "Component", "{}", dir.display());
        assert_eq!(kustomization_resources(&component), resource_files_in(&dir));
        components.push(dir.file_name().unwrap().to_string_lossy().into_owned());
    }
    components.sort();
    assert_eq!(components, ["redis", "tls"]);

    // Every resource carries the label and names no namespace.
    for file in manifest_files() {
        for document in documents(&file) {
            assert_eq!(
                document["metadata"]["labels"]["app.kubernetes.io/name"],
                "tokio-php",
                "{}",
                file.display()
            );
            assert!(
                document["metadata"]["namespace"].is_null(),
                "{}",
                file.display()
            );
        }
    }
}

/// The tokio-php container of a Deployment (or of a Deployment patch).
fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn server_container(deployment: &Value) -> &Value {
    container(deployment, "tokio-php")
}

/// The value of an environment variable of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the container's env"))["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is a string"))
}

fn int(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {value:?}"))
}

/// The port of `IP:port`.
fn addr_port(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {addr}"))
}

/// The container port a probe or Service names, by name or number.
fn container_port(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => int(&container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]),
        other => panic!("not a port: {other:?}"),
    }
}

/// The seconds of the preStop sleep: `exec: sleep N` or the native `sleep: {seconds: N}`.
fn pre_stop_sleep(container: &Value) -> u64 {
    let pre_stop = &container["lifecycle"]["preStop"];
    if let Some(command) = pre_stop["exec"]["command"].as_sequence() {
        let words: Vec<&str> = command.iter().map(|w| w.as_str().unwrap()).collect();
        match words.as_slice() {
            ["sleep", seconds] => seconds.parse().expect("whole seconds"),
            other => panic!("preStop runs {other:?}, not a sleep"),
        }
    } else {
        int(&pre_stop["sleep"]["seconds"])
    }
}

#[test]
fn the_shutdown_fits_in_the_grace_period() {
    let deployment = resource("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = server_container(&deployment);
    let grace = int(&pod["terminationGracePeriodSeconds"]);
    let sleep = pre_stop_sleep(container);
    let drain: u64 = env(container, "DRAIN_TIMEOUT_SECS").parse().unwrap();
    assert!(sleep > 0, "a preStop sleep lets the endpoints update first");
    // The preStop hook runs inside the grace period, then SIGTERM starts the drain, which ends
    // with the process's exit: both must fit, with a margin, before the kubelet kills.
    assert!(
        grace > sleep + drain,
        "terminationGracePeriodSeconds {grace} <= preStop {sleep} + DRAIN_TIMEOUT_SECS {drain}"
    );
    // A draining pod answers 503 on /health: its liveness probe must not fail it before it exits.
    let liveness = &container["livenessProbe"];
    let to_restart = int(&liveness["periodSeconds"]) * int(&liveness["failureThreshold"]);
    assert!(
        to_restart > grace,
        "the liveness probe restarts after {to_restart} s, within the grace period ({grace} s)"
    );
    // Rolling updates never take a serving pod away before its replacement is ready.
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(int(&rolling["maxUnavailable"]), 0);
    assert_eq!(int(&rolling["maxSurge"]), 1);
}

#[test]
fn the_probes_and_the_service_use_the_right_ports() {
    let deployment = resource("deployment.yaml");
    let container = server_container(&deployment);
    let internal = addr_port(env(container, "INTERNAL_ADDR"));
    let public = addr_port(env(container, "LISTEN_ADDR"));
    assert_ne!(internal, public);
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/health", "{probe}");
        assert_eq!(container_port(container, &get["port"]), internal, "{probe}");
    }
    // The Service sends to the public port only, and selects exactly the Deployment's pods.
    let service = resource("service.yaml");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(int(&ports[0]["port"]), 80);
    assert_eq!(container_port(container, &ports[0]["targetPort"]), public);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(&service["spec"]["selector"], selector);
    assert_eq!(
        &deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        &Value::String(internal.to_string())
    );
    for (key, value) in selector.as_mapping().unwrap() {
        assert_eq!(&pod_labels[key.as_str().unwrap()], value);
    }
    // The disruption budget and the autoscaler cover the same pods.
    let budget = resource("poddisruptionbudget.yaml");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], selector);
    let autoscaler = resource("horizontalpodautoscaler.yaml");
    assert_eq!(autoscaler["apiVersion"], "autoscaling/v2");
    let target = &autoscaler["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    assert!(int(&autoscaler["spec"]["minReplicas"]) > int(&budget["spec"]["maxUnavailable"]));
}

/// A php.ini directive's value as docker/php.ini sets it.
fn php_ini_value(php_ini: &str, directive: &str) -> Option<String> {
    php_ini.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        (name.trim() == directive).then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Bytes of a php.ini size (`128M`) or a Kubernetes quantity (`768Mi`, `1Gi`).
fn bytes(size: &str) -> u64 {
    let split = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("a size: {size}"));
    let factor = match unit {
        "" => 1,
        "K" | "Ki" => 1 << 10,
        "M" | "Mi" => 1 << 20,
        "G" | "Gi" => 1 << 30,
        other => panic!("unit {other} of {size}"),
    };
    number * factor
}

#[test]
fn the_configmap_is_docker_php_ini_and_the_pod_loads_it() {
    let php_ini = read(&repo().join("docker/php.ini"));
    let config_map = resource("configmap-php-ini.yaml");
    assert_eq!(
        config_map["data"]["php.ini"]
            .as_str()
            .expect("a php.ini key"),
        php_ini,
        "configmap-php-ini.yaml differs from docker/php.ini: copy it over"
    );
    let deployment = resource("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume of the ConfigMap");
    let container = server_container(&deployment);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap is mounted");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        env(container, "PHP_INI"),
        format!("{}/php.ini", mount["mountPath"].as_str().unwrap())
    );
}

#[test]
fn the_pod_runs_as_the_image_user_on_a_read_only_root() {
    let dockerfile = read(&repo().join("Dockerfile"));
    let user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the Dockerfile has a USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (u64, u64) = (uid.parse().unwrap(), gid.parse().unwrap());

    let deployment = resource("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = server_container(&deployment);
    for context in [&pod["securityContext"], &container["securityContext"]] {
        assert_eq!(context["runAsNonRoot"], true);
        assert_eq!(int(&context["runAsUser"]), uid);
        assert_eq!(int(&context["runAsGroup"]), gid);
        assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
    }
    let context = &container["securityContext"];
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["capabilities"]["drop"][0], "ALL");

    // What is writable: the emptyDir mounts.
    let empty_dirs: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|mount| {
            pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v["name"] == mount["name"] && v["emptyDir"].is_mapping())
        })
        .map(|mount| mount["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        empty_dirs.contains(&"/tmp"),
        "/tmp is an emptyDir: {empty_dirs:?}"
    );
    // Every place docker/php.ini tells PHP to write is on one of them (unset, they default to
    // the temporary directory, /tmp).
    let php_ini = read(&repo().join("docker/php.ini"));
    for directive in [
        "upload_tmp_dir",
        "sys_temp_dir",
        "session.save_path",
        "opcache.file_cache",
        "opcache.lockfile_path",
        "error_log",
    ] {
        if let Some(path) = php_ini_value(&php_ini, directive).filter(|p| !p.is_empty()) {
            assert!(
                empty_dirs.iter().any(|dir| path.starts_with(dir)),
                "{directive} = {path} is not on an emptyDir ({empty_dirs:?})"
            );
        }
    }
}

#[test]
fn the_resources_fit_the_worker_pool() {
    let deployment = resource("deployment.yaml");
    let container = server_container(&deployment);
    let workers: u64 = env(container, "PHP_WORKERS").parse().unwrap();
    assert!(
        workers > 0,
        "PHP_WORKERS is set explicitly: the pod sees the node's cores"
    );
    let cpu = container["resources"]["requests"]["cpu"].as_str().unwrap();
    let millicores = match cpu.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap(),
        None => cpu.parse::<u64>().unwrap() * 1000,
    };
    assert_eq!(
        millicores,
        workers * 1000,
        "one requested CPU per PHP worker"
    );
    // The worst case: every worker at memory_limit, plus OPcache's and the JIT's shared memory.
    let php_ini = read(&repo().join("docker/php.ini"));
    let ini = |d: &str| php_ini_value(&php_ini, d).unwrap_or_else(|| panic!("php.ini sets {d}"));
    let worst = workers * bytes(&ini("memory_limit"))
        + bytes(&ini("opcache.memory_consumption")) * (1 << 20)
        + bytes(&ini("opcache.jit_buffer_size"));
    let resources = &container["resources"];
    let request = bytes(resources["requests"]["memory"].as_str().unwrap());
    let limit = bytes(resources["limits"]["memory"].as_str().unwrap());
    assert!(request >= worst, "memory request {request} < {worst}");
    assert_eq!(limit, request, "memory is not overcommitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_environment_starts_the_server() {
    let deployment = resource("deployment.yaml");
    let container = server_container(&deployment);
    let mut command = binary();
    for variable in container["env"].as_sequence().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let value = variable["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a string value"));
        command.env(name, value);
    }
    // The pod's php.ini (the ConfigMap's) and paths, and loopback addresses, on this machine.
    // The image preloads /var/www/html/preload.php as www-data; here the same sample, as root.
    let dir = tempfile::tempdir().unwrap();
    let php_ini = dir.path().join("php.ini");
    let config_map = resource("configmap-php-ini.yaml");
    std::fs::write(&php_ini, config_map["data"]["php.ini"].as_str().unwrap()).unwrap();
    let www = repo().join("www");
    command
        .env("PHP_INI", &php_ini)
        .env("PHP_INI_OPCACHE__PRELOAD", www.join("preload.php"))
        .env("PHP_INI_OPCACHE__PRELOAD_USER", "root")
        .env("DOCUMENT_ROOT", &www)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("INTERNAL_ADDR", "127.0.0.1:0");
    let server = Server::start(&mut command);
    assert_eq!(server.get(Proto::Http1, "/").await.status(), 200);
    let health = json(&server.internal_get("/health").await);
    assert_eq!(health["status"], "ok", "{health}");
    // The settings took effect as written.
    let config = json(&server.internal_get("/config").await);
    for (setting, variable) in [
        ("drain_timeout_secs", "DRAIN_TIMEOUT_SECS"),
        ("php_workers", "PHP_WORKERS"),
    ] {
        assert_eq!(
            config[setting].to_string(),
            env(container, variable),
            "{config}"
        );
    }
    assert_eq!(config["access_log"], true, "{config}");
    let trusted = env(container, "TRUSTED_PROXIES");
    assert!(
        config["trusted_proxies"].to_string().contains(trusted),
        "{trusted} in {config}"
    );
    assert!(server.terminate().success());
}

/// The inline patches of a component's kustomization, parsed.
fn component_patches(component: &str) -> Vec<(Value, Value)> {
    let path = manifests_dir().join(component).join("kustomization.yaml");
    documents(&path).remove(0)["patches"]
        .as_sequence()
        .expect("patches")
        .iter()
        .map(|patch| {
            let text = patch["patch"].as_str().expect("an inline patch");
            let parsed: Value = serde_yaml::from_str(text).unwrap();
            (patch["target"].clone(), parsed)
        })
        .collect()
}

/// The component's patch of the tokio-php Deployment, checked to aim at the base's.
fn deployment_patch(component: &str) -> Value {
    let deployment = resource("deployment.yaml");
    let (target, patch) = component_patches(component)
        .into_iter()
        .find(|(target, _)| target["kind"] == "Deployment")
        .expect("a Deployment patch");
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    assert_eq!(patch["metadata"]["name"], deployment["metadata"]["name"]);
    // Strategic merge matches containers by name: the patch's must be the base's.
    for patched in patch["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
    {
        container(&deployment, patched["name"].as_str().unwrap());
    }
    patch
}

#[test]
fn the_redis_component_points_sessions_at_its_redis() {
    let patch = deployment_patch("redis");
    let container = server_container(&patch);
    assert_eq!(env(container, "PHP_INI_SESSION__SAVE_HANDLER"), "redis");
    let save_path = env(container, "PHP_INI_SESSION__SAVE_PATH");

    let service = resource("redis/redis-service.yaml");
    let redis = resource("redis/redis-deployment.yaml");
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        save_path,
        format!(
            "tcp://{}:{}",
            service["metadata"]["name"].as_str().unwrap(),
            int(&port["port"])
        )
    );
    let redis_container = container_of_only(&redis);
    assert_eq!(container_port(redis_container, &port["targetPort"]), 6379);
    // The Service selects the Redis pod, and the tokio-php Service does not.
    let labels = &redis["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key.as_str().unwrap()], value);
    }
    let server_selector = &resource("service.yaml")["spec"]["selector"];
    assert!(
        server_selector
            .as_mapping()
            .unwrap()
            .iter()
            .any(|(key, value)| &labels[key.as_str().unwrap()] != value),
        "the tokio-php Service would select the Redis pod"
    );
    // Sessions only, nothing on disk, as the image's user.
    let args: Vec<&str> = redis_container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--save", ""]), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "no"]),
        "{args:?}"
    );
    let context = &redis_container["securityContext"];
    assert_eq!(context["runAsNonRoot"], true);
    assert_eq!(context["readOnlyRootFilesystem"], true);
}

fn container_of_only(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

#[test]
fn the_tls_component_mounts_its_secret_where_tls_cert_and_tls_key_point() {
    let secret = resource("tls/secret-tls.yaml");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let patch = deployment_patch("tls");
    let volume = patch["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret["metadata"]["name"])
        .expect("a volume of the Secret");
    let container = server_container(&patch);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret is mounted");
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().unwrap();
    for (variable, key) in [("TLS_CERT", "tls.crt"), ("TLS_KEY", "tls.key")] {
        assert!(secret["data"][key].is_string(), "the Secret has {key}");
        assert_eq!(env(container, variable), format!("{dir}/{key}"));
    }
    // The key is readable by the server's group only (fsGroup), not by everyone.
    let mode = int(&volume["secret"]["defaultMode"]);
    assert_eq!(mode & 0o007, 0, "defaultMode {mode:o}");
    let base = resource("deployment.yaml");
    assert_eq!(
        int(&base["spec"]["template"]["spec"]["securityContext"]["fsGroup"]),
        int(&server_container(&base)["securityContext"]["runAsGroup"])
    );

    // The public port, renamed https, is what the Service's patched port targets.
    let public = addr_port(env(server_container(&base), "LISTEN_ADDR"));
    let https = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| int(&p["containerPort"]) == public)
        .expect("the public port is renamed");
    let (_, service_patch) = component_patches("tls")
        .into_iter()
        .find(|(target, _)| target["kind"] == "Service")
        .expect("a Service patch");
    let operation = &service_patch[0];
    assert_eq!(operation["op"], "replace");
    assert_eq!(operation["path"], "/spec/ports/0");
    assert_eq!(int(&operation["value"]["port"]), 443);
    assert_eq!(operation["value"]["targetPort"], https["name"]);
}
