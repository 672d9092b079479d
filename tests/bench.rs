//! `make bench` keeps working: `bench/compare.sh` in its short form (`QUICK=1`: one round of one
//! second per workload and target) runs every workload — hello, the PHP-built page plain and
//! compressed, the CPU script, WordPress on its own MariaDB and the Symfony fixture's page, the
//! latter classic and in worker mode — against every peer (nginx + php-fpm, Apache + mod_php,
//! the stub) and this build of the binary, on loopback ports chosen here. The script itself fails on any error response, on peers that answer differently and on
//! a missing peer (naming the package); this test checks that it succeeded and that its summary
//! has a row for every workload and target.
//!
//! The figures of such a short run mean nothing and are not looked at.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

const PORT_VARIABLES: [&str; 10] = [
    "TOKIO_PORT",
    "STUB_PORT",
    "NGINX_PORT",
    "APACHE_PORT",
    "TOKIO_WP_PORT",
    "NGINX_WP_PORT",
    "APACHE_WP_PORT",
    "TOKIO_SF_PORT",
    "TOKIO_SF_WORKER_PORT",
    "NGINX_SF_PORT",
];

#[test]
fn the_benchmark_runs_every_workload_against_every_peer() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = tempfile::tempdir().unwrap();
    let mut command = Command::new(repo.join("bench/compare.sh"));
    command
        .env("QUICK", "1")
        .env("TOKIO_PHP_BIN", env!("CARGO_BIN_EXE_tokio_php"))
        .env("RESULTS_DIR", results.path())
        .env_remove("UPDATE_DOCS")
        .env_remove("WORKLOADS");
    for (variable, port) in PORT_VARIABLES
        .iter()
        .zip(common::free_ports(PORT_VARIABLES.len()))
    {
        command.env(variable, port.to_string());
    }
    let output = common::run_bounded(&mut command, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench/compare.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = std::fs::read_to_string(results.path().join("latest/summary.tsv"))
        .expect("the run wrote its summary");
    let all = &["tokio_php", "nginx+php-fpm", "apache+mod_php"][..];
    for (workload, targets) in [
        (
            "hello",
            &["tokio_php", "stub", "nginx+php-fpm", "apache+mod_php"][..],
        ),
        ("page", all),
        ("page-compressed", &["tokio_php", "nginx+php-fpm"]),
        ("cpu", all),
        ("wordpress", all),
        (
            "symfony",
            &["tokio_php", "tokio_php-worker", "nginx+php-fpm"],
        ),
    ] {
        for target in targets {
            assert!(
                summary.lines().any(|line| {
                    let mut fields = line.split('\t');
                    fields.next() == Some(workload) && fields.next() == Some(target)
                }),
                "no {workload} row for {target} in:\n{summary}"
            );
        }
    }
    assert!(
        results.path().join("latest/chart.svg").is_file(),
        "the chart was drawn"
    );
}
