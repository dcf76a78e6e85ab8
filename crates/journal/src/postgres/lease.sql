-- Schema version 2: the lease that elects the one homeostat that acts when
-- several share this database (crates/journal/src/postgres/lease.rs). Times
-- are the database's own clock, so replicas' clocks need not agree.
CREATE TABLE leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- Who holds it, for people: host name and process id.
    holder TEXT NOT NULL,
    -- The fencing token: one more at every takeover.
    term BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
