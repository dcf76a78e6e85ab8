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

/// The running server: its port and the shell that keeps it alive while
/// the shell's standard input, a pipe from this process, is open.
struct Server {
    port: u16,
    /// The one that runs the server, and any whose server found its port
    /// taken (each removes the directory only when this process ends).
    _shells: Vec<std::process::Child>,
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

/// The password of the servers' `homeostat` user: connections over TCP
/// must give it (scram-sha-256), so a journal that drops its password fails.
pub const PASSWORD: &str = "homeostat-test-password";

fn start(durable: bool) -> Server {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("homeostat-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let dir_str = dir.to_str().expect("a UTF-8 temporary path").to_owned();
    let user = as_postgres();
    std::fs::write(dir.join("pwfile"), PASSWORD).expect("the password file");
    if !user.is_empty() {
        let status = Command::new("chown").args(["-R", "postgres:", &dir_str]).status();
        assert!(status.is_ok_and(|s| s.success()), "chown postgres {dir_str} failed");
    }
    let bin = bin.to_str().expect("a UTF-8 path");
    let output = Command::new("sh")
        .args([
            "-c",
            &format!(
                "{user}{bin}/initdb -D {dir_str}/data -U homeostat --pwfile={dir_str}/pwfile \
                 --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync"
            ),
        ])
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The port is free when asked for, and may be taken before the server
    // binds it: then the server exits, and another port is tried.
    let mut shells = Vec::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        // Stopped, and its directory removed, once standard input closes.
        let script = format!(
            "{user}{bin}/postgres -D {dir_str}/data -p {port} -k {dir_str} -c listen_addresses=127.0.0.1 \
             -c max_connections=400 {unsafe_speed} \
             >{dir_str}/log.{port} 2>&1 & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; rm -rf {dir_str}",
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
        let started = ready(&dir, port);
        shells.push(shell);
        if started {
            return Server { port, _shells: shells };
        }
        // The next server starts once this one has left the data directory.
        let deadline = Instant::now() + Duration::from_secs(30);
        while dir.join("data/postmaster.pid").exists() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not exit after failing to bind"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("PostgreSQL did not start on any of 5 ports (logs in {dir_str})")
}

/// Whether the server started on `port` accepts connections, by its own
/// account (postmaster.pid: the port on line 4, "ready" on line 8); false
/// when it could not bind the port. Panics after 30 s.
fn ready(dir: &std::path::Path, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid_file = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
        let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
        if lines.get(3) == Some(&port.to_string().as_str()) && lines.get(7) == Some(&"ready") {
            return true;
        }
        let log = std::fs::read_to_string(dir.join(format!("log.{port}"))).unwrap_or_default();
        if log.contains("could not bind") || log.contains("could not create any TCP/IP sockets") {
            return false;
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not start in 30 s:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The URL (without the password, [`PASSWORD`]) of a new, empty database
/// of its own on the tests' server.
pub async fn database() -> String {
    create(SERVER.get_or_init(|| start(false))).await
}

/// The same on a server that syncs every commit.
pub async fn durable_database() -> String {
    create(DURABLE.get_or_init(|| start(true))).await
}

async fn create(server: &Server) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(server.port)
        .user("homeostat")
        .password(PASSWORD)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("a connection to the test PostgreSQL");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = connection.await;
    format!("postgres://homeostat@127.0.0.1:{}/{name}", server.port)
}
