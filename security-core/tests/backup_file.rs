//! Database backups under a fresh backup key, and the backup key file (SPEC B2).

use std::io::{self, Read, Write};

use proptest::prelude::*;
use security_core::backup_file::{BACKUP_LEN_MAX, BACKUP_NONCE_PREFIX_LEN};
use security_core::{
    unwrap_backup_key, wrap_backup_key, BackupKey, BackupOpener, BackupSealer, MasterKey,
    SecurityError, BACKUP_CHUNK_LEN,
};
use statemachine::ClusterId;

const CLUSTER: ClusterId = ClusterId(0x00c0_ffee_0000_0017);
const UUID: [u8; 16] = [0x17; 16];
const HEADER: &[u8] = b"KMABACKUP v1 cluster 17 uuid 1717";
/// Length and tag around each chunk's plaintext.
const CHUNK_OVERHEAD: usize = 4 + 16;
/// A full chunk as written: length, ciphertext, tag.
const FULL_CHUNK: usize = CHUNK_OVERHEAD + BACKUP_CHUNK_LEN;

/// `len` bytes that differ from chunk to chunk and from position to position.
fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / BACKUP_CHUNK_LEN) as u8).collect()
}

/// Seals `data` written in pieces of `piece` bytes (cycling through odd sizes when 0).
fn seal(key: &BackupKey, header: &[u8], data: &[u8], piece: usize) -> Vec<u8> {
    let mut sealer = BackupSealer::new(Vec::new(), key, header).expect("sealer");
    let sizes = [1, 7, 4093, 65_537, 1_000_003];
    let mut rest = data;
    for round in 0.. {
        if rest.is_empty() {
            break;
        }
        let size = if piece == 0 { sizes[round % sizes.len()] } else { piece };
        let (now, later) = rest.split_at(size.min(rest.len()));
        sealer.write_all(now).expect("write");
        rest = later;
    }
    sealer.finish().expect("finish")
}

