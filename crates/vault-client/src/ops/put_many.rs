//! PUT of many files: a whole tree (`put -r`) or a list of files, with
//! bounded memory and few round trips.
//!
//! The files come as a stream ([`PutPlan::stream`], fed by a folder walk
//! on a blocking thread through a bounded channel), and are handled a chunk
//! at a time ([`CHUNK`] files), so that memory does not grow with the tree:
//!
//! 1. One lookup learns the current version of every name of the chunk
//!    ([`catalog::lookup`]: a few `GetBlobs` per node), with the same
//!    quorum rule as any read.
//! 2. With [`PutOptions::skip_unchanged`], a file whose size and
//!    modification time (or, with `checksum`, contents) match its stored
//!    version is left alone.
//! 3. Small files (up to [`SMALL_FILE`]) go in batches: each file is read
//!    once (its MD5 and its parts come from the same bytes), its four parts
//!    are sealed, and every node gets the batch's parts in one `PutBlobs`;
//!    then the manifests of the files whose eight part copies all landed
//!    go out the same way (the commit); then old versions' parts are
//!    removed with `DeleteBlobs`. A few batches are in flight at once.
//! 4. Larger files stream one at a time through [`super::put`].
//!
//! Outcomes are handed out in the order the files came, as soon as every
//! earlier one is known; the plan never holds more than [`MAX_IN_MEMORY`]
//! files at once ([`PutSummary::peak_in_memory`]).
//!
//! Readers see the old version or the new one, never a mix: a manifest is
//! written only after every part copy it names is stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wire::{BlobId, Expect};

use super::commit::{commit, Outcome as CommitOutcome, Write};
use super::delete::seen_from_entry;
use super::put::{conflict, hash_all, store, Hashing, PutReport};
use super::{quorum, require_nodes, NodeTasks, OpError, ProgressRef};
use crate::catalog::{self, Entry};
use crate::crypto::format::PART_HEADER;
use crate::crypto::keys::{random_bytes, FILE_ID_LEN};
use crate::crypto::stream::seal_all;
use crate::manifest::Manifest;
use crate::net::{BatchLimit, NetError, Session};
use crate::path::{mtime_ns, Item, LocalFile};
use crate::placement::{nodes_for_part, PARTS};
use crate::vault::Vault;

/// Files up to this size are stored in batches; larger ones stream alone.
pub const SMALL_FILE: u64 = 1 << 20;
/// Files taken from the stream at a time: their stored versions are
/// looked up together.
pub const CHUNK: usize = 1000;
/// Most files a plan holds at once (taken from the stream, outcome not yet
/// handed out): a chunk being compared, plus what is still in flight from
/// earlier chunks, which is waited for before a new chunk is taken once it
/// reaches a chunk.
pub const MAX_IN_MEMORY: usize = 2 * CHUNK;
/// Items the walk may run ahead of the plan.
const AHEAD: usize = 256;
/// Most files, and plaintext bytes, in one batch.
const BATCH: BatchLimit = BatchLimit::new(256, 4 << 20);
/// Batches in flight at once.
const IN_FLIGHT: usize = 3;
/// Most bytes in one `PutBlobs` request.
const REQUEST_BYTES: u64 = 16 << 20;

/// How a PUT of many files treats files already stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// Leave alone files whose size and modification time match their
    /// stored version (`put -r`).
    pub skip_unchanged: bool,
    /// With `skip_unchanged`: compare contents (MD5) instead of times.
    pub checksum: bool,
    /// Store with one node unusable: its copies are skipped (every part
    /// keeps one) and each stored file carries a warning to run repair.
    pub degraded: bool,
}

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// Stored as a new version.
    Stored(PutReport),
    /// Left alone: the stored version is the same.
    Unchanged,
    /// Not stored.
    Failed(OpError),
}

/// What a PUT of many files reports as it goes, through the sink given to
/// [`PutPlan::run_with`].
#[derive(Debug)]
pub enum Event {
    /// Something given was left out (`path: why`): a link, a special file,
    /// a name that cannot be a vault name, a folder that cannot be read.
    Skipped(String),
    /// A file's outcome. Files come in the order they were given (a walked
    /// folder's in name order).
    Done(LocalFile, Outcome),
}

/// What a PUT of many files did, file by file, in the order given.
#[derive(Debug, Default)]
pub struct PutSummary {
    /// Every file and its outcome.
    pub files: Vec<(LocalFile, Outcome)>,
    /// `path: why` for everything left out while walking.
    pub skipped: Vec<String>,
    /// The most files the plan held at once (see [`MAX_IN_MEMORY`]).
    pub peak_in_memory: usize,
}

