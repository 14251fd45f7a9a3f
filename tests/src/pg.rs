//! A PostgreSQL server of a test's own, started by `scripts/postgres.sh` on a free port in a
//! temporary data directory, and stopped (its files removed) on drop.

use std::process::Command;

use crate::{root, run_script, TempDir};

/// A running PostgreSQL.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/sagaflow`.
    pub url: String,
    dir: TempDir,
}

impl Postgres {
    /// Starts one (installing PostgreSQL from Debian's packages if it is missing).
    pub fn start(name: &str) -> Self {
        let dir = TempDir::new(&format!("{name}-pg"));
        let url = postgres_sh(&["start".as_ref(), dir.path().as_os_str()]);
        Self { url, dir }
    }

    /// The server's directory (for `scripts/postgres.sh` and `scripts/connect.sh`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server and keeps its data: an outage, until [`Postgres::restart`].
    pub fn stop(&self) {
        let _ = postgres_sh(&["stop".as_ref(), self.dir.path().as_os_str()]);
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn restart(&self) {
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("a port in the URL");
        let _ = postgres_sh(&["start".as_ref(), self.dir.path().as_os_str(), port.as_ref()]);
    }

    /// A client on `schema`.
    pub fn client(&self, schema: &str) -> postgres::Client {
        let mut client =
            postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to PostgreSQL");
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .expect("set search_path");
        client
    }
}

/// Runs `scripts/postgres.sh` with `args` and returns what it printed (a start prints the URL).
/// A server it starts is stopped even if this test is killed before its drop runs.
fn postgres_sh(args: &[&std::ffi::OsStr]) -> String {
    let owner = std::process::id().to_string();
    run_script("postgres.sh", args, &[("SAGAFLOW_POSTGRES_OWNER", &owner)])
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/postgres.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
