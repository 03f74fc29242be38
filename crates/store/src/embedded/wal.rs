//! On-disk formats: write-ahead log segments and snapshots, both sequences of frames
//! `[len: u32 LE][crc32: u32 LE][payload]`, and recovery from them.
//!
//! A crash in the middle of an append leaves a *torn tail*: a last frame that is cut short,
//! zero-filled or fails its CRC, with nothing valid after it. Those bytes were never
//! acknowledged (acknowledgement waits for the `fdatasync` that covers them), so recovery
//! cuts them off. A bad frame *followed by valid frames* is different: cutting there would
//! drop acknowledged writes, so recovery refuses with [`Error::Corrupt`], as etcd's WAL does
//! on a CRC mismatch (upstream: etcd server/storage/wal/decoder.go).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::index::SnapshotEntry;
use crate::{Error, Result, Revision};

const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8] = b"skiff-snapshot-v2";
/// No single frame is larger than this; a larger length is a torn or corrupt header.
const MAX_FRAME: usize = 64 << 20;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_COMPACT: u8 = 3;

const SNAP_HEADER: u8 = b'H';
const SNAP_ENTRY: u8 = b'E';
const SNAP_TRAILER: u8 = b'T';

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { action, source }
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        detail: detail.into(),
    }
}

/// One logged change, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// `key` set to `value` at `revision`.
    Put {
        revision: Revision,
        key: String,
        value: Bytes,
    },
    /// `key` deleted at `revision`.
    Delete { revision: Revision, key: String },
    /// History at and below `revision` discarded.
    Compact { revision: Revision },
}

impl Record {
    /// The revision this record creates (compactions create none).
    pub fn write_revision(&self) -> Option<Revision> {
        match self {
            Record::Put { revision, .. } | Record::Delete { revision, .. } => Some(*revision),
            Record::Compact { .. } => None,
        }
    }

    fn decode(payload: &[u8]) -> Option<Record> {
        let mut r = Reader(payload);
        let tag = r.u8()?;
        let revision = r.i64()?;
        let key = std::str::from_utf8(r.bytes()?).ok()?.to_owned();
        let value = r.bytes()?;
        Some(match tag {
            TAG_PUT => Record::Put {
                revision,
                key,
                value: Bytes::copy_from_slice(value),
            },
            TAG_DELETE => Record::Delete { revision, key },
            TAG_COMPACT => Record::Compact { revision },
            _ => return None,
        })
    }
}

/// Append a put record, framed, to `out` (no intermediate buffer: the hot path).
pub(crate) fn encode_put(out: &mut Vec<u8>, revision: Revision, key: &str, value: &[u8]) {
    encode(out, TAG_PUT, revision, key, value);
}

/// Append a delete record, framed, to `out`.
pub(crate) fn encode_delete(out: &mut Vec<u8>, revision: Revision, key: &str) {
    encode(out, TAG_DELETE, revision, key, &[]);
}

/// Append a compaction record, framed, to `out`.
pub(crate) fn encode_compact(out: &mut Vec<u8>, revision: Revision) {
    encode(out, TAG_COMPACT, revision, "", &[]);
}

fn encode(out: &mut Vec<u8>, tag: u8, revision: Revision, key: &str, value: &[u8]) {
    let start = out.len();
    out.reserve(8 + 1 + 8 + 4 + key.len() + 4 + value.len());
    out.extend_from_slice(&[0; 8]);
    out.push(tag);
    out.extend_from_slice(&revision.to_le_bytes());
    put_bytes(out, key.as_bytes());
    put_bytes(out, value);
    seal(out, start);
}