impl PutSummary {
    /// Files stored.
    pub fn stored(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Stored(_)))
    }

    /// Files left alone.
    pub fn unchanged(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unchanged))
    }

    /// Files not stored.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.files.iter().filter(|(_, o)| f(o)).count()
    }
}

/// Counts of what [`PutPlan::run_with`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PutTotals {
    /// Files stored.
    pub stored: usize,
    /// Files left alone.
    pub unchanged: usize,
    /// Files not stored.
    pub failed: usize,
    /// Things left out while walking.
    pub skipped: usize,
    /// The most files the plan held at once (see [`MAX_IN_MEMORY`]).
    pub peak_in_memory: usize,
}

/// Where a plan's files come from.
type Source = Box<dyn Iterator<Item = Item> + Send>;

/// A PUT of many files, started before the vault opens so that the MD5
/// pass of large files that will certainly be sent overlaps with logging
/// in.
pub struct PutPlan {
    source: Source,
    options: PutOptions,
    progress: ProgressRef,
    hashing: HashMap<PathBuf, Hashing>,
    chunk: usize,
}

impl PutPlan {
    /// Plans storing `files` (a list already in memory). `progress`
    /// advances by each file's size once: a small file's when its batch is
    /// stored, a large file's as it is sent (after
    /// [`super::Phase::Uploading`]). A large file's MD5 pass is announced
    /// ([`super::Phase::Hashing`]) and counted apart, through
    /// [`super::Progress::hashed`]. A name given twice fails the second
    /// time. Needs a tokio runtime.
    pub fn start(files: Vec<LocalFile>, options: PutOptions, progress: ProgressRef) -> PutPlan {
        let mut hashing = HashMap::new();
        if !options.skip_unchanged {
            let large: Vec<(PathBuf, String, ProgressRef)> = files
                .iter()
                .filter(|f| f.size > SMALL_FILE)
                .map(|f| (f.path.clone(), f.name.clone(), progress.clone()))
                .collect();
            let paths: Vec<PathBuf> = large.iter().map(|(p, ..)| p.clone()).collect();
            hashing = paths.into_iter().zip(hash_all(large)).collect();
        }
        let mut seen = HashSet::new();
        let items = files.into_iter().map(move |f| {
            if seen.insert(f.name.clone()) {
                Item::File(f)
            } else {
                Item::Twice(f)
            }
        });
        PutPlan {
            source: Box::new(items),
            options,
            progress,
            hashing,
            chunk: CHUNK,
        }
    }

    /// Plans storing the files `items` yields, taken as they come (for a
    /// tree: [`crate::path::GivenFiles`], which walks the folders as a
    /// stream). The iterator runs on a blocking thread, a bounded number
    /// of items ahead. Progress as [`PutPlan::start`], without the MD5
    /// pass begun early.
    pub fn stream(
        items: impl Iterator<Item = Item> + Send + 'static,
        options: PutOptions,
        progress: ProgressRef,
    ) -> PutPlan {
        PutPlan {
            source: Box::new(items),
            options,
            progress,
            hashing: HashMap::new(),
            chunk: CHUNK,
        }
    }

    /// Takes `files` files at a time instead of [`CHUNK`] (at least one);
    /// at most twice that many are held at once.
    pub fn chunk(mut self, files: usize) -> PutPlan {
        self.chunk = files.max(1);
        self
    }

    /// Stores the planned files in `vault`; every file's outcome, in the
    /// order given.
    pub async fn run(self, vault: &Vault) -> Result<PutSummary, OpError> {
        let mut summary = PutSummary::default();
        let totals = self
            .run_with(vault, |event| match event {
                Event::Done(f, o) => summary.files.push((f, o)),
                Event::Skipped(s) => summary.skipped.push(s),
            })
            .await?;
        summary.peak_in_memory = totals.peak_in_memory;
        Ok(summary)
    }