/// Opens `sealed` reading in odd-sized pieces: the plaintext, or the first error.
fn open(key: &BackupKey, header: &[u8], sealed: &[u8]) -> io::Result<Vec<u8>> {
    let mut opener = BackupOpener::new(sealed, key, header)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 300_007];
    for round in 0.. {
        let size = [3, 300_007, 1, 65_536][round % 4];
        let n = opener.read(&mut buf[..size])?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

/// The `SecurityError` inside a refused data file's `InvalidData` error.
fn refusal(result: io::Result<Vec<u8>>) -> SecurityError {
    let error = result.expect_err("refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    error.into_inner().expect("inner").downcast::<SecurityError>().map(|e| *e).expect("security")
}

/// Setup: a backup key. Action: seal 0, 1, a chunk less one, a chunk, and three chunks and 5
/// bytes, written in odd-sized pieces; open them read in odd-sized pieces. Expectation: the
/// same bytes, in files of the documented size (the last chunk always shorter than a full one).
#[test]
fn b2_round_trip_at_chunk_edges() {
    let key = BackupKey::generate();
    for len in [0, 1, BACKUP_CHUNK_LEN - 1, BACKUP_CHUNK_LEN, 3 * BACKUP_CHUNK_LEN + 5] {
        let data = plaintext(len);
        let sealed = seal(&key, HEADER, &data, 0);
        let full = len / BACKUP_CHUNK_LEN;
        let last = len % BACKUP_CHUNK_LEN;
        let expected_len = BACKUP_NONCE_PREFIX_LEN + full * FULL_CHUNK + CHUNK_OVERHEAD + last;
        assert_eq!(sealed.len(), expected_len, "length {len}");
        assert_eq!(open(&key, HEADER, &sealed).expect("opened"), data, "length {len}");
    }
}

/// Setup: one plaintext. Action: seal it twice under one key. Expectation: different files (a
/// fresh nonce prefix each time), and no clear chunk of the plaintext in either.
#[test]
fn b2_sealed_file_hides_the_plaintext_and_differs_each_time() {
    let key = BackupKey::generate();
    let data = plaintext(2 * BACKUP_CHUNK_LEN);
    let first = seal(&key, HEADER, &data, 0);
    let second = seal(&key, HEADER, &data, 0);
    assert_ne!(first[..BACKUP_NONCE_PREFIX_LEN], second[..BACKUP_NONCE_PREFIX_LEN]);
    let clear = &data[1000..1032];
    assert!(!first.windows(clear.len()).any(|w| w == clear));
}

/// Setup: a sealed file of three chunks and 5 bytes. Action: flip one bit in the nonce prefix,
/// a length, a ciphertext byte, a tag, and the file's last byte. Expectation: each refused
/// with an error that names damage (or an impossible length), never plaintext to the end.
#[test]
fn b2_flipped_byte_anywhere_is_refused() {
    let key = BackupKey::generate();
    let data = plaintext(3 * BACKUP_CHUNK_LEN + 5);
    let sealed = seal(&key, HEADER, &data, 0);
    let p = BACKUP_NONCE_PREFIX_LEN;
    let positions = [0, p - 1, p, p + 3, p + 4, p + 500, p + FULL_CHUNK - 1, p + FULL_CHUNK + 9];
    for position in positions.into_iter().chain([sealed.len() - 20, sealed.len() - 1]) {
        let mut altered = sealed.clone();
        altered[position] ^= 0x01;
        let error = refusal(open(&key, HEADER, &altered));
        assert!(
            matches!(
                error,
                SecurityError::BackupChunkDamaged { .. }
                    | SecurityError::BackupTruncated { .. }
                    | SecurityError::BackupChunkTooLong { .. }
            ),
            "position {position}: {error:?}"
        );
    }
    let mut altered = sealed.clone();
    altered[p] ^= 0x80;
    let error = refusal(open(&key, HEADER, &altered));
    let len_max = BACKUP_CHUNK_LEN + 16;
    let len = u32::try_from(len_max).expect("u32") | 0x8000_0000;
    assert_eq!(error, SecurityError::BackupChunkTooLong { chunk: 0, len, len_max });
    altered = sealed.clone();
    altered[p + FULL_CHUNK + 100] ^= 0x01;
    let error = refusal(open(&key, HEADER, &altered));
    assert_eq!(error, SecurityError::BackupChunkDamaged { chunk: 1 });
}

/// Setup: a sealed file of three chunks and 5 bytes. Action: cut it at each chunk boundary
/// (the last chunk dropped whole), inside the prefix, a length and a chunk. Expectation:
/// `BackupTruncated`, counting the whole chunks before the cut.
#[test]
fn b2_truncation_at_chunk_boundary_and_mid_chunk_is_refused() {
    let key = BackupKey::generate();
    let sealed = seal(&key, HEADER, &plaintext(3 * BACKUP_CHUNK_LEN + 5), 0);
    let p = BACKUP_NONCE_PREFIX_LEN;
    let cuts = [
        (0, 0),
        (p - 1, 0),
        (p, 0),
        (p + 2, 0),
        (p + 1000, 0),
        (p + FULL_CHUNK, 1),
        (p + 2 * FULL_CHUNK, 2),
        (p + 3 * FULL_CHUNK, 3),
        (p + 3 * FULL_CHUNK + 4, 3),
        (sealed.len() - 1, 3),
    ];
    for (cut, chunks_opened) in cuts {
        let result = match BackupOpener::new(&sealed[..cut], &key, HEADER) {
            Err(error) => Err(error),
            Ok(mut opener) => opener.read_to_end(&mut Vec::new()).map(|_| Vec::new()),
        };
        assert_eq!(refusal(result), SecurityError::BackupTruncated { chunks_opened }, "cut {cut}");
    }
}

/// Setup: a sealed file. Action: append one byte, or a whole second sealed file. Expectation:
/// `BackupTrailingBytes`.
#[test]
fn b2_bytes_after_the_last_chunk_are_refused() {
    let key = BackupKey::generate();
    for len in [0, 10, BACKUP_CHUNK_LEN] {
        let sealed = seal(&key, HEADER, &plaintext(len), 0);
        let mut one_more = sealed.clone();
        one_more.push(0);
        assert_eq!(refusal(open(&key, HEADER, &one_more)), SecurityError::BackupTrailingBytes);
        let mut joined = sealed.clone();
        joined.extend_from_slice(&sealed);
        assert_eq!(refusal(open(&key, HEADER, &joined)), SecurityError::BackupTrailingBytes);
    }
}

/// Setup: a sealed file of three chunks and 5 bytes. Action: swap chunks 1 and 2; repeat chunk
/// 0 in place of chunk 1; move the last chunk before chunk 2 and drop the rest. Expectation:
/// the first chunk out of place does not open.
#[test]
fn b2_reordered_or_repeated_chunks_are_refused() {
    let key = BackupKey::generate();
    let sealed = seal(&key, HEADER, &plaintext(3 * BACKUP_CHUNK_LEN + 5), 0);
    let p = BACKUP_NONCE_PREFIX_LEN;
    let chunk = |i: usize| &sealed[p + i * FULL_CHUNK..p + (i + 1) * FULL_CHUNK];
    let last = &sealed[p + 3 * FULL_CHUNK..];
    let prefix = &sealed[..p];
    let swapped = [prefix, chunk(0), chunk(2), chunk(1), last].concat();
    let repeated = [prefix, chunk(0), chunk(0), chunk(2), last].concat();
    let last_early = [prefix, chunk(0), chunk(1), last].concat();
    for (altered, chunk) in [(swapped, 1), (repeated, 1), (last_early, 2)] {
        assert_eq!(
            refusal(open(&key, HEADER, &altered)),
            SecurityError::BackupChunkDamaged { chunk }
        );
    }
}

/// Setup: a sealed file. Action: open it with another backup key, and with another header.
/// Expectation: chunk 0 does not open, with a message that points at the key file or header.
#[test]
fn b2_wrong_key_or_header_is_refused() {
    let key = BackupKey::generate();
    for len in [0, 5, BACKUP_CHUNK_LEN + 5] {
        let sealed = seal(&key, HEADER, &plaintext(len), 0);
        let damaged = SecurityError::BackupChunkDamaged { chunk: 0 };
        assert_eq!(refusal(open(&BackupKey::generate(), HEADER, &sealed)), damaged);
        assert_eq!(refusal(open(&key, b"KMABACKUP v1 cluster 18", &sealed)), damaged);
        assert_eq!(refusal(open(&key, b"", &sealed)), damaged);
    }
    assert!(SecurityError::BackupChunkDamaged { chunk: 0 }
        .to_string()
        .contains("use the key file taken with this data file"));
}

/// Setup: a refused file. Action: read again after the refusal. Expectation: still refused
/// (`BackupStreamAbandoned`), never a clean end of file.
#[test]
fn b2_opener_stays_refused_after_an_error() {
    let key = BackupKey::generate();
    let mut sealed = seal(&key, HEADER, &plaintext(10), 0);
    let end = sealed.len() - 1;
    sealed[end] ^= 1;
    let mut opener = BackupOpener::new(sealed.as_slice(), &key, HEADER).expect("opener");
    let mut buf = [0u8; 64];
    assert_eq!(opener.read(&mut buf).expect_err("refused").kind(), io::ErrorKind::InvalidData);
    let again = opener.read(&mut buf).expect_err("still refused");
    let inner = again.into_inner().expect("inner").downcast::<SecurityError>().expect("security");
    assert_eq!(*inner, SecurityError::BackupStreamAbandoned);
}

/// Setup: a sealer whose output fails. Action: write past one chunk, then write and finish.
/// Expectation: the output's error, then `BackupStreamAbandoned` for every later call.
#[test]
fn b2_sealer_stays_refused_after_an_output_error() {
    #[derive(Debug)]
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let key = BackupKey::generate();
    let mut sealer = BackupSealer::new(Full(1000), &key, HEADER).expect("sealer");
    let error = sealer.write_all(&plaintext(BACKUP_CHUNK_LEN + 1)).expect_err("disk full");
    assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    assert!(sealer.write(b"x").expect_err("abandoned").to_string().contains("earlier"));
    assert!(sealer.finish().expect_err("abandoned").to_string().contains("earlier"));
}

/// The bound one backup key encrypts: 2^32 chunks, the last shorter than a full one.
#[test]
fn b2_backup_len_max_is_two_to_the_32_chunks() {
    assert_eq!(BACKUP_LEN_MAX, (1u64 << 32) * (1 << 20) - 1);
}

/// Setup: a master key, a backup key and its key file. Action: unwrap it with another master
/// key, cluster ID or backup UUID, or a damaged or cut file. Expectation: `WrongBackupKey` (or
/// a malformed key file), and the right unwrap opens what the backup key sealed.
#[test]
fn b2_backup_key_file_opens_only_for_its_master_key_cluster_and_backup() {
    let master = MasterKey::generate();
    let key = BackupKey::generate();
    let sealed = seal(&key, HEADER, &plaintext(1000), 0);
    let wrapped = wrap_backup_key(&master, CLUSTER, &UUID, &key);
    let unwrapped = unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped).expect("unwrapped");
    assert_eq!(open(&unwrapped, HEADER, &sealed).expect("opened"), plaintext(1000));

    let wrong = Err(SecurityError::WrongBackupKey);
    let other_master = MasterKey::generate();
    assert_eq!(unwrap_backup_key(&other_master, CLUSTER, &UUID, &wrapped).map(drop), wrong);
    assert_eq!(unwrap_backup_key(&master, ClusterId(18), &UUID, &wrapped).map(drop), wrong);
    assert_eq!(unwrap_backup_key(&master, CLUSTER, &[0x18; 16], &wrapped).map(drop), wrong);
    let mut damaged = wrapped.clone();
    let end = damaged.len() - 1;
    damaged[end] ^= 1;
    assert_eq!(unwrap_backup_key(&master, CLUSTER, &UUID, &damaged).map(drop), wrong);
    let malformed = Err(SecurityError::MalformedBlob { what: "backup key file" });
    for cut in 0..wrapped.len() {
        let result = unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped[..cut]).map(drop);
        assert_eq!(result, malformed, "cut {cut}");
    }
    assert!(SecurityError::WrongBackupKey
        .to_string()
        .contains("the core security backup of the same cluster"));
}

/// Setup: a backup key. Action: format with `{:?}` and `{:#?}`. Expectation: `BackupKey(..)`.
#[test]
fn b2_backup_key_debug_shows_no_bytes() {
    let key = BackupKey::generate();
    assert_eq!(format!("{key:?}"), "BackupKey(..)");
    assert_eq!(format!("{key:#?}"), "BackupKey(..)");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Setup: any plaintext up to two chunks and a half, written in pieces of any size.
    /// Expectation: it opens to the same bytes.
    #[test]
    fn b2_round_trip_any_length_any_pieces(
        len in 0..(5 * BACKUP_CHUNK_LEN / 2),
        piece in 1..(BACKUP_CHUNK_LEN + 3),
    ) {
        let key = BackupKey::generate();
        let data = plaintext(len);
        let sealed = seal(&key, HEADER, &data, piece);
        prop_assert_eq!(open(&key, HEADER, &sealed).expect("opened"), data);
    }
}
