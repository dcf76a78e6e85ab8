//! The bench report (stub until the report lands).
use std::path::Path;

use super::BenchReport;

pub fn write(report: &BenchReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")
}