    /// Stores the planned files in `vault`, handing each outcome (in the
    /// order given) and each thing skipped to `sink` as it is known, and
    /// keeping none: memory does not grow with the number of files.
    ///
    /// Fails, with nothing changed, when the nodes cannot say what is
    /// stored for the first files (fewer than a quorum answer); when that
    /// happens later, the files concerned fail and the rest go on.
    pub async fn run_with(
        self,
        vault: &Vault,
        mut sink: impl FnMut(Event) + Send,
    ) -> Result<PutTotals, OpError> {
        let PutPlan {
            source,
            options,
            progress,
            hashing,
            chunk: chunk_len,
        } = self;
        let degraded_note = require_nodes(vault, "PUT", options.degraded)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(AHEAD);
        // The walk: blocking file-system calls, a bounded number ahead. It
        // stops when the plan does (the channel closes).
        tokio::task::spawn_blocking(move || {
            for item in source {
                if tx.blocking_send(item).is_err() {
                    break;
                }
            }
        });
        let mut run = Run {
            vault,
            options,
            progress,
            hashing,
            degraded_note,
            files: HashMap::new(),
            done: BTreeMap::new(),
            next_out: 0,
            taken: 0,
            totals: PutTotals::default(),
            set: JoinSet::new(),
            task_files: HashMap::new(),
            limit: Arc::new(Semaphore::new(IN_FLIGHT)),
            stopped: None,
            batch: Vec::new(),
            batch_bytes: 0,
            begun: false,
        };
        loop {
            // What is still held from earlier chunks stays under a chunk.
            while run.held() > chunk_len {
                if run.set.is_empty() {
                    if run.batch.is_empty() {
                        break;
                    }
                    run.send_batch(&mut sink).await;
                } else {
                    run.join_one().await;
                    run.emit(&mut sink);
                }
            }
            let mut chunk: Vec<(usize, LocalFile)> = Vec::new();
            let mut closed = false;
            let start = run.taken;
            while run.taken - start < chunk_len {
                let Some(item) = rx.recv().await else {
                    closed = true;
                    break;
                };
                match item {
                    Item::Skipped(s) => {
                        run.totals.skipped += 1;
                        sink(Event::Skipped(s));
                    }
                    Item::Twice(file) => {
                        let why = OpError::BadName(format!("{} is given twice", file.name));
                        let i = run.take(file);
                        run.finish(i, Outcome::Failed(why));
                    }
                    Item::File(file) => {
                        let i = run.take(file.clone());
                        chunk.push((i, file));
                    }
                }
            }
            if !chunk.is_empty() {
                run.chunk(chunk, &mut sink).await?;
            }
            run.reap();
            run.emit(&mut sink);
            if closed {
                break;
            }
        }
        if !run.batch.is_empty() {
            run.send_batch(&mut sink).await;
        }
        while !run.set.is_empty() {
            run.join_one().await;
            run.emit(&mut sink);
        }
        run.emit(&mut sink);
        // Every file taken has an outcome by now; one that has none (a
        // bug) still gets one.
        let left: Vec<usize> = run.files.keys().copied().collect();
        for i in left {
            run.done.entry(i).or_insert_with(|| {
                Outcome::Failed(OpError::Unavailable("the batch holding it failed".into()))
            });
        }
        run.emit(&mut sink);
        Ok(run.totals)
    }
}

/// A small file waiting for its batch: its place, itself, and what is
/// stored under its name.
type Pending = (usize, LocalFile, Option<Entry>);

/// The state of one [`PutPlan::run_with`].
struct Run<'a> {
    vault: &'a Vault,
    options: PutOptions,
    progress: ProgressRef,
    hashing: HashMap<PathBuf, Hashing>,
    degraded_note: Vec<String>,
    /// Files taken and not yet handed out, by place.
    files: HashMap<usize, LocalFile>,
    /// Outcomes known and not yet handed out (an earlier file is not known).
    done: BTreeMap<usize, Outcome>,
    /// The place of the next file to hand out.
    next_out: usize,
    /// Files taken so far.
    taken: usize,
    totals: PutTotals,
    set: JoinSet<Vec<(usize, Outcome)>>,
    /// The files of each batch in flight.
    task_files: HashMap<tokio::task::Id, Vec<usize>>,
    limit: Arc<Semaphore>,
    /// Why the files not sent yet fail (a node died, not degraded).
    stopped: Option<OpError>,
    /// Small files gathered for the next batch, and their bytes.
    batch: Vec<Pending>,
    batch_bytes: u64,
    /// Whether anything may have been changed in the vault.
    begun: bool,
}

