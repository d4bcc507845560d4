-- Which files a run's revision changed, and whether they are files its mapping watches (paths, ignore_paths).
--
-- files_check is where the check of a run stands: NULL when the run needs none (its mapping watches every file,
-- or it is a retry), 'pending' until a worker asked the Hub, 'watched' when a watched file changed, 'unknown'
-- when the Hub could not tell (the run goes ahead), 'unwatched' when nothing watched changed (the run is
-- skipped). A pending run never replaces an older one: it may yet be skipped.
ALTER TABLE runs ADD COLUMN files_check text
    CHECK (files_check IN ('pending', 'watched', 'unknown', 'unwatched'));

-- What a worker found, one row per run: the counts, the first files (path, change, sizes), why the Hub could not
-- tell when it could not, and the reason of the check's outcome.
CREATE TABLE run_files (
    run_id     bigint      PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    total      integer     NOT NULL DEFAULT 0 CHECK (total >= 0),
    added      integer     NOT NULL DEFAULT 0 CHECK (added >= 0),
    modified   integer     NOT NULL DEFAULT 0 CHECK (modified >= 0),
    removed    integer     NOT NULL DEFAULT 0 CHECK (removed >= 0),
    files      jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(files) = 'array'),
    unknown    text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT '',
    checked_at timestamptz NOT NULL DEFAULT now()
);

-- The Hub's listing of a revision's files, kept so that no revision is listed twice: the revision is the new side
-- of one run's comparison and the old side of the next. A commit never changes, so neither does its listing.
-- files is an array of [path, git blob id, size, LFS sha256 or ""].
CREATE TABLE revision_files (
    dataset   text        NOT NULL,
    revision  text        NOT NULL,
    files     jsonb       NOT NULL CHECK (jsonb_typeof(files) = 'array'),
    listed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, revision)
);
CREATE INDEX revision_files_listed_idx ON revision_files (dataset, listed_at DESC);
