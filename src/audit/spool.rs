//! A bounded on-disk spool of JSON lines: written by producers, drained by
//! one deliverer, so nothing is lost while a sink is down or the process restarts.
//!
//! Layout under the spool directory: `queue/<20-digit id>.jsonl` segments,
//! appended in order, and `queue/cursor` (`<segment id> <byte offset>`): every
//! byte before it has been delivered. Fully delivered segments are deleted,
//! except the newest, which always keeps the last line written (the audit
//! chain recovers from it after a crash).
//!
//! Size bound: the *undelivered* bytes never exceed `max_bytes`; disk use is
//! at most `max_bytes` plus one segment (`max_bytes / 8`, between 4 KiB and
//! 8 MiB). When a write would pass the bound, [`FullPolicy`] decides; either
//! way an error line is logged and a counter counts every refused or dropped
//! line, so nothing disappears silently.
//!
//! Writes are not fsynced one by one: the spool survives the process (and the
//! container) dying, which is what it is for; a node crash loses the page
//! cache, and with it usually the `emptyDir` the spool lives in.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sink::SinkStats;

/// How much of a segment one read takes when building a batch.
const READ_CHUNK: usize = 64 << 10;

/// What the spool does when a write would pass its size bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FullPolicy {
    /// Refuse the new lines with [`SpoolError::Full`]; the producer keeps them
    /// (the audit intake answers HTTP 503, file followers pause). Nothing that
    /// was accepted is ever lost. The default.
    #[default]
    Refuse,
    /// Accept the new lines and delete the oldest undelivered ones to make
    /// room; the count of deleted lines is logged and counted. For streams
    /// that must never block their producer (the operator's security events).
    DropOldest,
}

/// Where the spool lives and how big it may grow.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// Directory for segments and the cursor; created if missing.
    pub dir: PathBuf,
    /// Bound on undelivered bytes.
    pub max_bytes: u64,
    /// What happens when full.
    pub when_full: FullPolicy,
}

/// Why lines could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is full and the policy is [`FullPolicy::Refuse`].
    #[error(
        "spool is full: {pending} of {max} bytes are still waiting for the sink, {incoming} more do not fit; \
         retry later, and fix the sink or raise --spool-max-bytes"
    )]
    Full {
        /// Undelivered bytes.
        pending: u64,
        /// The bound.
        max: u64,
        /// Bytes refused.
        incoming: u64,
    },
    /// One write is larger than the whole spool.
    #[error(
        "{bytes} bytes in one write exceed the whole spool ({max} bytes): send smaller batches or raise --spool-max-bytes"
    )]
    TooLarge {
        /// Bytes in the write.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// A line contains a newline, which would split it in two.
    #[error("line {0} of the write contains a newline; spool lines must be single-line JSON")]
    Newline(usize),
    /// Disk trouble.
    #[error("spool I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// Lines read for delivery; hand it back to [`Spool::commit`] once delivered.
#[derive(Debug)]
pub struct Batch {
    /// The lines, each ending in `\n` (shared with the HTTP body without a copy).
    pub data: Bytes,
    /// Number of lines.
    pub lines: usize,
    end: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    seg: u64,
    off: u64,
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    id: u64,
    len: u64,
}

struct FullEpisode {
    since: Instant,
    last_log: Instant,
    refused_lines: u64,
}

struct Inner {
    segs: VecDeque<Seg>,
    writer: Option<(u64, File)>,
    reader: Option<(u64, File)>,
    cursor: Pos,
    pending: u64,
    full: Option<FullEpisode>,
}

/// The spool. Thread-safe; one deliverer at a time should call
/// [`Spool::next_batch`] and [`Spool::commit`].
pub struct Spool {
    name: String,
    queue: PathBuf,
    max_bytes: u64,
    policy: FullPolicy,
    seg_size: u64,
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
    stats: Arc<SinkStats>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("name", &self.name).field("queue", &self.queue).finish_non_exhaustive()
    }
}

