//! On-disk formats: write-ahead log segments and snapshots, both sequences of frames
//! `[len: u32 LE][crc32: u32 LE][payload]`, and recovery from them.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::SnapshotEntry;
use crate::{Error, Result, Revision};

const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8] = b"skiff-snapshot-v1";
/// No single frame is larger than this; a larger length is a torn or corrupt header.
const MAX_FRAME: usize = 64 << 20;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_COMPACT: u8 = 3;

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { action, source }
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        detail: detail.into(),
    }
}

/// One logged change.
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

    /// Append this record as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(32);
        let (tag, revision, key, value): (u8, Revision, &str, &[u8]) = match self {
            Record::Put {
                revision,
                key,
                value,
            } => (TAG_PUT, *revision, key, value),
            Record::Delete { revision, key } => (TAG_DELETE, *revision, key, &[]),
            Record::Compact { revision } => (TAG_COMPACT, *revision, "", &[]),
        };
        payload.push(tag);
        payload.extend_from_slice(&revision.to_le_bytes());
        put_bytes(&mut payload, key.as_bytes());
        put_bytes(&mut payload, value);
        frame(out, &payload);
    }

    fn decode(payload: &[u8]) -> Option<Record> {
        let mut r = Reader(payload);
        let tag = r.u8()?;
        let revision = r.i64()?;
        let key = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let value = Bytes::copy_from_slice(r.bytes()?);
        Some(match tag {
            TAG_PUT => Record::Put {
                revision,
                key,
                value,
            },
            TAG_DELETE => Record::Delete { revision, key },
            TAG_COMPACT => Record::Compact { revision },
            _ => return None,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
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
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Split `data` into frame payloads. Returns the payloads and the length of the valid prefix;
/// the rest (if any) is a torn or corrupt tail.
fn frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0;
    while data.len() - at >= 8 {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or([0; 4]));
        if len > MAX_FRAME || data.len() - at - 8 < len {
            break;
        }
        let payload = &data[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        payloads.push(payload);
        at += 8 + len;
    }
    (payloads, at)
}

fn segment_name(first_revision: Revision) -> String {
    format!("wal-{first_revision:020}.log")
}

fn segments(dir: &Path) -> Result<Vec<(Revision, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing WAL segments"))? {
        let entry = entry.map_err(io("listing WAL segments"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = name
            .strip_prefix("wal-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<Revision>().ok())
        {
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

/// What is on disk.
pub(crate) struct Recovered {
    pub snapshot_revision: Revision,
    pub compacted: Revision,
    pub snapshot: Vec<SnapshotEntry>,
    /// Records after the snapshot, in order.
    pub records: Vec<Record>,
    /// The segment to keep appending to, and its valid length.
    pub live_segment: Option<(PathBuf, u64)>,
}

/// Read the snapshot and the WAL.
pub(crate) fn recover(dir: &Path) -> Result<Recovered> {
    let (snapshot_revision, compacted, snapshot) = read_snapshot(dir)?;
    let segments = segments(dir)?;
    let mut records = Vec::new();
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
            if !is_last {
                return Err(corrupt(format!(
                    "{}: bad record at offset {valid} before the end of the log",
                    path.display()
                )));
            }
            // A crash mid-append leaves a torn record at the tail: it was never acknowledged.
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
            records.push(record);
        }
        if is_last {
            live_segment = Some((path.clone(), valid as u64));
        }
    }
    Ok(Recovered {
        snapshot_revision,
        compacted,
        snapshot,
        records,
        live_segment,
    })
}

fn read_snapshot(dir: &Path) -> Result<(Revision, Revision, Vec<SnapshotEntry>)> {
    let path = dir.join(SNAPSHOT);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, Vec::new())),
        Err(e) => return Err(io("reading the snapshot")(e)),
    };
    let bad = || corrupt(format!("{}: damaged snapshot", path.display()));
    let (payloads, valid) = frames(&data);
    if valid != data.len() || payloads.len() < 2 {
        return Err(bad());
    }
    let mut header = Reader(payloads[0]);
    if header.bytes() != Some(SNAPSHOT_MAGIC) {
        return Err(bad());
    }
    let revision = header.i64().ok_or_else(bad)?;
    let compacted = header.i64().ok_or_else(bad)?;
    let count = header.i64().ok_or_else(bad)? as usize;
    if payloads.len() != count + 1 {
        return Err(bad());
    }
    let mut entries = Vec::with_capacity(count);
    for payload in &payloads[1..] {
        let mut r = Reader(payload);
        let key = String::from_utf8(r.bytes().ok_or_else(bad)?.to_vec()).map_err(|_| bad())?;
        let value = Bytes::copy_from_slice(r.bytes().ok_or_else(bad)?);
        let create_revision = r.i64().ok_or_else(bad)?;
        let mod_revision = r.i64().ok_or_else(bad)?;
        entries.push(SnapshotEntry {
            key,
            value,
            create_revision,
            mod_revision,
        });
    }
    Ok((revision, compacted, entries))
}

/// Write a snapshot atomically: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_snapshot(
    dir: &Path,
    revision: Revision,
    compacted: Revision,
    entries: &[SnapshotEntry],
) -> Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let file = File::create(&tmp).map_err(io("creating a snapshot"))?;
    let mut out = BufWriter::new(file);
    let mut buf = Vec::new();
    let mut header = Vec::new();
    put_bytes(&mut header, SNAPSHOT_MAGIC);
    header.extend_from_slice(&revision.to_le_bytes());
    header.extend_from_slice(&compacted.to_le_bytes());
    header.extend_from_slice(&(entries.len() as i64).to_le_bytes());
    frame(&mut buf, &header);
    for entry in entries {
        let mut payload = Vec::with_capacity(entry.key.len() + entry.value.len() + 24);
        put_bytes(&mut payload, entry.key.as_bytes());
        put_bytes(&mut payload, &entry.value);
        payload.extend_from_slice(&entry.create_revision.to_le_bytes());
        payload.extend_from_slice(&entry.mod_revision.to_le_bytes());
        frame(&mut buf, &payload);
        if buf.len() > 1 << 20 {
            out.write_all(&buf).map_err(io("writing a snapshot"))?;
            buf.clear();
        }
    }
    out.write_all(&buf).map_err(io("writing a snapshot"))?;
    let file = out
        .into_inner()
        .map_err(|e| io("writing a snapshot")(e.into_error()))?;
    file.sync_all().map_err(io("syncing a snapshot"))?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT)).map_err(io("installing a snapshot"))?;
    sync_dir(dir)
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
                    .and_then(|n| n.strip_prefix("wal-"))
                    .and_then(|n| n.strip_suffix(".log"))
                    .and_then(|n| n.parse().ok())
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

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
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
        for r in &records {
            r.encode(&mut buf);
        }
        let whole = buf.len();
        buf.extend_from_slice(&[7, 0, 0]);
        let (payloads, valid) = frames(&buf);
        assert_eq!(valid, whole);
        let decoded: Vec<Record> = payloads
            .iter()
            .map(|p| Record::decode(p).unwrap())
            .collect();
        assert_eq!(decoded, records);
        // A flipped bit in the last record stops the valid prefix before it.
        let mut damaged = buf[..whole].to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let (payloads, _) = frames(&damaged);
        assert_eq!(payloads.len(), 2);
    }
}