/// Fill in the frame header of the frame that begins at `start` and runs to the end of `out`.
fn seal(out: &mut [u8], start: usize) {
    let payload = &out[start + 8..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// The frame at the start of `data`: its payload, or `None` if it is cut short or damaged.
/// A zero length is never written, so zero-filled space (a crash after the file grew but
/// before its data landed) reads as damage, not as empty records.
fn frame_at(data: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(data);
    let len = r.u32()? as usize;
    let crc = r.u32()?;
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = r.take(len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Split `data` into frame payloads. Returns the payloads and the length of the valid prefix;
/// the rest (if any) is a torn or damaged tail.
fn frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0;
    while let Some(payload) = frame_at(&data[at..]) {
        payloads.push(payload);
        at += 8 + payload.len();
    }
    (payloads, at)
}

/// Whether the damage that starts `tail` is a torn last append rather than corruption in the
/// middle: a damaged frame with intact frames after it is corruption.
fn is_torn_tail(tail: &[u8]) -> bool {
    let mut r = Reader(tail);
    let (Some(len), Some(_crc)) = (r.u32(), r.u32()) else {
        return true;
    };
    let len = len as usize;
    if len == 0 || len > MAX_FRAME || r.0.len() <= len {
        // Cut short at the end of the file, or garbage: nothing trustworthy follows.
        return true;
    }
    frame_at(&r.0[len..]).is_none()
}

fn segment_name(first_revision: Revision) -> String {
    format!("wal-{first_revision:020}.log")
}

fn parse_segment_name(name: &str) -> Option<Revision> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn segments(dir: &Path) -> Result<Vec<(Revision, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing WAL segments"))? {
        let entry = entry.map_err(io("listing WAL segments"))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the data directory"))
}

/// What recovery found besides the data it handed over.
pub(crate) struct Recovered {
    /// The revision the snapshot was taken at (0 without one).
    pub snapshot_revision: Revision,
    /// The compaction point recorded in the snapshot.
    pub compacted: Revision,
    /// The last revision recovered.
    pub revision: Revision,
    /// The segment to keep appending to, and its valid length.
    pub live_segment: Option<(PathBuf, u64)>,
}

/// Something recovery read, in the order it must be applied.
pub(crate) enum Replayed {
    /// A live key from the snapshot.
    Entry(SnapshotEntry),
    /// A WAL record newer than the snapshot.
    Record(Record),
}

/// Read the snapshot and then every WAL record newer than it, handing each to `apply`.
pub(crate) fn recover(dir: &Path, mut apply: impl FnMut(Replayed)) -> Result<Recovered> {
    // A snapshot that was being written when the process died is incomplete; the previous
    // one (still in place, as the rename never happened) and the WAL cover its contents.
    if let Err(e) = std::fs::remove_file(dir.join(SNAPSHOT_TMP))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io("removing an incomplete snapshot")(e));
    }
    let (snapshot_revision, compacted) =
        read_snapshot(dir, &mut |entry| apply(Replayed::Entry(entry)))?;
    let segments = segments(dir)?;
    let mut last = snapshot_revision;
    let mut live_segment = None;
    for (i, (_, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io("reading a WAL segment"))?;
        let (payloads, valid) = frames(&data);
        if valid < data.len() {
            if !is_last || !is_torn_tail(&data[valid..]) {
                return Err(corrupt(format!(
                    "{}: damaged record at offset {valid} before the end of the log",
                    path.display()
                )));
            }
            // A crash mid-append: those bytes were never acknowledged.
            tracing::warn!(
                segment = %path.display(),
                dropped_bytes = data.len() - valid,
                "discarding a torn record at the end of the write-ahead log"
            );
        }
        for payload in payloads {
            let record = Record::decode(payload)
                .ok_or_else(|| corrupt(format!("{}: undecodable record", path.display())))?;
            match record.write_revision() {
                // Already in the snapshot (a segment written while it was being taken).
                Some(revision) if revision <= last => continue,
                Some(revision) if revision != last + 1 => {
                    return Err(corrupt(format!(
                        "{}: revision {revision} follows {last}",
                        path.display()
                    )));
                }
                Some(revision) => last = revision,
                None => {}
            }
            apply(Replayed::Record(record));
        }
        if is_last {
            live_segment = Some((path.clone(), valid as u64));
        }
    }
    Ok(Recovered {
        snapshot_revision,
        compacted,
        revision: last,
        live_segment,
    })
}

/// Stream the snapshot's entries to `on_entry`; returns its revision and compaction point.
fn read_snapshot(
    dir: &Path,
    on_entry: &mut impl FnMut(SnapshotEntry),
) -> Result<(Revision, Revision)> {
    let path = dir.join(SNAPSHOT);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io("opening the snapshot")(e)),
    };
    read_snapshot_from(&path, file, on_entry)
}

