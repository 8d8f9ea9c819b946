-- The notes app's own tables, beside latchkey's in the same database. One schema for SQLite and
-- PostgreSQL, as latchkey does it: ids as UUID text, times as BIGINT epoch milliseconds.
-- Versions are timestamps: they cannot collide with latchkey's 0001, 0002, … in the one
-- `_sqlx_migrations` table.

-- One workspace per user, created in the signup transaction by the `account_created` hook.
-- `owner_id` is latchkey's `user.id`; the app keeps no foreign key into latchkey's tables (they
-- are latchkey's to change), and removes its rows in the `account_deleting` hook instead.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT workspaces_slug_key UNIQUE (slug)
);

CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX notes_workspace_id ON notes (workspace_id, created_at);