impl Run<'_> {
    /// Files held: taken and not handed out.
    fn held(&self) -> usize {
        self.taken - self.next_out
    }

    /// Takes `file` in: its place.
    fn take(&mut self, file: LocalFile) -> usize {
        let i = self.taken;
        self.taken += 1;
        self.files.insert(i, file);
        self.totals.peak_in_memory = self.totals.peak_in_memory.max(self.held());
        i
    }

    fn finish(&mut self, i: usize, outcome: Outcome) {
        self.done.insert(i, outcome);
    }

    /// Hands out the outcomes known, in order, up to the first unknown.
    fn emit(&mut self, sink: &mut impl FnMut(Event)) {
        while let Some(outcome) = self.done.remove(&self.next_out) {
            let file = self
                .files
                .remove(&self.next_out)
                .expect("every place taken has its file");
            match &outcome {
                Outcome::Stored(_) => self.totals.stored += 1,
                Outcome::Unchanged => self.totals.unchanged += 1,
                Outcome::Failed(_) => self.totals.failed += 1,
            }
            self.next_out += 1;
            sink(Event::Done(file, outcome));
        }
    }

    /// One chunk of files: their stored versions, then each compared,
    /// batched or sent.
    async fn chunk(
        &mut self,
        chunk: Vec<(usize, LocalFile)>,
        sink: &mut (impl FnMut(Event) + Send),
    ) -> Result<(), OpError> {
        let vault = self.vault;
        let names: Vec<String> = chunk.iter().map(|(_, f)| f.name.clone()).collect();
        let (mut known, problems) = catalog::lookup(vault, &names).await;
        drop(names);
        // A quorum of answers is enough to know the current versions (a
        // node that missed one is caught by the conditional commit).
        let answered = vault
            .ready()
            .filter(|s| {
                !problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{}:", s.name)))
            })
            .count();
        if answered < quorum(vault) {
            let why = format!("cannot learn the stored versions ({})", problems.join("; "));
            if !self.begun {
                return Err(OpError::Unavailable(format!("{why}; nothing was changed")));
            }
            for (i, file) in chunk {
                self.finish(
                    i,
                    Outcome::Failed(OpError::Unavailable(format!(
                        "{}: not stored: {why}",
                        file.name
                    ))),
                );
            }
            return Ok(());
        }
        for (i, file) in chunk {
            let entry = known.remove(&file.name);
            if self.options.skip_unchanged && unchanged(&file, entry.as_ref(), self.options).await {
                self.finish(i, Outcome::Unchanged);
                continue;
            }
            // Erasure-coded files stream one by one (batches of small
            // files are the classic layout's, for now).
            if file.size <= SMALL_FILE && vault_is_classic(self.vault) {
                if !BATCH.admits(self.batch.len(), self.batch_bytes, file.size) {
                    self.send_batch(sink).await;
                }
                self.batch_bytes += file.size;
                self.batch.push((i, file, entry));
            } else {
                self.send_large(i, file).await;
                self.reap();
                self.emit(sink);
            }
        }
        Ok(())
    }

    /// Sends the gathered batch of small files, once one of the few places
    /// in flight is free. A node that dies on the way is noticed once:
    /// without --degraded the files not sent yet fail at once with that one
    /// cause; with it, the batches go on without the dead node's copies
    /// (while it is the only node out).
    async fn send_batch(&mut self, sink: &mut impl FnMut(Event)) {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let permit = loop {
            // Finished batches are collected while waiting for a place.
            if let Ok(p) = self.limit.clone().try_acquire_owned() {
                break p;
            }
            self.join_one().await;
            self.emit(sink);
        };
        let vault = self.vault;
        let death = died(vault, self.options.degraded);
        if self.stopped.is_none() {
            self.stopped = death.as_ref().err().cloned().map(OpError::Unavailable);
        }
        if let Some(why) = &self.stopped {
            let why = why.to_string();
            for (i, file, _) in batch {
                self.finish(
                    i,
                    Outcome::Failed(OpError::Unavailable(format!("{}: {why}", file.name))),
                );
            }
            return;
        }
        self.begun = true;
        let skip = death.ok().flatten();
        let (vault, progress) = (vault.clone(), self.progress.clone());
        let mut note = self.degraded_note.clone();
        if let Some(node) = skip {
            note.push(stopped_note(&vault, node));
        }
        let degraded = self.options.degraded;
        let places: Vec<usize> = batch.iter().map(|(i, ..)| *i).collect();
        let task = self.set.spawn(async move {
            let _permit = permit;
            store_batch(&vault, batch, &progress, &note, skip, degraded).await
        });
        self.task_files.insert(task.id(), places);
        self.reap();
    }

    /// Sends one large file, streaming.
    async fn send_large(&mut self, i: usize, file: LocalFile) {
        let vault = self.vault;
        if let Err(why) = died(vault, self.options.degraded) {
            self.finish(
                i,
                Outcome::Failed(OpError::Unavailable(format!("{}: {why}", file.name))),
            );
            return;
        }
        self.begun = true;
        let hashing = match self.hashing.remove(&file.path) {
            Some(h) => h,
            None => hash_all(vec![(
                file.path.clone(),
                file.name.clone(),
                self.progress.clone(),
            )])
            .pop()
            .expect("one file, one hashing"),
        };
        let r = store(
            vault,
            &file.path,
            &file.name,
            self.progress.clone(),
            hashing,
            self.options.degraded,
            None,
        )
        .await
        .map(|(report, _)| report);
        self.finish(
            i,
            match r {
                Ok(report) => Outcome::Stored(report),
                Err(e) => Outcome::Failed(e),
            },
        );
    }

    /// Collects the batches that have finished, without waiting.
    fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.collect(done);
        }
    }

    /// Waits for one batch in flight to finish (if any) and collects it.
    async fn join_one(&mut self) {
        if let Some(done) = self.set.join_next_with_id().await {
            self.collect(done);
        }
    }

    fn collect(
        &mut self,
        done: Result<(tokio::task::Id, Vec<(usize, Outcome)>), tokio::task::JoinError>,
    ) {
        let id = match done {
            Ok((id, results)) => {
                for (i, o) in results {
                    self.finish(i, o);
                }
                id
            }
            Err(e) => {
                tracing::warn!("a batch task failed: {e}");
                e.id()
            }
        };
        for i in self.task_files.remove(&id).unwrap_or_default() {
            self.done.entry(i).or_insert_with(|| {
                Outcome::Failed(OpError::Unavailable("the batch holding it failed".into()))
            });
        }
    }
}