/// Read a snapshot file anywhere (e.g. one saved by `skiff snapshot save`), checking every
/// frame; returns its revision and compaction point.
pub(crate) fn read_snapshot_file(
    path: &Path,
    on_entry: &mut impl FnMut(SnapshotEntry),
) -> Result<(Revision, Revision)> {
    let file = File::open(path).map_err(io("opening the snapshot"))?;
    read_snapshot_from(path, file, on_entry)
}

fn read_snapshot_from(
    path: &Path,
    file: File,
    on_entry: &mut impl FnMut(SnapshotEntry),
) -> Result<(Revision, Revision)> {
    let bad = || corrupt(format!("{}: damaged snapshot", path.display()));
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut payload = Vec::new();
    let mut next = |payload: &mut Vec<u8>| -> Result<()> {
        let mut header = [0u8; 8];
        input
            .read_exact(&mut header)
            .map_err(|_| bad())
            .and_then(|()| {
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                if len == 0 || len as usize > MAX_FRAME {
                    return Err(bad());
                }
                payload.resize(len as usize, 0);
                input.read_exact(payload).map_err(|_| bad())?;
                if crc32fast::hash(payload) != crc {
                    return Err(bad());
                }
                Ok(())
            })
    };
    next(&mut payload)?;
    let mut r = Reader(&payload);
    if r.u8() != Some(SNAP_HEADER) || r.bytes() != Some(SNAPSHOT_MAGIC) {
        return Err(bad());
    }
    let revision = r.i64().ok_or_else(bad)?;
    let compacted = r.i64().ok_or_else(bad)?;
    let mut count: i64 = 0;
    loop {
        next(&mut payload)?;
        let mut r = Reader(&payload);
        match r.u8() {
            Some(SNAP_ENTRY) => {
                let key = std::str::from_utf8(r.bytes().ok_or_else(bad)?).map_err(|_| bad())?;
                let key: Arc<str> = Arc::from(key);
                let value = Bytes::copy_from_slice(r.bytes().ok_or_else(bad)?);
                let create_revision = r.i64().ok_or_else(bad)?;
                let mod_revision = r.i64().ok_or_else(bad)?;
                count += 1;
                on_entry(SnapshotEntry {
                    key,
                    value,
                    create_revision,
                    mod_revision,
                });
            }
            Some(SNAP_TRAILER) if r.i64() == Some(count) => return Ok((revision, compacted)),
            _ => return Err(bad()),
        }
    }
}

/// Writes a snapshot atomically: entries go to a temporary file, which is synced, renamed
/// over the old snapshot and made durable by syncing the directory.
pub(crate) struct SnapshotWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
    count: i64,
}

/// Append a snapshot's header frame to `out`.
pub(crate) fn encode_snapshot_header(out: &mut Vec<u8>, revision: Revision, compacted: Revision) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(SNAP_HEADER);
    put_bytes(out, SNAPSHOT_MAGIC);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&compacted.to_le_bytes());
    seal(out, start);
}

/// Append one snapshot entry frame to `out`.
pub(crate) fn encode_snapshot_entry(out: &mut Vec<u8>, entry: &SnapshotEntry) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(SNAP_ENTRY);
    put_bytes(out, entry.key.as_bytes());
    put_bytes(out, &entry.value);
    out.extend_from_slice(&entry.create_revision.to_le_bytes());
    out.extend_from_slice(&entry.mod_revision.to_le_bytes());
    seal(out, start);
}

