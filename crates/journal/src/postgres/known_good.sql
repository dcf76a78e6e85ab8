-- Schema version 4: known good specs (crates/journal/src/known_good.rs).
CREATE TABLE known_good (
    instance TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    healthy_since TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
