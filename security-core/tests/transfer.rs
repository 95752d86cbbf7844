//! The partner transfer key pair and file (SPEC T1–T4; issue 18 points 1–3): the format pinned
//! by a golden file, and every way a file can be wrong refused before anything is decrypted.
//! Set `BLESS=1` to write the golden file anew (only for a new format version).

use security_core::key_wrap::{check_value, unwrap_key, wrap_key, KeyMaterial};
use security_core::transfer::{
    export_file, import_file, new_key_pair, open_file, peek_header, seal_file, ExportKey,
    FileAddress, OwnCluster, Payload, PayloadDataUnit, PayloadKey, TransferError,
    TransferPublicKeys, TransferSecret,
};
use security_core::MasterKey;
use statemachine::key::Activation;
use statemachine::{ClusterId, DataUnitId, KeyId};

/// A generator that repeats a counter: the golden file's HPKE ephemeral key is fixed.
struct Counter(u8);

impl rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            self.0 = self.0.wrapping_add(1);
            *byte = self.0;
        }
    }
}

impl rand_core::CryptoRng for Counter {}

const SENDER: ClusterId = ClusterId(0x5e4d_0000_0000_0001);
const RECEIVER: ClusterId = ClusterId(0x7ece_0000_0000_0002);

fn activation() -> Activation {
    Activation {
        activated_at_ms: 1_700_000_000_000,
        encryption_ends_at_ms: 1_702_592_000_000,
        deactivates_at_ms: 1_731_536_000_000,
    }
}

fn payload() -> Payload {
    let key = |n: u8| PayloadKey {
        id: KeyId::native(SENDER, [n; 22]),
        value: [n; 32],
        created_at_ms: 1_700_000_000_000,
        activation: activation(),
        compromised_at_ms: (n == 2).then_some(1_701_000_000_000),
    };
    Payload {
        keys: vec![key(1), key(2)],
        data_units: vec![
            PayloadDataUnit {
                id: DataUnitId { cluster_id: SENDER, serial: 1 },
                external_tag: "TAPE01".into(),
                keys: vec![KeyId::native(SENDER, [1; 22])],
            },
            PayloadDataUnit {
                id: DataUnitId { cluster_id: SENDER, serial: 2 },
                external_tag: "TAPE02".into(),
                keys: vec![KeyId::native(SENDER, [1; 22]), KeyId::native(SENDER, [2; 22])],
            },
        ],
    }
}

fn secrets() -> (TransferSecret, TransferSecret) {
    (TransferSecret::from_seed([0x51; 64]), TransferSecret::from_seed([0x52; 64]))
}

fn sealed(sender: &TransferSecret, receiver: &TransferPublicKeys) -> Vec<u8> {
    let address = FileAddress {
        file_id: [0xf1; 16],
        sender_cluster: SENDER,
        created_at_ms: 1_733_000_000_000,
        sender,
        receiver,
    };
    seal_file(&address, &payload(), &mut Counter(0)).expect("sealed")
}

/// Setup: fixed key pairs, payload and randomness. Action: seal the file; open the golden one.
/// Expect: the same bytes as the golden file (the format does not drift), and the golden file
/// opens to the payload. (SPEC T3; issue 18 point 2)
#[test]
fn t3_the_transfer_file_format_is_pinned_by_a_golden_file() {
    let (sender, receiver) = secrets();
    let file = sealed(&sender, &receiver.public_keys());
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/transfer-v1.bin");
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, &file).expect("golden written");
    }
    let golden = std::fs::read(&path).expect("golden file (BLESS=1 writes it)");
    assert_eq!(file, golden, "the transfer file format changed: make a new format version");
    assert_eq!(&golden[..8], b"KMSXFER1");
    let (header, opened) =
        open_file(&golden, &receiver, ("sender", &sender.public_keys())).expect("opens");
    assert_eq!(header.file_id, [0xf1; 16]);
    assert_eq!(header.sender_cluster, SENDER);
    assert_eq!(opened.keys.len(), 2);
    assert_eq!(opened.keys[1].value, [2; 32]);
    assert_eq!(opened.keys[1].compromised_at_ms, Some(1_701_000_000_000));
    assert_eq!(opened.data_units, payload().data_units);
    // Neither clear value is in the file.
    for value in [[1u8; 32], [2u8; 32]] {
        assert!(!golden.windows(32).any(|w| w == value), "a clear value in the file");
    }
}

