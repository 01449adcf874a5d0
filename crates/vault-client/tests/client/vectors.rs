//! Known-answer vectors for storage format 2: a part blob, a sealed
//! manifest and a key record, made once from fixed inputs and stored under
//! `tests/vectors/`. Any change to a format shows up here, so it can only be
//! a deliberate one (with a new format number). The `fail_*` files are
//! damaged copies that must be refused.
//!
//! To write the files again after a deliberate format change:
//! `VAULT_WRITE_VECTORS=1 cargo test -p vault-client --test vectors`.

use std::path::PathBuf;

use vault_client::crypto::format::{HEADER_LEN, PART_HEADER};
use vault_client::crypto::keys::{MasterKey, PasswordKeys};
use vault_client::crypto::stream::{open_all, seal_all};
use vault_client::manifest::{Manifest, ManifestError};
use wire::{KdfParams, UserRecord};

const USER: &str = "alice";
const MASTER: [u8; 32] = [0x11; 32];
const FILE_ID: [u8; 16] = [0x22; 16];
const VERSION: u64 = 3;
const PART: usize = 1;
const PASSWORD: &str = "Crimson33";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Deterministic plaintext: two chunks, the second short.
fn plaintext() -> Vec<u8> {
    (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn part_blob() -> Vec<u8> {
    let keys = MasterKey::from_bytes(MASTER).part(USER, &FILE_ID, VERSION, PART);
    let mut out = PART_HEADER.to_vec();
    out.extend_from_slice(&seal_all(&keys.key, &keys.ad, &plaintext()));
    out
}

fn open_part(blob: &[u8]) -> Result<Vec<u8>, ()> {
    if blob.get(..HEADER_LEN) != Some(&PART_HEADER[..]) {
        return Err(());
    }
    let keys = MasterKey::from_bytes(MASTER).part(USER, &FILE_ID, VERSION, PART);
    open_all(&keys.key, &keys.ad, &blob[HEADER_LEN..]).map_err(|_| ())
}

fn manifest() -> Manifest {
    Manifest {
        name: "photos/2024/a.jpg".into(),
        size: 123_456,
        md5: vec![0x33; 16],
        file_id: FILE_ID.to_vec(),
        version: VERSION,
        deleted: false,
        mtime_ns: Some(1_700_000_000_123_456_789),
        extra: Default::default(),
        shards: None,
    }
}

fn sealed_manifest() -> Vec<u8> {
    let master = MasterKey::from_bytes(MASTER);
    let id = master.manifest_id(&manifest().name);
    manifest()
        .seal_with_nonce(&master, USER, &id, [0x44; 24])
        .unwrap()
}

fn kdf() -> KdfParams {
    KdfParams {
        salt: vec![0x55; 16],
        m_kib: 65536,
        t: 3,
        p: 1,
    }
}

fn record_bytes(keys: &PasswordKeys) -> Vec<u8> {
    let record = keys
        .seal_record_with_nonce(&MasterKey::from_bytes(MASTER), USER, 7, true, [0x66; 24])
        .unwrap();
    let mut out = Vec::new();
    ciborium::into_writer(&record, &mut out).unwrap();
    out
}

fn decode_record(bytes: &[u8]) -> UserRecord {
    ciborium::from_reader(bytes).unwrap()
}

/// The ids, as text.
fn ids() -> String {
    let master = MasterKey::from_bytes(MASTER);
    format!(
        "manifest_id {}\npart_id {}\n",
        master.manifest_id(&manifest().name),
        master.part_id(&FILE_ID, PART)
    )
}

/// Every vector file and its expected bytes.
fn vectors(keys: &PasswordKeys) -> Vec<(&'static str, Vec<u8>)> {
    let part = part_blob();
    // `manifest_v2.bin` is what Vault 0.2 sealed (no padding): kept as it
    // was written, it must open forever; today's sealing (padded to a
    // size class) is `manifest_v2_padded.bin`.
    let manifest = std::fs::read(dir().join("manifest_v2.bin")).expect("the 0.2 manifest vector");
    let padded = sealed_manifest();
    let record = record_bytes(keys);
    let mut flipped_tag = part.clone();
    let last = flipped_tag.len() - 1;
    flipped_tag[last] ^= 0x01;
    let mut swapped = part.clone();
    // The two chunks of the part, exchanged (second one padded out).
    let first = swapped[HEADER_LEN..HEADER_LEN + 65_552].to_vec();
    swapped.truncate(HEADER_LEN);
    swapped.extend_from_slice(&part[HEADER_LEN + 65_552..]);
    swapped.extend_from_slice(&first);
    let mut flipped_manifest = manifest.clone();
    flipped_manifest[40] ^= 0x80;
    let mut forged_record = decode_record(&record);
    forged_record.generation = u64::MAX;
    let mut forged = Vec::new();
    ciborium::into_writer(&forged_record, &mut forged).unwrap();
    let mut foreign_key = decode_record(&record);
    foreign_key.login_key = Some(vec![0x77; 32]);
    let mut foreign = Vec::new();
    ciborium::into_writer(&foreign_key, &mut foreign).unwrap();
    vec![
        ("ids.txt", ids().into_bytes()),
        ("part_v2.bin", part.clone()),
        ("manifest_v2_padded.bin", padded),
        ("record_v2.cbor", record),
        (
            "fail_part_truncated.bin",
            part[..HEADER_LEN + 65_552].to_vec(),
        ),
        ("fail_part_flipped_tag.bin", flipped_tag),
        ("fail_part_swapped_chunks.bin", swapped),
        ("fail_part_no_header.bin", part[HEADER_LEN..].to_vec()),
        ("fail_manifest_flipped.bin", flipped_manifest),
        (
            "fail_manifest_no_header.bin",
            manifest[HEADER_LEN..].to_vec(),
        ),
        ("fail_record_generation.cbor", forged),
        ("fail_record_login_key.cbor", foreign),
    ]
}

#[test]
fn format_2_vectors() {
    let keys = PasswordKeys::derive(PASSWORD.as_bytes(), &kdf()).unwrap();
    let vectors = vectors(&keys);
    if std::env::var_os("VAULT_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, bytes) in &vectors {
            std::fs::write(dir().join(name), bytes).unwrap();
        }
    }
    // Sealing the fixed inputs today gives the stored bytes.
    for (name, bytes) in &vectors {
        let stored = std::fs::read(dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (see the module doc to write vectors)"));
        assert!(
            stored == *bytes,
            "{name} no longer matches the stored vector"
        );
    }
    let read = |name: &str| std::fs::read(dir().join(name)).unwrap();

    // The stored good vectors open to the known plaintexts.
    assert_eq!(open_part(&read("part_v2.bin")).unwrap(), plaintext());
    let master = MasterKey::from_bytes(MASTER);
    let id = master.manifest_id(&manifest().name);
    assert_eq!(
        Manifest::open(&read("manifest_v2.bin"), &master, USER, &id).unwrap(),
        manifest()
    );
    let padded = read("manifest_v2_padded.bin");
    assert_eq!(padded.len(), 512);
    assert_eq!(
        Manifest::open(&padded, &master, USER, &id).unwrap(),
        manifest()
    );
    let record = decode_record(&read("record_v2.cbor"));
    assert_eq!((record.format, record.generation), (2, 7));
    let opened = keys.open_record(&record, USER).unwrap();
    assert_eq!(opened.manifest_id("x"), master.manifest_id("x"));

    // Every fail_ vector is refused.
    for name in [
        "fail_part_truncated.bin",
        "fail_part_flipped_tag.bin",
        "fail_part_swapped_chunks.bin",
        "fail_part_no_header.bin",
    ] {
        assert!(open_part(&read(name)).is_err(), "{name} opened");
    }
    assert_eq!(
        Manifest::open(&read("fail_manifest_flipped.bin"), &master, USER, &id),
        Err(ManifestError::Decryption)
    );
    assert_eq!(
        Manifest::open(&read("fail_manifest_no_header.bin"), &master, USER, &id),
        Err(ManifestError::OtherFormat)
    );
    for name in ["fail_record_generation.cbor", "fail_record_login_key.cbor"] {
        let r = decode_record(&read(name));
        assert!(keys.open_record(&r, USER).is_err(), "{name} opened");
    }
}
