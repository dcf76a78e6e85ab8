-- Schema version 3: the anomaly detectors' state (crates/journal/src/anomaly.rs).
CREATE TABLE anomaly_state (
    spec TEXT NOT NULL,
    series TEXT NOT NULL,
    last_point BIGINT NOT NULL,
    saved_at TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    PRIMARY KEY (spec, series)
);
