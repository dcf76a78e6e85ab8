//! What the benchmarks that run the real binary share.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Starts `homeostat serve --config config` (the binary under benchmark)
/// with `--log-level log_level`; returns it and the address it listens on,
/// from its "Listening." log line.
pub fn serve(config: &Path, log_level: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_homeostat"))
        .args(["--log-format", "json", "--log-level", log_level, "serve", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(log) = serde_json::from_str::<Value>(&line) {
                if log["message"] == "Listening." {
                    let _ = tx.send(log["address"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("homeostat did not start");
    (child, addr)
}
