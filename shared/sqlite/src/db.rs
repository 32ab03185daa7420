//! One database file: a writer thread that owns the only write connection and commits
//! whatever is waiting in one transaction (group commit), urgent work first, and a read
//! connection that WAL lets read while the writer writes.

use anyhow::Context;
use flare_shared::ports::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// At most this many operations share a commit: enough to make a burst cheap, few
/// enough that the first caller's answer is not held long.
const MAX_GROUP: usize = 512;
/// ... and a group stops taking more after this long, so its first caller is not kept
/// waiting behind an endless stream.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_GROUP_AGE: std::time::Duration = std::time::Duration::from_millis(5);

tokio::task_local! {
    /// Set (by [`urgent`]) for the work of an urgent lane: its writes go ahead of every
    /// other write waiting, so a dispatch is not queued behind a bulk send's thousands.
    static URGENT: bool;
}

/// Runs `f` with its writes ahead of the others waiting (in AWS each function writes to
/// DynamoDB on its own; here one writer takes them all, so the urgent lane is kept here
/// too). Only this task's writes: a task `f` spawns is not urgent.
pub async fn urgent<F: std::future::Future>(f: F) -> F::Output {
    URGENT.scope(true, f).await
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (
    org TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    org TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    org TEXT NOT NULL, id TEXT NOT NULL, created_ms INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_newest ON notifications (org, created_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS records (
    org TEXT NOT NULL, nid TEXT NOT NULL, recipient TEXT NOT NULL, channel TEXT NOT NULL,
    pending INTEGER NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, nid, recipient, channel)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_pending ON records (org, nid) WHERE pending = 1;
CREATE INDEX IF NOT EXISTS records_receipt ON records (json_extract(state, '$.receipt_key'))
    WHERE json_extract(state, '$.receipt_key') IS NOT NULL;
CREATE TABLE IF NOT EXISTS acks (
    org TEXT NOT NULL, nid TEXT NOT NULL, user TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (org, nid, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS responses (
    org TEXT NOT NULL, nid TEXT NOT NULL, user TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, nid, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sms_sent (
    org TEXT NOT NULL, number TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, number)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS opt_outs (
    org TEXT NOT NULL, number TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (org, number)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (
    digest TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links_for (
    org TEXT NOT NULL, nid TEXT NOT NULL, user TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, nid, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbound (
    org TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (org, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    org TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_head (
    org TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_never_changed BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'an audit entry is never changed'); END;
CREATE TRIGGER IF NOT EXISTS audit_never_deleted BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'an audit entry is never deleted'); END;
CREATE TABLE IF NOT EXISTS route_pages (
    org TEXT NOT NULL, nid TEXT NOT NULL, page INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (org, nid, page)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
PRAGMA user_version = 1;
";

/// Work for the writer thread: run inside the group's transaction, answered after its
/// commit (so a caller never hears "done" for a write a crash could still lose).
trait Work: Send {
    /// Runs; whether it succeeded (a failure is rolled back alone).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Writes with one statement at most: it needs no savepoint of its own, since a
    /// statement that fails changes nothing.
    fn single(&self) -> bool;
    fn answer(self: Box<Self>, commit: Result<(), &rusqlite::Error>);
}

struct Call<F, R> {
    f: Option<F>,
    single: bool,
    out: Option<anyhow::Result<R>>,
    tx: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> Work for Call<F, R>
where
    F: FnOnce(&Connection) -> anyhow::Result<R> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = (self.f.take().expect("run once"))(conn);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn single(&self) -> bool {
        self.single
    }

    fn answer(self: Box<Self>, commit: Result<(), &rusqlite::Error>) {
        let out = match (self.out, commit) {
            (Some(Err(e)), _) => Err(store_error(e)),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(StoreError::Unavailable(
                anyhow::anyhow!("{e}").context("committing to the local database"),
            )),
            (None, Ok(())) => Err(StoreError::Failed(anyhow::anyhow!("write never ran"))),
        };
        let _ = self.tx.send(out);
    }
}

/// Busy or locked: another process holds the file for a moment. Anything else is not
/// going to pass by retrying.
pub(crate) fn store_error(e: anyhow::Error) -> StoreError {
    let busy = e.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    });
    if busy {
        StoreError::Unavailable(e)
    } else {
        StoreError::Failed(e)
    }
}

/// A write and whether it is urgent.
type Queued = (bool, Box<dyn Work>);

pub struct Db {
    writer: mpsc::Sender<Queued>,
    reader: Mutex<Connection>,
    /// Dropped with the database: the checkpointer then stops.
    _checkpoints: mpsc::Sender<()>,
}

fn connect(path: &Path, flags: OpenFlags) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    // WAL: readers never wait for the writer. NORMAL: a commit is durable against a
    // crash of the process (what a restart test kills), and an OS crash can lose only
    // the last commits, never corrupt the file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
    )
    .with_context(|| format!("setting up {}", path.display()))?;
    Ok(conn)
}

impl Db {
    /// Opens (or creates, readable by its owner only: it holds provider passwords) the
    /// database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let mut f = std::fs::OpenOptions::new();
            f.write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
            f.open(path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let conn = connect(path, OpenFlags::default())?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the tables of {}", path.display()))?;
        let reader = connect(path, OpenFlags::default())?;
        let checkpointer = connect(path, OpenFlags::default())?;
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("flare-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .context("starting the database checkpointer")?;
        let (tx, rx) = mpsc::channel::<Queued>();
        std::thread::Builder::new()
            .name("flare-sqlite-writer".into())
            .spawn(move || write_loop(conn, rx))
            .context("starting the database writer")?;
        Ok(Self {
            writer: tx,
            reader: Mutex::new(reader),
            _checkpoints: stop,
        })
    }

    /// Runs `f` in the writer's next transaction; answers after it is committed. If
    /// `f` fails, nothing it wrote stays.
    pub async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call(f, false).await
    }

    /// [`Self::write`] for an `f` that writes with one statement at most (it may read
    /// before): cheaper, as it needs no savepoint.
    pub async fn write_one<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call(f, true).await
    }

    /// [`Self::write_one`] when `single`, else [`Self::write`].
    pub async fn write_as<R, F>(&self, f: F, single: bool) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call(f, single).await
    }

    async fn call<R, F>(&self, f: F, single: bool) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let urgent = URGENT.try_with(|u| *u).unwrap_or(false);
        self.writer
            .send((
                urgent,
                Box::new(Call {
                    f: Some(f),
                    single,
                    out: None,
                    tx,
                }),
            ))
            .map_err(|_| StoreError::Failed(anyhow::anyhow!("the database writer stopped")))?;
        rx.await
            .map_err(|_| StoreError::Failed(anyhow::anyhow!("the database writer stopped")))?
    }

    /// Runs `f` on the read connection (a consistent snapshot of the last commit).
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<R>) -> StoreResult<R> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(store_error)
    }
}

/// A statement run often enough to keep prepared.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// What is waiting for the writer, urgent first.
#[derive(Default)]
struct Waiting {
    urgent: VecDeque<Box<dyn Work>>,
    normal: VecDeque<Box<dyn Work>>,
}

impl Waiting {
    /// Takes in everything sent so far.
    fn take_in(&mut self, rx: &mpsc::Receiver<Queued>) {
        for (urgent, w) in rx.try_iter() {
            self.push(urgent, w);
        }
    }

    fn push(&mut self, urgent: bool, w: Box<dyn Work>) {
        if urgent {
            self.urgent.push_back(w);
        } else {
            self.normal.push_back(w);
        }
    }

    fn next(&mut self) -> Option<Box<dyn Work>> {
        self.urgent.pop_front().or_else(|| self.normal.pop_front())
    }
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Queued>) {
    let mut waiting = Waiting::default();
    loop {
        waiting.take_in(&rx);
        let first = match waiting.next() {
            Some(w) => w,
            None => match rx.recv() {
                Ok((_, w)) => w,
                Err(_) => return,
            },
        };
        let t0 = std::time::Instant::now();
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "local database: cannot begin a transaction");
            first.answer(Err(&e));
            waiting.take_in(&rx);
            while let Some(w) = waiting.next() {
                w.answer(Err(&e));
            }
            continue;
        }
        // Everything that arrives while the group runs joins it (up to a size and an
        // age), so a busy pipeline pays for one commit per group, not per write; what
        // is left waits for the next group, behind any urgent write that came since.
        let mut group = vec![first];
        let mut next = 0;
        while next < group.len() {
            run(&conn, group[next].as_mut());
            next += 1;
            if group.len() < MAX_GROUP && t0.elapsed() < MAX_GROUP_AGE {
                waiting.take_in(&rx);
                while group.len() < MAX_GROUP {
                    match waiting.next() {
                        Some(w) => group.push(w),
                        None => break,
                    }
                }
            }
        }
        let commit = exec(&conn, "COMMIT");
        if let Err(e) = &commit {
            tracing::error!(error = %e, "local database: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for w in group {
            w.answer(commit.as_ref().map(|_| ()));
        }
    }
}

/// Moves the WAL's pages into the database file every second, apart from the writer
/// (whose automatic checkpoints are off): a checkpoint syncs the file, and a commit that
/// waits for that would hold up every caller of its group. PASSIVE never blocks the
/// writer or readers.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "local database: checkpoint");
        }
    }
}

/// Runs one operation under its own savepoint: one that fails halfway leaves nothing
/// behind and does not take the others of its group with it.
fn run(conn: &Connection, w: &mut dyn Work) {
    if w.single() {
        w.run(conn);
        return;
    }
    let ok = exec(conn, "SAVEPOINT op").is_ok() && w.run(conn);
    let end = if ok {
        exec(conn, "RELEASE op")
    } else {
        exec(conn, "ROLLBACK TO op").and_then(|_| exec(conn, "RELEASE op"))
    };
    if let Err(e) = end {
        tracing::error!(error = %e, "local database: savepoint");
    }
}
