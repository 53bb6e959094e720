-- The schema of registry/registry.db, written by `fn index`.
--
-- The database is generated: never edit it, re-run `cargo fn index`. The schema
-- version is `PRAGMA user_version`; `fn` refuses a database of another version.
-- Query it directly with `sqlite3 registry/registry.db` (see registry/README.md).

PRAGMA user_version = 1;

-- Facts about the index run: schema_version, root, indexed_at (unix seconds),
-- entries, tool_version.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per entry (function, type or component).
CREATE TABLE entries (
    rowid            INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,       -- <name>_<lang>_<domain>
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('function', 'type', 'component')),
    lang             TEXT NOT NULL,
    domain           TEXT NOT NULL,
    version          TEXT NOT NULL,              -- semver, as a string
    purity           TEXT NOT NULL CHECK (purity IN ('pure', 'impure')),
    signature        TEXT NOT NULL,
    description      TEXT NOT NULL,
    returns_optional INTEGER NOT NULL CHECK (returns_optional IN (0, 1)),
    error_type       TEXT,                       -- an entry id, NULL for none
    output           TEXT NOT NULL,
    tested           INTEGER NOT NULL CHECK (tested IN (0, 1)),
    test_file_path   TEXT,                       -- NULL for none
    file_path        TEXT NOT NULL,              -- the implementation, root-relative
    entry_path       TEXT NOT NULL,              -- the .md file, root-relative
    crate            TEXT,                       -- the Cargo package holding the code
    example          TEXT NOT NULL,              -- the `## Example` section
    notes            TEXT NOT NULL,              -- the `## Notes` section
    body             TEXT NOT NULL,              -- the whole Markdown body
    extra            TEXT NOT NULL DEFAULT '{}'  -- unknown frontmatter keys, as JSON
);
CREATE INDEX entries_name ON entries (name);

CREATE TABLE tags (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    tag      TEXT NOT NULL,
    PRIMARY KEY (entry_id, tag)
) WITHOUT ROWID;
CREATE INDEX tags_tag ON tags (tag);

CREATE TABLE params (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    position INTEGER NOT NULL,
    name     TEXT NOT NULL,
    desc     TEXT NOT NULL,
    PRIMARY KEY (entry_id, position)
) WITHOUT ROWID;

CREATE TABLE tests (
    entry_id    TEXT NOT NULL REFERENCES entries (id),
    position    INTEGER NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (entry_id, position)
) WITHOUT ROWID;

CREATE TABLE imports (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    package  TEXT NOT NULL,
    PRIMARY KEY (entry_id, package)
) WITHOUT ROWID;

-- Fields and variants of type entries.
CREATE TABLE members (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    role     TEXT NOT NULL CHECK (role IN ('field', 'variant')),
    position INTEGER NOT NULL,
    name     TEXT NOT NULL,
    type     TEXT NOT NULL,
    desc     TEXT NOT NULL,
    PRIMARY KEY (entry_id, role, position)
) WITHOUT ROWID;

-- The composition graph: from_id uses to_id. Every to_id exists (`fn index`
-- refuses dangling references).
CREATE TABLE refs (
    from_id TEXT NOT NULL REFERENCES entries (id),
    to_id   TEXT NOT NULL REFERENCES entries (id),
    rel     TEXT NOT NULL CHECK (rel IN ('uses_function', 'uses_type', 'returns', 'error_type')),
    PRIMARY KEY (from_id, to_id, rel)
) WITHOUT ROWID;
CREATE INDEX refs_to ON refs (to_id);

-- Full-text search, ranked with bm25. `name` holds the name and its words
-- (`ws_send ws send`, `SseEvent Sse Event`); rowid = entries.rowid.
CREATE VIRTUAL TABLE entries_fts USING fts5 (
    name, description, tags, signature, body,
    tokenize = 'unicode61 remove_diacritics 2'
);
