//! The local append-only spool that holds records while PostgreSQL is away.
//!
//! File format: a sequence of frames, each `magic (2 bytes: 0xA5 0x17)`,
//! `payload length (u32 LE)`, `CRC-32 of the payload (u32 LE)`, then the
//! payload (one [`Record`] as JSON). Every append is fsync'd. On open, the
//! first frame that is incomplete or fails its checksum marks a torn tail:
//! the bytes from there on are moved to `audit.spool.torn-<nanos>` beside the
//! spool (kept for inspection, reported), and the valid records before it
//! are kept and replayed.

use chrono::{DateTime, Utc};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::Record;

const MAGIC: [u8; 2] = [0xA5, 0x17];
const HEADER: usize = 10;
/// Largest payload accepted when reading; anything bigger is a torn length.
const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

/// File name of the spool inside its directory.
pub const SPOOL_FILE: &str = "audit.spool";

/// A torn or corrupt tail found when opening the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first bad frame.
    pub offset: u64,
    /// Bytes cut off from there to the end.
    pub bytes: u64,
    /// Where those bytes were moved.
    pub quarantined_to: PathBuf,
}

/// The spool file and the replay position within it.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    replay_offset: u64,
    pending: u64,
    oldest: Option<DateTime<Utc>>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, checking every frame.
    pub fn open(dir: &Path) -> io::Result<(Self, Option<TornTail>)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(SPOOL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let total = file.metadata()?.len();
        let mut reader = BufReader::new(File::open(&path)?);
        let mut offset = 0u64;
        let mut pending = 0u64;
        let mut oldest = None;
        let mut torn = None;
        while offset < total {
            match read_frame(&mut reader, total - offset)? {
                Some((record, size)) => {
                    if oldest.is_none() {
                        oldest = record.time();
                    }
                    pending += 1;
                    offset += size;
                }
                None => {
                    let quarantine = dir.join(format!(
                        "{SPOOL_FILE}.torn-{}",
                        Utc::now().timestamp_nanos_opt().unwrap_or_default()
                    ));
                    copy_tail(&path, offset, &quarantine)?;
                    file.set_len(offset)?;
                    file.sync_all()?;
                    torn = Some(TornTail {
                        offset,
                        bytes: total - offset,
                        quarantined_to: quarantine,
                    });
                    break;
                }
            }
        }
        let spool = Spool {
            path,
            file,
            len: offset,
            replay_offset: 0,
            pending,
            oldest,
        };
        Ok((spool, torn))
    }

    /// The spool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when nothing waits for replay.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Records waiting for replay.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes in the file (replayed records stay until the file is emptied).
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Time of the oldest record waiting for replay.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.oldest
    }

    /// Appends `records` and fsyncs. On failure the file is cut back to its
    /// previous length so a half-written frame never sits before later ones.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 1024);
        for record in records {
            let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_PAYLOAD)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
            buf.extend_from_slice(&MAGIC);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        let result = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        if self.pending == 0 {
            self.oldest = records.iter().find_map(Record::time);
        }
        self.len += buf.len() as u64;
        self.pending += records.len() as u64;
        Ok(())
    }

    /// Reads up to `max` records from the replay position; returns them and
    /// the offset after the last one.
    pub fn read_chunk(&self, max: usize) -> io::Result<(Vec<Record>, u64)> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        reader.seek(SeekFrom::Start(self.replay_offset))?;
        let mut offset = self.replay_offset;
        let mut records = Vec::new();
        while records.len() < max && offset < self.len {
            match read_frame(&mut reader, self.len - offset)? {
                Some((record, size)) => {
                    records.push(record);
                    offset += size;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("spool frame at offset {offset} is corrupt"),
                    ))
                }
            }
        }
        Ok((records, offset))
    }

    /// Marks `count` records up to `next_offset` as stored; empties the file
    /// once everything is replayed.
    pub fn advance(&mut self, next_offset: u64, count: u64) -> io::Result<()> {
        self.replay_offset = next_offset;
        self.pending = self.pending.saturating_sub(count);
        if self.replay_offset >= self.len {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            self.replay_offset = 0;
            self.pending = 0;
            self.oldest = None;
        } else {
            self.oldest = self
                .read_chunk(1)
                .ok()
                .and_then(|(r, _)| r.first().and_then(Record::time));
        }
        Ok(())
    }
}

/// Reads one frame; `None` when it is incomplete or corrupt.
fn read_frame(reader: &mut impl Read, remaining: u64) -> io::Result<Option<(Record, u64)>> {
    if remaining < HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header)?;
    if header[..2] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    let crc = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if len > MAX_PAYLOAD || u64::from(len) > remaining - HEADER as u64 {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    match serde_json::from_slice::<Record>(&payload) {
        Ok(record) => Ok(Some((record, HEADER as u64 + u64::from(len)))),
        Err(_) => Ok(None),
    }
}

/// Copies `path` from `offset` on into a new file `to`. A plain loop rather
/// than `io::copy`: between two files that uses `copy_file_range`, and gives
/// up with `Interrupted` when a signal (SIGHUP reloads policies) arrives
/// mid-copy; the `spool` fuzz target hit it under libFuzzer's timer signal.
fn copy_tail(path: &Path, offset: u64, to: &Path) -> io::Result<()> {
    let mut src = File::open(path)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut dst = File::create(to)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
    dst.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A frame whose checksum holds but whose payload is not a record
    /// (here: not even UTF-8) is a bad tail, cut off and quarantined whole.
    #[test]
    fn a_checked_frame_that_is_not_a_record_is_a_torn_tail() {
        let payload = b"{    \xd85555515555555555555555";
        let file = frame(payload);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SPOOL_FILE), &file).unwrap();
        let (spool, torn) = Spool::open(dir.path()).unwrap();
        let torn = torn.expect("the frame is cut off");
        assert_eq!((torn.offset, torn.bytes), (0, file.len() as u64));
        assert_eq!(fs::read(&torn.quarantined_to).unwrap(), file);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
    }
}
