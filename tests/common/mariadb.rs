//! A private MariaDB server for one test: its own data directory and Unix socket in a temporary
//! directory, no TCP port, killed when dropped. `scripts/install-deps.sh` installs it.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::require_one_of;

/// How long the server may take to answer its first ping.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// A running `mariadbd` with one database and one user (with a password) allowed everything on
/// it, reachable only through [`MariaDb::socket`].
pub struct MariaDb {
    child: Child,
    client: PathBuf,
    pub socket: PathBuf,
    pub database: String,
    pub user: String,
    pub password: String,
    // Dropped after the server was killed (fields drop after `Drop::drop`).
    dir: TempDir,
}

impl MariaDb {
    /// Creates a data directory, starts the server and waits (bounded) until it answers, then
    /// creates the database and the user. Panics, saying how to install MariaDB, when it is
    /// missing.
    pub fn start() -> MariaDb {
        let server_package = "Debian package mariadb-server";
        let client_package = "Debian package mariadb-client";
        let install_db =
            require_one_of(&["mariadb-install-db", "mysql_install_db"], server_package);
        let server = require_one_of(&["mariadbd", "mysqld"], server_package);
        let admin = require_one_of(&["mariadb-admin", "mysqladmin"], client_package);
        let client = require_one_of(&["mariadb", "mysql"], client_package);

        // A short path: Unix socket paths are limited to about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("tokio_php-mariadb.")
            .tempdir_in("/tmp")
            .expect("a temporary directory for MariaDB");
        let datadir = dir.path().join("data");
        let socket = dir.path().join("mysql.sock");
        let error_log = dir.path().join("error.log");
        // mariadbd refuses to run as root unless told to; tests here usually run as root.
        let as_root = std::fs::metadata(dir.path()).unwrap().uid() == 0;

        // Small buffers and no fsync per commit: a throwaway server that starts in well under a
        // second and installs WordPress quickly.
        let tuning = [
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ];

        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            // root@localhost with a (still empty) password rather than unix_socket auth, so the
            // set-up below works whichever OS user runs the test.
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(tuning);
        if as_root {
            install.arg("--user=root");
        }
        let output = super::run_bounded(&mut install, STARTUP_DEADLINE);
        assert!(
            output.status.success(),
            "{} failed ({}):\n{}{}",
            install_db.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let mut command = Command::new(&server);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg("--skip-networking")
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--log-error={}", error_log.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .args(tuning)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if as_root {
            command.arg("--user=root");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let mut db = MariaDb {
            child,
            client,
            socket,
            database: "tokio_php".into(),
            user: "tokio_php".into(),
            password: "tokio_php-test-password".into(),
            dir,
        };

        // Ready when a ping over the socket succeeds; a server that exits instead fails at once
        // with its log.
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = db.child.try_wait().unwrap() {
                panic!(
                    "mariadbd exited during startup ({status}); its log:\n{}",
                    db.error_log()
                );
            }
            if db.socket.exists() {
                let ping = super::run_bounded(
                    Command::new(&admin)
                        .arg("--no-defaults")
                        .arg(format!("--socket={}", db.socket.display()))
                        .arg("--user=root")
                        .arg("--connect-timeout=2")
                        .arg("ping"),
                    Duration::from_secs(5),
                );
                if ping.status.success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer a ping within {STARTUP_DEADLINE:?}; its log:\n{}",
                db.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let setup = format!(
            "CREATE DATABASE `{db_name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}';
             GRANT ALL PRIVILEGES ON `{db_name}`.* TO '{user}'@'localhost';",
            db_name = db.database,
            user = db.user,
            password = db.password,
        );
        db.sql_as_root(&setup);
        db
    }

    /// Runs SQL as MariaDB's root over the socket; panics with the client's error.
    pub fn sql_as_root(&self, sql: &str) -> String {
        let output = super::run_bounded(
            Command::new(&self.client)
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket.display()))
                .arg("--user=root")
                .arg("--batch")
                .arg("--skip-column-names")
                .arg("-e")
                .arg(sql),
            Duration::from_secs(30),
        );
        assert!(
            output.status.success(),
            "SQL failed ({}): {sql}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The server's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The data is thrown away: no need for a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
