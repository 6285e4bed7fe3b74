//! A PostgreSQL server of its own for a test: `initdb` in a temporary
//! directory, `pg_ctl` on a free port, stopped and removed on drop. The
//! binaries come from Debian's `postgresql` package
//! (`scripts/install-deps.sh`); as root the server runs as the
//! `postgres` user, which PostgreSQL requires.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// `/usr/lib/postgresql/<newest>/bin`, else `pg_config --bindir`.
fn bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let b = e.path().join("bin");
            b.join("initdb").exists().then_some((v, b))
        })
        .collect();
    found.sort();
    if let Some((_, b)) = found.pop() {
        return b;
    }
    let o = Command::new("pg_config").arg("--bindir").output();
    match o {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!("no PostgreSQL server binaries (run ./scripts/install-deps.sh, or ./scripts/test.sh which does)"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Pg {
    pub fn start() -> Pg {
        let dir = tempfile::tempdir().unwrap();
        let bin = bindir();
        let port = crate::common::free_port();
        let pg = Pg { dir, bin, port };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the data directory to postgres");
        }
        let out = pg.as_server_user(
            &pg.bin.join("initdb"),
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_server_user(&self, prog: &Path, args: &[&str]) -> Output {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            Command::new(prog)
        };
        c.args(args).current_dir(self.dir.path()).output().unwrap()
    }

    /// Starts the server (again, after [`Pg::stop`]) and waits until it answers.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let out = self.as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let t0 = Instant::now();
        while !self.psql_raw("postgres", "SELECT 1").status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "PostgreSQL does not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let out = self.as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The connection string of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub fn create_db(&self, db: &str) {
        let o = self.psql_raw("postgres", &format!("CREATE DATABASE {db}"));
        assert!(
            o.status.success(),
            "CREATE DATABASE {db}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn psql_raw(&self, db: &str, sql: &str) -> Output {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args([
                "-X",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql (Debian package postgresql-client)")
    }

    /// Rows of a query, each a list of its columns as psql prints them
    /// (`""` for NULL).
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        let o = self.psql_raw(db, sql);
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }
}

impl Pg {
    /// Every kpi_history row, ordered, with times in ms since the epoch
    /// (everything but `updated_at`).
    pub fn kpi_rows(&self, db: &str) -> Vec<Vec<String>> {
        self.query(
            db,
            "SELECT kpi, window_kind, (extract(epoch FROM window_start) * 1000)::bigint,
                    dimensions::text, breakdown, (extract(epoch FROM window_end) * 1000)::bigint,
                    window_label, value, numerator, denominator, sample_size, unit, final, revision
             FROM salespulse.kpi_history ORDER BY 1, 2, 3, 4",
        )
    }

    /// Every leaderboard_history row, ordered.
    pub fn board_rows(&self, db: &str) -> Vec<Vec<String>> {
        self.query(
            db,
            "SELECT board, window_kind, (extract(epoch FROM window_start) * 1000)::bigint,
                    window_label, entries::text, final, revision
             FROM salespulse.leaderboard_history ORDER BY 1, 2, 3",
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}