/// Setup: a sealed file. Action: open it as another receiver, from another sender, and after
/// each kind of damage: a byte changed in each part, cut short, padded, two blocks swapped.
/// Expect: each refused with its own reason, nothing decrypted. (SPEC T4; issue 18 "Bad input")
#[test]
fn t4_a_file_is_refused_unless_whole_signed_by_the_partner_and_for_us() {
    let (sender, receiver) = secrets();
    let stranger = TransferSecret::from_seed([0x53; 64]);
    let file = sealed(&sender, &receiver.public_keys());
    let open = |bytes: &[u8], by: &TransferSecret, from: &TransferSecret| {
        open_file(bytes, by, ("west", &from.public_keys())).map(|_| ())
    };
    assert!(open(&file, &receiver, &sender).is_ok());
    assert!(matches!(open(&file, &stranger, &sender), Err(TransferError::NotForUs { .. })));
    let other_signer = sealed(&stranger, &receiver.public_keys());
    assert!(matches!(
        open(&other_signer, &receiver, &sender),
        Err(TransferError::OtherSender { .. })
    ));
    let header_len = u32::from_be_bytes(file[8..12].try_into().expect("4")) as usize;
    for at in [20, 12 + header_len + 10, file.len() / 2, file.len() - 1] {
        let mut altered = file.clone();
        altered[at] ^= 0x01;
        let refused = open(&altered, &receiver, &sender);
        assert!(refused.is_err(), "a byte changed at {at} was accepted");
    }
    let mut body_altered = file.clone();
    body_altered[12 + header_len + 30] ^= 0x80;
    assert_eq!(
        open(&body_altered, &receiver, &sender),
        Err(TransferError::BadSignature { partner: "west".into() })
    );
    for cut in [0, 7, 12, header_len + 14, file.len() - 65, file.len() - 1] {
        let refused = open(&file[..cut], &receiver, &sender);
        assert!(matches!(refused, Err(TransferError::Malformed(_))), "cut at {cut}: {refused:?}");
    }
    let mut padded = file.clone();
    padded.push(0);
    assert!(matches!(open(&padded, &receiver, &sender), Err(TransferError::Malformed(_))));
    let mut reordered = file.clone();
    let start = 12 + header_len + 4;
    let (a, b) = reordered[start..start + 32].split_at_mut(16);
    a.swap_with_slice(b);
    assert!(matches!(
        open(&reordered, &receiver, &sender),
        Err(TransferError::BadSignature { .. })
    ));
    assert_eq!(peek_header(&file).expect("header").file_id, [0xf1; 16]);
}

/// Setup: two clusters, each with its master key and a transfer key pair made under it.
/// Action: the sender exports two of its keys to the receiver; the receiver imports the file.
/// Expect: the receiver holds the keys wrapped under its own master key, with the same values
/// and check values; the public keys survive their text form, and a damaged text is refused.
/// (SPEC T1, T3, T4)
#[test]
fn t1_t3_t4_keys_travel_from_one_master_key_to_another() {
    let (sender_master, receiver_master) = (MasterKey::generate(), MasterKey::generate());
    let (sender_public, sender_wrapped) = new_key_pair(&sender_master, SENDER);
    let (receiver_public, receiver_wrapped) = new_key_pair(&receiver_master, RECEIVER);
    let text = sender_public.to_text();
    assert_eq!(TransferPublicKeys::from_text(&text), Ok(sender_public));
    assert!(TransferPublicKeys::from_text(&text[..text.len() - 2]).is_err());
    assert_eq!(sender_public.fingerprint_text().len(), 16 * 4 + 15);

    let ids = [KeyId::native(SENDER, [1; 22]), KeyId::native(SENDER, [2; 22])];
    let wrapped: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            wrap_key(&sender_master, SENDER, id, &KeyMaterial::from_bytes(&[n as u8 + 7; 32]))
        })
        .collect();
    let keys: Vec<ExportKey> = ids
        .iter()
        .zip(&wrapped)
        .map(|(id, material)| ExportKey {
            id: *id,
            material: material.clone(),
            created_at_ms: 1,
            activation: activation(),
            compromised_at_ms: None,
        })
        .collect();
    let units = vec![PayloadDataUnit {
        id: DataUnitId { cluster_id: SENDER, serial: 9 },
        external_tag: "T9".into(),
        keys: ids.to_vec(),
    }];
    let sender = OwnCluster {
        master: &sender_master,
        cluster_id: SENDER,
        public: &sender_public.to_bytes(),
        wrapped_secret: &sender_wrapped,
    };
    let file = export_file(&sender, ([3; 16], 5), &receiver_public.to_bytes(), &keys, units)
        .expect("exported");
    let receiver = OwnCluster {
        master: &receiver_master,
        cluster_id: RECEIVER,
        public: &receiver_public.to_bytes(),
        wrapped_secret: &receiver_wrapped,
    };
    let opened =
        import_file(&receiver, &file, ("east", &sender_public.to_bytes())).expect("imported");
    assert_eq!((opened.keys, opened.data_units.len()), (2, 1));
    for (n, key) in opened.data_units[0].keys.iter().enumerate() {
        let value = unwrap_key(&receiver_master, RECEIVER, &key.id, &key.material).expect("opens");
        assert_eq!(*value.as_bytes(), [n as u8 + 7; 32]);
        assert_eq!(key.check_value, check_value(&value));
    }
    // The receiver's key pair does not open under the sender's master key.
    let wrong = OwnCluster { master: &sender_master, ..receiver };
    assert!(matches!(
        import_file(&wrong, &file, ("east", &sender_public.to_bytes())),
        Err(TransferError::KeyPairUnwrapFailed)
    ));
}
