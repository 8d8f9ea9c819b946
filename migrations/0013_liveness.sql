-- A counter of the transactions that ended a session or changed an account, bumped inside each
-- of them on SQLite and polled by every server on the file: how a server learns that another
-- process (the CLI) revoked something it may hold in its liveness cache (src/store/liveness.rs).
-- PostgreSQL does not use it (NOTIFY tells the other instances), but the schema is one.
CREATE TABLE liveness_epoch (
    id INTEGER PRIMARY KEY,
    changes BIGINT NOT NULL
);

INSERT INTO liveness_epoch (id, changes) VALUES (1, 0);