/// Whether a node died since the login (its connection closed): `Ok(None)`
/// if none did; `Ok(Some(node))` when a degraded PUT may go on without it
/// (it is the only node out); otherwise why the PUT must stop.
fn died(vault: &Vault, degraded: bool) -> Result<Option<usize>, String> {
    let dead: Vec<&Session> = vault.ready().filter(|s| s.is_closed()).collect();
    let Some(first) = dead.first() else {
        return Ok(None);
    };
    let out = dead.len() + vault.unavailable().len();
    if super::put_tolerates(vault, out, degraded) {
        return Ok(Some(first.node));
    }
    let names: Vec<&str> = dead.iter().map(|s| s.name.as_str()).collect();
    Err(if degraded {
        format!(
            "not stored: {} stopped answering during this PUT, and a degraded PUT needs {} nodes",
            names.join(", "),
            super::count_word(super::put_needs(vault, true))
        )
    } else if super::put_tolerates(vault, out, true) {
        format!(
            "not stored: {} stopped answering during this PUT (put --degraded stores with {} down)",
            names.join(", "),
            if out == 1 { "one node" } else { "fewer nodes" }
        )
    } else {
        format!(
            "not stored: {} stopped answering during this PUT",
            names.join(", ")
        )
    })
}

/// Whether new files take the classic layout (and so small ones batches).
fn vault_is_classic(vault: &Vault) -> bool {
    vault.redundancy() == crate::layout::Redundancy::Classic
}

/// Whether `file` matches its stored version.
async fn unchanged(file: &LocalFile, entry: Option<&Entry>, options: PutOptions) -> bool {
    let Some(stored) = entry.and_then(Entry::live) else {
        return false;
    };
    if stored.size != file.size {
        return false;
    }
    if !options.checksum {
        return file.mtime_ns.is_some() && stored.mtime_ns == file.mtime_ns;
    }
    let path = file.path.clone();
    let md5 = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 16]> {
        let mut f = std::fs::File::open(path)?;
        let mut h = Md5::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(h.finalize().into())
    })
    .await;
    matches!(md5, Ok(Ok(d)) if d[..] == stored.md5[..])
}

/// One small file, read and sealed.
struct Sealed {
    index: usize,
    file: LocalFile,
    previous: Option<Entry>,
    manifest: Manifest,
    manifest_id: BlobId,
    sealed_manifest: Vec<u8>,
    /// Part ids, k = 0..4.
    part_ids: Vec<BlobId>,
    /// (node, part index, blob): the two copies of a part share their
    /// bytes.
    copies: Vec<(usize, usize, Arc<Vec<u8>>)>,
}

/// Reads and seals a batch (blocking: file reads and encryption).
fn seal_batch(
    vault: &Vault,
    batch: Vec<(usize, LocalFile, Option<Entry>)>,
) -> (Vec<Sealed>, Vec<(usize, Outcome)>) {
    let mut sealed = Vec::new();
    let mut failed = Vec::new();
    for (index, file, previous) in batch {
        match seal_one(vault, &file, previous.as_ref()) {
            Ok((manifest, manifest_id, sealed_manifest, part_ids, copies)) => sealed.push(Sealed {
                index,
                file,
                previous,
                manifest,
                manifest_id,
                sealed_manifest,
                part_ids,
                copies,
            }),
            Err(e) => failed.push((index, Outcome::Failed(e))),
        }
    }
    (sealed, failed)
}

/// A blob to store for a file of a batch: (the file, its id, its bytes).
type Blob = (usize, BlobId, Arc<Vec<u8>>);

type SealedParts = (
    Manifest,
    BlobId,
    Vec<u8>,
    Vec<BlobId>,
    Vec<(usize, usize, Arc<Vec<u8>>)>,
);

