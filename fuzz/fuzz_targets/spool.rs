//! The audit spool reader. The input is turned into spool frames with valid
//! checksums (so the record JSON inside is what gets fuzzed), then possibly
//! torn or corrupted, as a crash mid-write or a bad disk would leave it.
//! Opening never panics; a bad tail is cut off and quarantined; what
//! remains reads back in full, in order, and empties the spool.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_audit::spool::{Spool, SPOOL_FILE};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xA5, 0x17];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A directory for one run's spool, in RAM (`/dev/shm`) where there is one:
/// every run fsyncs, and a slow or full disk is not what this target tests.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("a scratch directory for the spool")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file: Vec<u8> = if mode & 4 == 0 {
        // Payloads separated by 0xFF (never in UTF-8 JSON).
        rest.split(|&b| b == 0xFF).flat_map(frame).collect()
    } else {
        rest.to_vec() // raw bytes
    };
    if mode & 1 != 0 && !file.is_empty() {
        let cut = usize::from(mode >> 3) * file.len() / 32;
        file.truncate(cut);
    }
    if mode & 2 != 0 && !file.is_empty() {
        let at = usize::from(mode >> 3) * (file.len() - 1) / 31;
        file[at] ^= 0x5A;
    }
    let dir = scratch();
    std::fs::write(dir.path().join(SPOOL_FILE), &file).unwrap();
    let (mut spool, torn) = Spool::open(dir.path()).expect("a spool opens whatever its bytes");
    if let Some(torn) = &torn {
        assert_eq!(torn.offset + torn.bytes, file.len() as u64);
        assert_eq!(spool.bytes(), torn.offset);
    } else {
        assert_eq!(spool.bytes(), file.len() as u64);
    }
    let pending = spool.pending();
    let mut read = 0u64;
    loop {
        let (records, next) = spool.read_chunk(16).expect("a checked spool reads back");
        if records.is_empty() {
            break;
        }
        read += records.len() as u64;
        spool.advance(next, records.len() as u64).unwrap();
    }
    assert_eq!(read, pending);
    assert!(spool.is_empty());
});