/// Append the trailer frame (the entry count) that completes a snapshot.
pub(crate) fn encode_snapshot_trailer(out: &mut Vec<u8>, count: i64) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(SNAP_TRAILER);
    out.extend_from_slice(&count.to_le_bytes());
    seal(out, start);
}

/// Whether `data` starts like a Skiff snapshot.
pub(crate) fn is_snapshot(data: &[u8]) -> bool {
    frame_at(data).is_some_and(|payload| {
        let mut r = Reader(payload);
        r.u8() == Some(SNAP_HEADER) && r.bytes() == Some(SNAPSHOT_MAGIC)
    })
}

impl SnapshotWriter {
    /// Start a snapshot of the state at `revision`.
    pub fn create(dir: &Path, revision: Revision, compacted: Revision) -> Result<SnapshotWriter> {
        let file = File::create(dir.join(SNAPSHOT_TMP)).map_err(io("creating a snapshot"))?;
        let mut writer = SnapshotWriter {
            dir: dir.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            buf: Vec::new(),
            count: 0,
        };
        encode_snapshot_header(&mut writer.buf, revision, compacted);
        writer.flush_frame()?;
        Ok(writer)
    }

    fn flush_frame(&mut self) -> Result<()> {
        self.out
            .write_all(&self.buf)
            .map_err(io("writing a snapshot"))?;
        self.buf.clear();
        Ok(())
    }

    /// Add live keys.
    pub fn write(&mut self, entries: &[SnapshotEntry]) -> Result<()> {
        for entry in entries {
            encode_snapshot_entry(&mut self.buf, entry);
            self.count += 1;
        }
        self.flush_frame()
    }

    /// Seal the snapshot and install it in place of the previous one.
    pub fn finish(mut self) -> Result<()> {
        encode_snapshot_trailer(&mut self.buf, self.count);
        self.flush_frame()?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("writing a snapshot")(e.into_error()))?;
        file.sync_all().map_err(io("syncing a snapshot"))?;
        std::fs::rename(self.dir.join(SNAPSHOT_TMP), self.dir.join(SNAPSHOT))
            .map_err(io("installing a snapshot"))?;
        sync_dir(&self.dir)
    }
}

/// The appending end of the log.
pub(crate) struct Writer {
    dir: PathBuf,
    file: File,
    first_revision: Revision,
    bytes: u64,
}