const CURSOR: &str = "cursor";
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Spool {
    /// Opens (or creates) the spool; `name` labels its log lines.
    pub fn open(name: &str, config: &SpoolConfig, stats: Arc<SinkStats>) -> Result<Self, SpoolError> {
        let queue = config.dir.join("queue");
        std::fs::create_dir_all(&queue).map_err(io(&queue))?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&queue).map_err(io(&queue))? {
            let entry = entry.map_err(io(&queue))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut segs = VecDeque::new();
        for id in ids {
            let path = seg_path(&queue, id);
            let len = std::fs::metadata(&path).map_err(io(&path))?.len();
            segs.push_back(Seg { id, len });
        }
        if let Some(last) = segs.back_mut() {
            // A crash mid-write leaves a partial line; it was never acknowledged.
            let path = seg_path(&queue, last.id);
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
            let end = complete_end(&file, last.len).map_err(io(&path))?;
            if end != last.len {
                tracing::warn!(spool = name, file = %path.display(), bytes = last.len - end, "removing an unfinished line left by a crash; it had not been acknowledged");
                file.set_len(end).map_err(io(&path))?;
                last.len = end;
            }
        }
        let cursor = match read_cursor(&queue) {
            Some(pos) if !segs.is_empty() => pos,
            // Segments gone (or a fresh spool): start clean after the last known id.
            Some(pos) => Pos { seg: pos.seg.max(1), off: 0 },
            None => Pos { seg: segs.front().map_or(1, |s| s.id), off: 0 },
        };
        let seg_size = (config.max_bytes / 8).clamp(4 << 10, 8 << 20);
        let spool = Self {
            name: name.to_string(),
            queue,
            max_bytes: config.max_bytes,
            policy: config.when_full,
            seg_size,
            inner: Mutex::new(Inner { segs, writer: None, reader: None, cursor, pending: 0, full: None }),
            notify: tokio::sync::Notify::new(),
            stats,
        };
        {
            let mut inner = spool.lock();
            if let Some(seg) = inner.segs.iter().find(|s| s.id == inner.cursor.seg).copied() {
                inner.cursor.off = inner.cursor.off.min(seg.len);
            } else if let Some(seg) = inner.segs.iter().find(|s| s.id > inner.cursor.seg).copied() {
                inner.cursor = Pos { seg: seg.id, off: 0 };
            }
            spool.settle(&mut inner)?;
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent on-disk state; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Undelivered bytes.
    pub fn pending_bytes(&self) -> u64 {
        self.lock().pending
    }

    /// The size bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends lines (no `\n` inside) atomically: all of them or none.
    pub fn append<S: AsRef<str>>(&self, lines: &[S]) -> Result<(), SpoolError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 1).sum());
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref().as_bytes();
            if line.contains(&b'\n') {
                return Err(SpoolError::Newline(i + 1));
            }
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let n = buf.len() as u64;
        if n > self.max_bytes {
            return Err(SpoolError::TooLarge { bytes: n, max: self.max_bytes });
        }
        let mut inner = self.lock();
        if inner.pending + n > self.max_bytes {
            match self.policy {
                FullPolicy::Refuse => {
                    let err = SpoolError::Full { pending: inner.pending, max: self.max_bytes, incoming: n };
                    self.note_full(&mut inner, lines.len() as u64, &err);
                    return Err(err);
                }
                FullPolicy::DropOldest => self.drop_oldest(&mut inner, n)?,
            }
        }
        let need_roll = match (&inner.writer, inner.segs.back()) {
            (Some((id, _)), Some(last)) => *id != last.id || last.len >= self.seg_size,
            _ => true,
        };
        if need_roll {
            let reuse = inner.segs.back().filter(|s| s.len < self.seg_size).map(|s| s.id);
            let id = reuse.unwrap_or_else(|| inner.segs.back().map_or(inner.cursor.seg.max(1), |s| s.id + 1));
            let path = seg_path(&self.queue, id);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            if reuse.is_none() {
                inner.segs.push_back(Seg { id, len: 0 });
            }
            inner.writer = Some((id, file));
        }
        let Some((id, file)) = inner.writer.as_mut() else { unreachable!("writer set above") };
        let id = *id;
        if let Err(source) = file.write_all(&buf) {
            // Cut back to the last whole write so the segment never holds half a batch.
            let len = inner.segs.back().map_or(0, |s| s.len);
            if let Some((_, f)) = inner.writer.as_ref() {
                let _ = f.set_len(len);
            }
            inner.writer = None;
            return Err(SpoolError::Io { path: seg_path(&self.queue, id), source });
        }
        if let Some(last) = inner.segs.back_mut() {
            last.len += n;
        }
        inner.pending += n;
        self.stats.spooled_lines.fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats.pending_bytes.store(inner.pending, std::sync::atomic::Ordering::Relaxed);
        drop(inner);
        self.notify.notify_one();
        Ok(())
    }

    fn note_full(&self, inner: &mut Inner, lines: u64, err: &SpoolError) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.refused_lines.fetch_add(lines, Relaxed);
        let now = Instant::now();
        let episode = inner.full.get_or_insert_with(|| {
            self.stats.full_events.fetch_add(1, Relaxed);
            FullEpisode { since: now, last_log: now - LOG_EVERY, refused_lines: 0 }
        });
        episode.refused_lines += lines;
        if now.duration_since(episode.last_log) >= LOG_EVERY {
            episode.last_log = now;
            tracing::error!(
                spool = %self.name,
                pending_bytes = inner.pending,
                max_bytes = self.max_bytes,
                policy = "refuse",
                refused_lines = episode.refused_lines,
                full_for_secs = now.duration_since(episode.since).as_secs(),
                "{} {err}; new lines are refused until the sink takes the backlog",
                self.name
            );
        }
    }

    fn drop_oldest(&self, inner: &mut Inner, incoming: u64) -> Result<(), SpoolError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut dropped_lines = 0;
        let mut dropped_bytes = 0;
        while inner.pending + incoming > self.max_bytes {
            let Some(seg) = inner.segs.iter().find(|s| s.id == inner.cursor.seg).copied() else {
                break;
            };
            let path = seg_path(&self.queue, seg.id);
            let file = File::open(&path).map_err(io(&path))?;
            dropped_lines += count_newlines(&file, inner.cursor.off, seg.len).map_err(io(&path))?;
            dropped_bytes += seg.len - inner.cursor.off;
            inner.cursor.off = seg.len;
            self.settle(inner)?;
            if inner.cursor.seg == seg.id {
                break; // The newest segment is now fully skipped.
            }
        }
        self.stats.dropped_lines.fetch_add(dropped_lines, Relaxed);
        self.stats.full_events.fetch_add(1, Relaxed);
        tracing::error!(
            spool = %self.name,
            dropped_lines,
            dropped_bytes,
            max_bytes = self.max_bytes,
            policy = "drop-oldest",
            dropped_total = self.stats.dropped_lines.load(Relaxed),
            "{} spool is full: deleted the {dropped_lines} oldest undelivered lines to make room; fix the sink or raise --spool-max-bytes",
            self.name
        );
        Ok(())
    }

    /// The next lines to deliver (at most `max_lines`, about `max_bytes`; one
    /// line longer than that comes alone), or `None` when all were delivered.
    pub fn next_batch(&self, max_lines: usize, max_bytes: usize) -> Result<Option<Batch>, SpoolError> {
        let mut inner = self.lock();
        self.settle(&mut inner)?;
        let cur = inner.cursor;
        let Some(seg) = inner.segs.iter().find(|s| s.id == cur.seg).copied() else {
            return Ok(None);
        };
        if cur.off >= seg.len {
            return Ok(None);
        }
        let path = seg_path(&self.queue, seg.id);
        if inner.reader.as_ref().is_none_or(|(id, _)| *id != seg.id) {
            inner.reader = Some((seg.id, File::open(&path).map_err(io(&path))?));
        }
        let Some((_, file)) = inner.reader.as_ref() else { unreachable!("reader set above") };
        let avail = (seg.len - cur.off) as usize;
        let max_lines = max_lines.max(1);
        // Read in chunks and stop at the line limit, so a batch of short lines does not cost a
        // `max_bytes` buffer; one line longer than `max_bytes` doubles the limit until it fits.
        let mut limit = avail.min(max_bytes.max(1));
        let mut data: Vec<u8> = Vec::new();
        let (mut lines, mut cut) = (0usize, 0usize);
        let mut oversized = false;
        while lines < max_lines && !(oversized && lines > 0) {
            let start = data.len();
            if start >= limit {
                if lines > 0 || limit >= avail {
                    break;
                }
                limit = (limit * 2).min(avail);
                oversized = true;
                continue;
            }
            data.resize((start + READ_CHUNK).min(limit), 0);
            file.read_exact_at(&mut data[start..], cur.off + start as u64).map_err(io(&path))?;
            for (i, b) in data[start..].iter().enumerate() {
                if *b == b'\n' {
                    lines += 1;
                    cut = start + i + 1;
                    if lines >= max_lines || oversized {
                        break;
                    }
                }
            }
        }
        if lines == 0 {
            // Cannot happen with whole-line writes; never hand out an empty batch forever.
            tracing::error!(spool = %self.name, file = %path.display(), "spool segment ends without a newline; waiting for more data");
            return Ok(None);
        }
        data.truncate(cut);
        // Drop the slack of the last chunk: the batch may wait through many retries.
        data.shrink_to_fit();
        Ok(Some(Batch { data: Bytes::from(data), lines, end: Pos { seg: seg.id, off: cur.off + cut as u64 } }))
    }

    /// Marks a batch delivered; its bytes leave the spool.
    pub fn commit(&self, batch: &Batch) -> Result<(), SpoolError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut inner = self.lock();
        if batch.end > inner.cursor {
            inner.cursor = batch.end;
            self.stats.delivered_lines.fetch_add(batch.lines as u64, Relaxed);
        }
        self.settle(&mut inner)?;
        if let Some(ep) = &inner.full
            && inner.pending < self.max_bytes / 2
        {
            tracing::warn!(
                spool = %self.name,
                refused_lines = ep.refused_lines,
                full_for_secs = ep.since.elapsed().as_secs(),
                "{} spool has room again; {} lines were refused while it was full",
                self.name,
                ep.refused_lines
            );
            inner.full = None;
        }
        Ok(())
    }

    /// Moves the cursor off finished segments, deletes them, persists the
    /// cursor and recomputes the undelivered byte count.
    fn settle(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        while let Some(pos) = inner.segs.iter().position(|s| s.id == inner.cursor.seg) {
            match inner.segs.get(pos + 1) {
                Some(next) if inner.cursor.off >= inner.segs[pos].len => inner.cursor = Pos { seg: next.id, off: 0 },
                _ => break,
            }
        }
        while inner.segs.len() > 1 && inner.segs.front().is_some_and(|s| s.id < inner.cursor.seg) {
            if let Some(seg) = inner.segs.pop_front() {
                let path = seg_path(&self.queue, seg.id);
                if inner.reader.as_ref().is_some_and(|(id, _)| *id == seg.id) {
                    inner.reader = None;
                }
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(SpoolError::Io { path, source: e });
                    }
                    _ => {}
                }
            }
        }
        write_cursor(&self.queue, inner.cursor)?;
        let cursor = inner.cursor;
        inner.pending = inner
            .segs
            .iter()
            .filter(|s| s.id >= cursor.seg)
            .map(|s| if s.id == cursor.seg { s.len.saturating_sub(cursor.off) } else { s.len })
            .sum();
        self.stats.pending_bytes.store(inner.pending, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Waits until lines may have been appended since the last `next_batch`.
    pub async fn wait_for_lines(&self) {
        self.notify.notified().await;
    }

    /// The last line ever appended that is still on disk (delivered or not).
    pub fn last_line(&self) -> Result<Option<String>, SpoolError> {
        let inner = self.lock();
        for seg in inner.segs.iter().rev() {
            let path = seg_path(&self.queue, seg.id);
            let file = File::open(&path).map_err(io(&path))?;
            if let Some(line) = last_line_of(&file, seg.len).map_err(io(&path))? {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }
}

fn seg_path(queue: &Path, id: u64) -> PathBuf {
    queue.join(format!("{id:020}.jsonl"))
}

fn read_cursor(queue: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(queue.join(CURSOR)).ok()?;
    let mut parts = text.split_whitespace();
    let seg = parts.next()?.parse().ok()?;
    let off = parts.next()?.parse().ok()?;
    Some(Pos { seg, off })
}

fn write_cursor(queue: &Path, pos: Pos) -> Result<(), SpoolError> {
    if read_cursor(queue) == Some(pos) {
        return Ok(());
    }
    write_atomic(&queue.join(CURSOR), format!("{} {}\n", pos.seg, pos.off).as_bytes())
}

/// Replaces `path` with `bytes` so a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// End offset of the last complete line (0 when there is none).
fn complete_end(file: &File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn last_line_of(file: &File, len: u64) -> std::io::Result<Option<String>> {
    let end = complete_end(file, len)?;
    if end == 0 {
        return Ok(None);
    }
    let start = complete_end(file, end - 1)?;
    let mut line = vec![0u8; (end - 1 - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(String::from_utf8(line).ok())
}

fn count_newlines(file: &File, from: u64, to: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = from;
    let mut n = 0;
    while pos < to {
        let len = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..len], pos)?;
        n += buf[..len].iter().filter(|b| **b == b'\n').count() as u64;
        pos += len as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn spool(dir: &Path, max: u64, policy: FullPolicy) -> Spool {
        let cfg = SpoolConfig { dir: dir.to_path_buf(), max_bytes: max, when_full: policy };
        Spool::open("test", &cfg, Arc::new(SinkStats::default())).unwrap()
    }

    fn drain(s: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = s.next_batch(3, 100).unwrap() {
            out.extend(String::from_utf8(b.data.to_vec()).unwrap().lines().map(str::to_string));
            s.commit(&b).unwrap();
        }
        out
    }

    #[test]
    fn batches_keep_their_line_and_byte_bounds_across_read_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool(dir.path(), 64 << 20, FullPolicy::Refuse);
        let short: Vec<String> = (0..3000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(90))).collect();
        let long = format!("{{\"long\":\"{}\"}}", "y".repeat(3 * READ_CHUNK));
        s.append(&short[..2000]).unwrap();
        s.append(std::slice::from_ref(&long)).unwrap();
        s.append(&short[2000..]).unwrap();
        // The line limit ends a batch inside the second read chunk...
        let b = s.next_batch(1000, 1 << 20).unwrap().unwrap();
        assert_eq!((b.lines, b.data.len()), (1000, short[..1000].iter().map(|l| l.len() + 1).sum()));
        s.commit(&b).unwrap();
        // ...the byte limit ends one at the last whole line before it...
        let b = s.next_batch(5000, 100 * 1024).unwrap().unwrap();
        assert!(b.data.len() <= 100 * 1024 && b.data.ends_with(b"\n"), "{}", b.data.len());
        let taken = b.lines;
        s.commit(&b).unwrap();
        let b = s.next_batch(5000, 150 * 1024).unwrap().unwrap();
        assert_eq!(b.lines, 1000 - taken, "up to the long line, which does not fit in 150 KiB with them");
        s.commit(&b).unwrap();
        // ...and a line longer than max_bytes comes alone, whole.
        let b = s.next_batch(5000, 1000).unwrap().unwrap();
        assert_eq!((b.lines, b.data.len()), (1, long.len() + 1));
        assert!(b.data.starts_with(b"{\"long\"") && b.data.ends_with(b"}\n"));
        s.commit(&b).unwrap();
        assert_eq!(drain(&s), short[2000..]);
    }

    #[test]
    fn lines_come_out_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool(dir.path(), 1 << 20, FullPolicy::Refuse);
        let lines: Vec<String> = (0..2000).map(|i| format!("{{\"n\":{i}}}")).collect();
        for chunk in lines.chunks(7) {
            s.append(chunk).unwrap();
        }
        // Deliver half, then reopen as after a restart.
        let mut got = Vec::new();
        while got.len() < 1000 {
            let b = s.next_batch(50, 4096).unwrap().unwrap();
            got.extend(String::from_utf8(b.data.to_vec()).unwrap().lines().map(str::to_string));
            s.commit(&b).unwrap();
        }
        drop(s);
        let s = spool(dir.path(), 1 << 20, FullPolicy::Refuse);
        got.extend(drain(&s));
        assert_eq!(got, lines);
        assert_eq!(s.pending_bytes(), 0);
        assert_eq!(s.last_line().unwrap().as_deref(), Some("{\"n\":1999}"));
        // Delivered segments are gone, the newest stays.
        let files = std::fs::read_dir(dir.path().join("queue")).unwrap().count();
        assert_eq!(files, 2, "one segment and the cursor");
    }

    #[test]
    fn a_partial_line_from_a_crash_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool(dir.path(), 1 << 20, FullPolicy::Refuse);
        s.append(&["{\"a\":1}"]).unwrap();
        drop(s);
        let seg = seg_path(&dir.path().join("queue"), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"half\":").unwrap();
        let s = spool(dir.path(), 1 << 20, FullPolicy::Refuse);
        s.append(&["{\"b\":2}"]).unwrap();
        assert_eq!(drain(&s), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn refuse_policy_refuses_whole_batches_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool(dir.path(), 100, FullPolicy::Refuse);
        s.append(&["x".repeat(59)]).unwrap();
        let err = s.append(&["y".repeat(20), "z".repeat(20)]).unwrap_err();
        assert!(matches!(err, SpoolError::Full { pending: 60, max: 100, incoming: 42 }), "{err}");
        assert_eq!(s.stats.refused_lines.load(Relaxed), 2);
        assert!(matches!(s.append(&["w".repeat(200)]), Err(SpoolError::TooLarge { .. })));
        assert!(matches!(s.append(&["a\nb"]), Err(SpoolError::Newline(1))));
        assert_eq!(drain(&s), ["x".repeat(59)]);
        s.append(&["y".repeat(20), "z".repeat(20)]).unwrap();
        assert_eq!(drain(&s).len(), 2);
    }

    #[test]
    fn drop_oldest_policy_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // 32 KiB bound: 4 KiB segments, so the oldest segment goes first.
        let s = spool(dir.path(), 32 << 10, FullPolicy::DropOldest);
        let line = "d".repeat(99);
        for _ in 0..400 {
            s.append(&[&line]).unwrap();
        }
        let dropped = s.stats.dropped_lines.load(Relaxed);
        assert!(dropped > 0 && s.pending_bytes() <= 32 << 10);
        assert_eq!(drain(&s).len() as u64 + dropped, 400);
    }
}
