-- The schema of registry/registry.db, written by `fn index`.
--
-- The database is generated: never edit it, re-run `cargo fn index`. The schema
-- version is `PRAGMA user_version`; `fn` refuses a database of another version.
-- Query it directly with `sqlite3 registry/registry.db` (see registry/README.md).

PRAGMA user_version = 4;

-- Facts about the index run: schema_version, root (absolute), repository (the
-- workspace's `repository`, absent when it has none), indexed_at (unix seconds),
-- entries, functions, types, refs (counts), tool_version, sources_at (unix
-- nanoseconds when the run began reading files: see `sources`).
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
    extra            TEXT NOT NULL DEFAULT '{}'  -- unknown frontmatter keys, as JSON
);
-- Lookups by name (`fn show`), of the kind by ID without reading the row
-- (`fn deps`), and by crate and test file (`fn index` finding the entries of
-- a changed crate). Created with the table: filled row
-- by row, they cost less than a scan of the table each afterwards.
CREATE INDEX entries_name ON entries (name);
CREATE INDEX entries_kind ON entries (id, kind);
CREATE INDEX entries_crate ON entries (crate);
CREATE INDEX entries_test ON entries (test_file_path);

-- One row per Cargo package under crates/ (from its Cargo.toml), entries or not:
-- `fn show CRATE` and the lines to depend on a crate. Entries point here by `crate`.
CREATE TABLE crates (
    name        TEXT PRIMARY KEY,
    version     TEXT NOT NULL,              -- '' when the manifest has none
    description TEXT NOT NULL,              -- '' when the manifest has none
    path        TEXT NOT NULL               -- the crate folder, root-relative
) WITHOUT ROWID;

-- The public API of each crate's src/lib.rs that no entry of the crate describes:
-- free functions and `pub use` re-exports (one row per name brought in), in file
-- order, for `fn show CRATE`.
CREATE TABLE crate_api (
    crate     TEXT NOT NULL REFERENCES crates (name),
    position  INTEGER NOT NULL,             -- order in src/lib.rs, from 0
    kind      TEXT NOT NULL CHECK (kind IN ('function', 're-export')),
    name      TEXT NOT NULL,                -- `text`; a re-export's name: `http`, `Message`, `*`; `m::f` in `pub mod m`
    signature TEXT NOT NULL,                -- one line: `pub fn text(...) -> Response`, `pub use http`
    doc       TEXT NOT NULL,                -- first sentence of the doc comment, '' without one
    PRIMARY KEY (crate, position)
) WITHOUT ROWID;

CREATE TABLE tags (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    tag      TEXT NOT NULL
);

CREATE TABLE params (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    position INTEGER NOT NULL,
    name     TEXT NOT NULL,
    desc     TEXT NOT NULL
);

CREATE TABLE tests (
    entry_id    TEXT NOT NULL REFERENCES entries (id),
    position    INTEGER NOT NULL,
    description TEXT NOT NULL
);

CREATE TABLE imports (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    package  TEXT NOT NULL
);

-- Fields and variants of type entries.
CREATE TABLE members (
    entry_id TEXT NOT NULL REFERENCES entries (id),
    role     TEXT NOT NULL CHECK (role IN ('field', 'variant')),
    position INTEGER NOT NULL,
    name     TEXT NOT NULL,
    type     TEXT NOT NULL,
    desc     TEXT NOT NULL
);

-- The composition graph: from_id uses to_id. Every to_id exists (`fn index`
-- refuses dangling references).
CREATE TABLE refs (
    from_id TEXT NOT NULL REFERENCES entries (id),
    to_id   TEXT NOT NULL REFERENCES entries (id),
    rel     TEXT NOT NULL CHECK (rel IN ('uses_function', 'uses_type', 'returns', 'error_type'))
);

-- Every file and folder the last index read, with the xxh3 hash of what it read
-- (a folder's: of its sorted names; its path ends with `/`). `fn index` re-reads
-- only what changed since `sources_at` (by modification time, then hash) and
-- updates the rows of the entries and crates concerned.
CREATE TABLE sources (
    path TEXT PRIMARY KEY,                  -- root-relative: `crates/x/src/lib.rs`, `crates/`
    hash INTEGER NOT NULL                   -- xxh3-64 as a signed integer
) WITHOUT ROWID;

-- Full-text search, ranked with bm25 (weights: name 10, description 4, tags 6,
-- signature 3, body 1). `name` holds the name and its words (`ws_send ws send`,
-- `SseEvent Sse Event`); rowid = entries.rowid. Contentless: the text lives in
-- `entries`, the index only finds and ranks rowids; rows can be deleted by rowid.
CREATE VIRTUAL TABLE entries_fts USING fts5 (
    name, description, tags, signature, body,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO entries_fts (entries_fts, rank) VALUES ('rank', 'bm25(10.0, 4.0, 6.0, 3.0, 1.0)');

-- indexes: `fn index` creates these after loading the rows (a bulk build is
-- faster than growing them row by row).
CREATE UNIQUE INDEX tags_key ON tags (entry_id, tag);
CREATE INDEX tags_tag ON tags (tag);
CREATE UNIQUE INDEX params_key ON params (entry_id, position);
CREATE UNIQUE INDEX tests_key ON tests (entry_id, position);
CREATE UNIQUE INDEX imports_key ON imports (entry_id, package);
CREATE UNIQUE INDEX members_key ON members (entry_id, role, position);
CREATE UNIQUE INDEX refs_key ON refs (from_id, to_id, rel);
-- Covering, as refs_key is: `fn deps --reverse` walks the graph on indexes only.
CREATE INDEX refs_to ON refs (to_id, from_id, rel);