impl Writer {
    /// Continue the live segment (cut to its valid length) or start one at `next_revision`.
    pub fn open(
        dir: &Path,
        next_revision: Revision,
        live: Option<(PathBuf, u64)>,
    ) -> Result<Writer> {
        match live {
            Some((path, valid)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io("opening the WAL"))?;
                file.set_len(valid)
                    .map_err(io("truncating a torn WAL tail"))?;
                file.sync_all().map_err(io("syncing the WAL"))?;
                let first_revision = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_segment_name)
                    .unwrap_or(next_revision);
                Ok(Writer {
                    dir: dir.to_owned(),
                    file,
                    first_revision,
                    bytes: valid,
                })
            }
            None => Self::create(dir, next_revision),
        }
    }

    fn create(dir: &Path, first_revision: Revision) -> Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(segment_name(first_revision)))
            .map_err(io("creating a WAL segment"))?;
        sync_dir(dir)?;
        Ok(Writer {
            dir: dir.to_owned(),
            file,
            first_revision,
            bytes: 0,
        })
    }

    /// Append encoded records; with `sync`, return only once they are on stable storage.
    pub fn append(&mut self, buffer: &[u8], sync: bool) -> Result<()> {
        self.file
            .write_all(buffer)
            .map_err(io("appending to the WAL"))?;
        if sync {
            self.file.sync_data().map_err(io("syncing the WAL"))?;
        }
        self.bytes += buffer.len() as u64;
        Ok(())
    }

    /// Size of the live segment.
    pub fn segment_bytes(&self) -> u64 {
        self.bytes
    }

    /// Start a new segment whose records begin at `next_revision`.
    pub fn rotate(&mut self, next_revision: Revision) -> Result<()> {
        self.file.sync_all().map_err(io("syncing the WAL"))?;
        if next_revision == self.first_revision {
            return Ok(());
        }
        *self = Self::create(&self.dir, next_revision)?;
        Ok(())
    }

    /// Delete segments older than the live one (a snapshot now covers them).
    pub fn remove_old_segments(&self) -> Result<()> {
        for (first, path) in segments(&self.dir)? {
            if first < self.first_revision {
                std::fs::remove_file(&path).map_err(io("removing an old WAL segment"))?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<Record>) {
        let records = vec![
            Record::Put {
                revision: 1,
                key: "/a".into(),
                value: Bytes::from_static(b"{}"),
            },
            Record::Delete {
                revision: 2,
                key: "/a".into(),
            },
            Record::Compact { revision: 1 },
        ];
        let mut buf = Vec::new();
        encode_put(&mut buf, 1, "/a", b"{}");
        encode_delete(&mut buf, 2, "/a");
        encode_compact(&mut buf, 1);
        (buf, records)
    }

    #[test]
    fn records_round_trip() {
        let (buf, records) = sample();
        let (payloads, valid) = frames(&buf);
        assert_eq!(valid, buf.len());
        let decoded: Vec<Record> = payloads
            .iter()
            .map(|p| Record::decode(p).unwrap())
            .collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn torn_tails_are_told_apart_from_damage_in_the_middle() {
        let (buf, _) = sample();
        let whole = buf.len();
        // A header cut short, a frame cut short, zero-filled space: torn.
        for tail in [vec![7u8, 0, 0], buf[..20].to_vec(), vec![0u8; 4096]] {
            let mut data = buf.clone();
            data.extend_from_slice(&tail);
            let (payloads, valid) = frames(&data);
            assert_eq!((payloads.len(), valid), (3, whole));
            assert!(is_torn_tail(&data[valid..]));
        }
        // A flipped bit in the last record: torn (nothing valid follows).
        let mut damaged = buf.clone();
        damaged[whole - 1] ^= 1;
        let (payloads, valid) = frames(&damaged);
        assert_eq!(payloads.len(), 2);
        assert!(is_torn_tail(&damaged[valid..]));
        // A flipped bit in the first record, with intact records after it: corruption.
        let mut damaged = buf.clone();
        damaged[12] ^= 1;
        let (payloads, valid) = frames(&damaged);
        assert_eq!((payloads.len(), valid), (0, 0));
        assert!(!is_torn_tail(&damaged[valid..]));
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::create(dir.path(), 9, 4).unwrap();
        let entries: Vec<SnapshotEntry> = (0..3)
            .map(|i| SnapshotEntry {
                key: Arc::from(format!("/k/{i}").as_str()),
                value: Bytes::from(vec![b'v'; i * 10]),
                create_revision: i as i64 + 1,
                mod_revision: i as i64 + 5,
            })
            .collect();
        writer.write(&entries[..1]).unwrap();
        writer.write(&entries[1..]).unwrap();
        writer.finish().unwrap();
        let mut read = Vec::new();
        let (revision, compacted) = read_snapshot(dir.path(), &mut |e| read.push(e)).unwrap();
        assert_eq!((revision, compacted), (9, 4));
        assert_eq!(read, entries);
        // A truncated snapshot is refused rather than loaded partially.
        let path = dir.path().join(SNAPSHOT);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        assert!(matches!(
            read_snapshot(dir.path(), &mut |_| {}),
            Err(Error::Corrupt { .. })
        ));
    }
}
