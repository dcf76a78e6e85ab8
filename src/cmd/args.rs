//! Value parsers shared by the commands' flags: a bad value is a usage error
//! (exit code 2) that names the flag.

use homeostat_core::duration::PromDuration;

/// `--coverage`: a probability strictly between 0 and 1 (else a usage error).
pub fn coverage(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if c > 0.0 && c < 1.0 => Ok(c),
        Ok(c) => Err(format!("must be in (0, 1), got {c}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A score threshold: above 0 and at most 1 (else a usage error).
pub fn score_threshold(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 1.0 => Ok(t),
        Ok(t) => Err(format!("must be above 0 and at most 1, got {t}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration flag that must be longer than zero (`1m`, `7d`, …).
pub fn positive_duration(text: &str) -> Result<PromDuration, String> {
    let duration: PromDuration = text.parse().map_err(|e| format!("{e}"))?;
    if duration.0.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A count of at least one (`simulate --episodes`).
#[cfg(feature = "lab")]
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