fn seal_one(
    vault: &Vault,
    file: &LocalFile,
    previous: Option<&Entry>,
) -> Result<SealedParts, OpError> {
    let io = |e| OpError::Io {
        path: file.path.clone(),
        source: e,
    };
    let before = std::fs::symlink_metadata(&file.path).map_err(io)?;
    if !before.is_file() {
        return Err(OpError::BadName(format!(
            "{} is not a regular file",
            file.path.display()
        )));
    }
    let data = std::fs::read(&file.path).map_err(io)?;
    let after = std::fs::metadata(&file.path).map_err(io)?;
    if after.len() != data.len() as u64 || mtime_ns(&after) != mtime_ns(&before) {
        return Err(OpError::Refused(format!(
            "{} changed while it was being read; nothing was changed in the vault",
            file.path.display()
        )));
    }
    let md5: [u8; 16] = Md5::digest(&data).into();
    let manifest = Manifest {
        name: file.name.clone(),
        size: data.len() as u64,
        md5: md5.to_vec(),
        file_id: random_bytes::<FILE_ID_LEN>()?.to_vec(),
        version: previous.map_or(0, |e| e.newest.version) + 1,
        deleted: false,
        mtime_ns: mtime_ns(&before),
        extra: Default::default(),
        shards: None,
    };
    let master = vault.master();
    let manifest_id = master.manifest_id(&manifest.name);
    let sealed_manifest = manifest.seal(master, vault.user(), &manifest_id)?;
    let mut part_ids = Vec::with_capacity(PARTS);
    let mut copies = Vec::with_capacity(2 * PARTS);
    for (k, (offset, len)) in manifest.parts().into_iter().enumerate() {
        let keys = master.part(vault.user(), &manifest.file_id, manifest.version, k);
        let plain = &data[offset as usize..(offset + len) as usize];
        let mut blob = PART_HEADER.to_vec();
        blob.extend_from_slice(&seal_all(&keys.key, &keys.ad, plain));
        let blob = Arc::new(blob);
        for node in nodes_for_part(manifest.placement(), k) {
            copies.push((node, k, blob.clone()));
        }
        part_ids.push(keys.id);
    }
    Ok((manifest, manifest_id, sealed_manifest, part_ids, copies))
}

/// Sends `blobs` (owner index, id, bytes) to `s` in requests of at most
/// [`wire::MAX_BATCH`] blobs and [`REQUEST_BYTES`]; returns the owners whose
/// blob failed, and why.
async fn put_all(s: &Session, blobs: &[(usize, BlobId, &[u8])]) -> Vec<(usize, NetError)> {
    let items: Vec<(BlobId, &[u8], Option<Expect>)> = blobs
        .iter()
        .map(|(_, id, b)| (id.clone(), *b, None))
        .collect();
    let mut failed = Vec::new();
    for batch in s.put_blobs_batched(&items, REQUEST_BYTES).await {
        let owners = blobs[batch.range].iter().map(|(owner, _, _)| *owner);
        match batch.result {
            Ok(each) => failed.extend(owners.zip(each).filter_map(|(o, e)| Some((o, e?)))),
            Err(e) => failed.extend(owners.map(|o| (o, e.clone()))),
        }
    }
    failed
}

/// Deletes `ids` on `s` in requests of at most [`wire::MAX_BATCH`] (best effort).
async fn delete_all(s: &Session, ids: &[BlobId]) {
    for e in s.delete_blobs_batched(ids).await {
        // Left as orphans, which `repair` removes; the node's trouble
        // is reported with the files.
        tracing::debug!(node = %s.name, "could not remove parts: {e}");
    }
}

/// Runs `f` for every ready node at once, with that node's items; per
/// node, its result or why its task failed.
async fn per_node<T, R, F, Fut>(
    vault: &Vault,
    items: HashMap<usize, T>,
    f: F,
) -> HashMap<usize, Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Session, T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let mut set = NodeTasks::new();
    for (node, t) in items {
        if let Some(s) = vault.session(node) {
            set.spawn(node, f(s.clone(), t));
        }
    }
    let mut out = HashMap::new();
    while let Some((node, joined)) = set.next(vault).await {
        out.insert(node, joined);
    }
    out
}

/// Each node's blobs, `(file, id, bytes)`, stored with [`put_all`], every
/// node at once; the failures per node.
async fn put_per_node(
    vault: &Vault,
    lists: HashMap<usize, Vec<Blob>>,
) -> HashMap<usize, Vec<(usize, NetError)>> {
    let owners: HashMap<usize, Vec<usize>> = lists
        .iter()
        .map(|(node, list)| (*node, list.iter().map(|(f, ..)| *f).collect()))
        .collect();
    let done = per_node(vault, lists, |s, list| async move {
        let refs: Vec<(usize, BlobId, &[u8])> = list
            .iter()
            .map(|(f, id, b)| (*f, id.clone(), b.as_slice()))
            .collect();
        put_all(&s, &refs).await
    })
    .await;
    done.into_iter()
        .map(|(node, r)| {
            let failures = r.unwrap_or_else(|why| {
                // A failed task: every blob it was to store counts as failed.
                let e = NetError::Connection(why);
                owners[&node].iter().map(|&f| (f, e.clone())).collect()
            });
            (node, failures)
        })
        .collect()
}

