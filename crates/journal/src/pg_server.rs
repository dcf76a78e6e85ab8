//! A PostgreSQL server for the tests: Debian's `postgresql-15` binaries,
//! `initdb` in a temporary directory, listening on a free loopback port,
//! started once per test process. Each test gets a database of its own.
//! The tests' server does not sync to disk; the benchmarks' durable one
//! runs with PostgreSQL's defaults (fsync, synchronous commit).
//!
//! The server runs under a shell that stops it (and removes its directory)
//! when the test process' end closes the shell's standard input, so no
//! server outlives the tests, however they end.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running server: its base URL and the shell that keeps it alive
/// while the shell's standard input, a pipe from this process, is open.
struct Server {
    /// `postgres://homeostat@127.0.0.1:PORT`
    base: String,
    _shell: std::process::Child,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static DURABLE: OnceLock<Server> = OnceLock::new();

/// The directory of `initdb` and `postgres`: `HOMEOSTAT_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOMEOSTAT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb): \
             install Debian's postgresql-15 (tests/run.sh does), or set HOMEOSTAT_PG_BIN"
        )
    })
}

/// PostgreSQL refuses to run as root: as root, its programs run as the
/// `postgres` user the Debian package creates (`setpriv` execs the program
/// itself, so the shell's `$!` is the server).
fn as_postgres() -> &'static str {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        "setpriv --reuid=postgres --regid=postgres --init-groups "
    } else {
        ""
    }
}

fn start(durable: bool) -> Server {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("homeostat-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let dir_str = dir.to_str().expect("a UTF-8 temporary path").to_owned();
    let user = as_postgres();
    if !user.is_empty() {
        let status = Command::new("chown").args(["postgres:", &dir_str]).status();
        assert!(status.is_ok_and(|s| s.success()), "chown postgres {dir_str} failed");
    }
    let bin = bin.to_str().expect("a UTF-8 path");
    let run = |script: &str| {
        Command::new("sh")
            .args(["-c", &format!("{user}{bin}/{script}")])
            .output()
            .expect("sh runs")
    };
    let output = run(&format!(
        "initdb -D {dir_str}/data -A trust -U homeostat -E UTF8 --locale=C --no-sync"
    ));
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    // Stopped, and its directory removed, once standard input closes.
    let script = format!(
        "{user}{bin}/postgres -D {dir_str}/data -p {port} -k {dir_str} -c listen_addresses=127.0.0.1 \
         -c max_connections=400 {unsafe_speed} \
         >{dir_str}/log 2>&1 & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; rm -rf {dir_str}",
        unsafe_speed = if durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        }
    );
    let shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(format!("{dir_str}/log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "PostgreSQL did not start in 30 s:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        base: format!("postgres://homeostat@127.0.0.1:{port}"),
        _shell: shell,
    }
}

/// The URL of a new, empty database of its own on the tests' server.
pub async fn database() -> String {
    create(SERVER.get_or_init(|| start(false))).await
}

/// The URL of a new, empty database on a server that syncs every commit.
pub async fn durable_database() -> String {
    create(DURABLE.get_or_init(|| start(true))).await
}

async fn create(server: &Server) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, connection) = loop {
        // The port opens a moment before the server takes connections.
        match tokio_postgres::connect(&format!("{}/postgres", server.base), tokio_postgres::NoTls).await {
            Ok(connected) => break connected,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "PostgreSQL not ready yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the test PostgreSQL: {e}"),
        }
    };
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = connection.await;
    format!("{}/{name}", server.base)
}