/// Stores one batch of small files; returns each file's outcome.
async fn store_batch(
    vault: &Vault,
    batch: Vec<(usize, LocalFile, Option<Entry>)>,
    progress: &ProgressRef,
    degraded_note: &[String],
    skip: Option<usize>,
    degraded: bool,
) -> Vec<(usize, Outcome)> {
    // Kept for a degraded PUT: files caught in flight by a node's death are
    // sent again without it.
    let again = (degraded && skip.is_none()).then(|| batch.clone());
    let v = vault.clone();
    let (mut sealed, mut results) =
        match tokio::task::spawn_blocking(move || seal_batch(&v, batch)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("sealing a batch failed: {e}");
                return Vec::new();
            }
        };

    // 1. Every part copy, one request per node.
    let mut parts: HashMap<usize, Vec<Blob>> = HashMap::new();
    for (f, s) in sealed.iter().enumerate() {
        // A degraded PUT leaves out the copies of the node that died (each
        // part keeps its other copy).
        for (node, k, blob) in s.copies.iter().filter(|(n, ..)| Some(*n) != skip) {
            parts
                .entry(*node)
                .or_default()
                .push((f, s.part_ids[*k].clone(), blob.clone()));
        }
    }
    let sent = put_per_node(vault, parts).await;
    // The parts' bytes are not needed any more: freed before the commit.
    for s in &mut sealed {
        for copy in &mut s.copies {
            copy.2 = Arc::default();
        }
    }
    let mut part_failures: HashMap<usize, Vec<String>> = HashMap::new();
    // Per file, the nodes its failure or warning is about.
    let mut blamed: HashMap<usize, Vec<usize>> = HashMap::new();
    for (node, fails) in sent {
        for (f, e) in fails {
            blamed.entry(f).or_default().push(node);
            part_failures
                .entry(f)
                .or_default()
                .push(format!("{}: {e}", vault.node_name(node)));
        }
    }
    // A node that cannot be used counts against every file it was to get,
    // unless the PUT is degraded (then every part still has its other copy:
    // checked when the PUT began).
    if degraded_note.is_empty() {
        for (f, s) in sealed.iter().enumerate() {
            for (node, _, _) in &s.copies {
                if vault.session(*node).is_none() {
                    part_failures.entry(f).or_default().push(format!(
                        "{}: {}",
                        vault.node_name(*node),
                        vault.why_unusable(*node)
                    ));
                }
            }
        }
    }

    // 2. The commit: manifests of the files whose copies all landed,
    //    conditionally; each counts once a quorum holds it.
    let committing: Vec<usize> = (0..sealed.len())
        .filter(|f| !part_failures.contains_key(f))
        .collect();
    let writes: Vec<Write> = committing
        .iter()
        .map(|&f| {
            let s = &sealed[f];
            Write {
                id: s.manifest_id.clone(),
                manifest: s.manifest.clone(),
                sealed: s.sealed_manifest.clone(),
                seen: match &s.previous {
                    Some(e) => seen_from_entry(vault, e),
                    None => vec![Some(Expect::Absent); vault.node_count()],
                },
            }
        })
        .collect();
    let mut committed: HashMap<usize, CommitOutcome> = committing
        .into_iter()
        .zip(commit(vault, &writes).await)
        .collect();

    // 3. Outcomes, and what to remove: new parts of failed files, old parts
    //    of committed ones.
    let mut remove: HashMap<usize, Vec<BlobId>> = HashMap::new();
    let mut doomed = |m: &Manifest| {
        for (node, id) in crate::layout::blob_copies(vault, m) {
            remove.entry(node).or_default().push(id);
        }
    };
    let mut blamed_by_index: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut commit_blame: Vec<(usize, Vec<String>)> = Vec::new();
    // Files whose manifest may have landed: their failure stays as it is.
    let mut kept: Vec<usize> = Vec::new();
    for (f, s) in sealed.iter().enumerate() {
        let name = &s.file.name;
        let outcome = if let Some(why) = part_failures.get(&f) {
            doomed(&s.manifest);
            Outcome::Failed(OpError::Unavailable(format!(
                "{name}: not stored ({}); nothing was changed",
                why.join("; ")
            )))
        } else {
            match committed
                .remove(&f)
                .expect("every committing file has an outcome")
            {
                CommitOutcome::Committed { missed, replaced } => {
                    let read = s
                        .previous
                        .iter()
                        .flat_map(|prev| std::iter::once(&prev.newest).chain(&prev.older));
                    let mut removed: Vec<&[u8]> = Vec::new();
                    for old in read.chain(&replaced) {
                        if !old.deleted
                            && old.file_id != s.manifest.file_id
                            && !removed.contains(&&old.file_id[..])
                        {
                            removed.push(&old.file_id);
                            doomed(old);
                        }
                    }
                    progress.advance(s.manifest.size);
                    let mut warnings: Vec<String> = degraded_note.to_vec();
                    if !missed.is_empty() {
                        commit_blame.push((s.index, missed.clone()));
                        warnings.push(format!(
                            "{name}: the manifest could not be written to {}; run repair to bring it up to date",
                            missed.join("; ")
                        ));
                    }
                    Outcome::Stored(PutReport {
                        name: name.clone(),
                        size: s.manifest.size,
                        version: s.manifest.version,
                        warnings,
                    })
                }
                CommitOutcome::Lost { winner, left } => {
                    if !left {
                        doomed(&s.manifest);
                    }
                    Outcome::Failed(conflict(name, &winner))
                }
                CommitOutcome::NotCommitted { why, left } => {
                    // A manifest that may have landed keeps its parts.
                    if !left {
                        doomed(&s.manifest);
                    } else {
                        kept.push(s.index);
                    }
                    commit_blame.push((s.index, why.clone()));
                    Outcome::Failed(OpError::Unavailable(format!(
                        "{name}: not stored: the manifest reached fewer than {} nodes ({}); {}",
                        quorum(vault),
                        why.join("; "),
                        if left {
                            "run repair, then PUT again"
                        } else {
                            "nothing was changed"
                        }
                    )))
                }
            }
        };
        results.push((s.index, outcome));
    }
    per_node(
        vault,
        remove,
        |s, ids| async move { delete_all(&s, &ids).await },
    )
    .await;

    // 4. A node that died while this batch was in flight: the files it
    //    failed get the one cause every later file gets (a degraded PUT
    //    sends them again without it), and the files stored without its
    //    copy get the one note the rest of a degraded PUT carries.
    let dead: Vec<usize> = vault
        .ready()
        .filter(|s| s.is_closed())
        .map(|s| s.node)
        .collect();
    if dead.is_empty() {
        return results;
    }
    let named = |texts: &[String]| -> Vec<usize> {
        (0..vault.node_count())
            .filter(|&n| {
                let name = vault.node_name(n);
                texts.iter().any(|t| {
                    t.strip_prefix(name)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
                })
            })
            .collect()
    };
    for (f, s) in sealed.iter().enumerate() {
        if let Some(nodes) = blamed.get(&f) {
            blamed_by_index.insert(s.index, nodes.clone());
        }
    }
    for (index, texts) in commit_blame {
        blamed_by_index.insert(index, named(&texts));
    }
    let only_dead = |i: &usize| {
        blamed_by_index
            .get(i)
            .is_some_and(|n| !n.is_empty() && n.iter().all(|n| dead.contains(n)))
    };
    let death = died(vault, degraded);
    let mut retry: Vec<usize> = Vec::new();
    for (index, outcome) in results.iter_mut() {
        if !only_dead(index) {
            continue;
        }
        let name = sealed
            .iter()
            .find(|s| s.index == *index)
            .map_or("", |s| s.file.name.as_str());
        match outcome {
            Outcome::Failed(_) if !kept.contains(index) => match &death {
                Ok(Some(_)) if again.is_some() => retry.push(*index),
                Err(why) => {
                    *outcome = Outcome::Failed(OpError::Unavailable(format!("{name}: {why}")))
                }
                _ => {}
            },
            Outcome::Stored(r) => {
                let prefix = format!("{name}: ");
                r.warnings.retain(|w| !w.starts_with(&prefix));
                for &n in &dead {
                    let note = stopped_note(vault, n);
                    if !r.warnings.contains(&note) {
                        r.warnings.push(note);
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(batch), Ok(Some(node))) = (again, death) {
        let batch: Vec<_> = batch
            .into_iter()
            .filter(|(i, ..)| retry.contains(i))
            .collect();
        if !batch.is_empty() {
            let mut note = degraded_note.to_vec();
            note.push(stopped_note(vault, node));
            let redone = Box::pin(store_batch(
                vault,
                batch,
                progress,
                &note,
                Some(node),
                false,
            ))
            .await;
            for (i, o) in redone {
                if let Some(slot) = results.iter_mut().find(|(j, _)| *j == i) {
                    slot.1 = o;
                }
            }
        }
    }
    results
}

/// The note a PUT that went on without `node` carries.
fn stopped_note(vault: &Vault, node: usize) -> String {
    format!(
        "{} stopped answering during this PUT: its copies are missing until you run repair with it back",
        vault.node_name(node)
    )
}
