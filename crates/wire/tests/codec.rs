//! Codec tests: no sockets, just bytes.

use wire::frame::split_frame;
use wire::*;

fn roundtrip_req(req: Request) {
    let frame = encode_request(&req);
    let body = split_frame(&frame).unwrap();
    assert_eq!(decode_request(body).unwrap(), req);
}

fn roundtrip_resp(resp: Response) {
    let frame = encode_response(&resp);
    let body = split_frame(&frame).unwrap();
    assert_eq!(decode_response(body).unwrap(), resp);
}

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn record() -> UserRecord {
    UserRecord {
        format: STORAGE_FORMAT,
        generation: 3,
        kdf: KdfParams {
            salt: vec![7; 16],
            m_kib: 65536,
            t: 3,
            p: 1,
        },
        login_key: Some(vec![1; 32]),
        wrapped_key: vec![9; 60],
    }
}

#[test]
fn requests_round_trip() {
    roundtrip_req(Request::Hello {
        user: "Alice".into(),
    });
    roundtrip_req(Request::Login {
        user: "alice".into(),
        proof: Proof::LegacyMd5(vec![0xab; 16]),
    });
    roundtrip_req(Request::Login {
        user: "alice".into(),
        proof: Proof::Signature(vec![1; 64]),
    });
    roundtrip_req(Request::PutBlob {
        id: id("p-00ff"),
        len: u64::MAX,
        expect: None,
    });
    roundtrip_req(Request::GetBlob { id: id("m-1") });
    roundtrip_req(Request::List {
        after: None,
        limit: 10,
        prefix: None,
    });
    roundtrip_req(Request::List {
        after: Some(id("abc")),
        limit: MAX_LIST_PAGE,
        prefix: Some("m2-".into()),
    });
    roundtrip_req(Request::ListData {
        after: Some(id("m2-00")),
        prefix: "m2-".into(),
        max_entries: MAX_BATCH as u32,
        max_bytes: MAX_LIST_DATA_BYTES,
        max_inline: MAX_INLINE_LEN,
    });
    let many: Vec<BlobId> = (0..MAX_BATCH)
        .map(|i| id(&format!("p2-{:064x}", i)))
        .collect();
    roundtrip_req(Request::GetBlobs { ids: many.clone() });
    roundtrip_req(Request::DeleteBlobs { ids: many.clone() });
    roundtrip_req(Request::StatBlobs { ids: many.clone() });
    roundtrip_req(Request::PutBlobs {
        items: many
            .iter()
            .map(|id| PutItem {
                id: id.clone(),
                len: MAX_BATCH_BYTES / MAX_BATCH as u64,
                expect: None,
            })
            .collect(),
    });
    roundtrip_req(Request::Delete { id: id("x") });
    roundtrip_req(Request::Status);
    roundtrip_req(Request::GetRecord);
    roundtrip_req(Request::PutRecord {
        expect_generation: 2,
        record: record(),
        expect_record: None,
    });
}

#[test]
fn responses_round_trip() {
    roundtrip_resp(Response::Challenge {
        challenge: vec![5; 32],
        scheme: AuthScheme::Legacy,
    });
    roundtrip_resp(Response::Challenge {
        challenge: vec![5; 32],
        scheme: AuthScheme::Upgraded(record().kdf),
    });
    roundtrip_resp(Response::LoggedIn);
    roundtrip_resp(Response::Stored);
    roundtrip_resp(Response::Blob { len: 12345 });
    roundtrip_resp(Response::Listing {
        entries: vec![
            ListEntry {
                id: id("a"),
                len: 1,
                modified: 1_700_000_000,
            },
            ListEntry {
                id: id("b"),
                len: 0,
                modified: 0,
            },
        ],
        more: true,
    });
    roundtrip_resp(Response::Deleted);
    let page: Vec<ListEntry> = (0..MAX_BATCH)
        .map(|i| ListEntry {
            id: id(&format!("m2-{:064x}", i)),
            len: 300,
            modified: 1_700_000_000,
        })
        .collect();
    roundtrip_resp(Response::DataListing {
        entries: page,
        more: true,
    });
    roundtrip_resp(Response::Blobs {
        lens: vec![Some(3), None, Some(0)],
    });
    roundtrip_resp(Response::BatchStored {
        failed: vec![BatchFailure {
            index: 7,
            code: ErrorCode::QuotaExceeded,
            message: "quota".into(),
        }],
    });
    roundtrip_resp(Response::BatchDeleted {
        missing: vec![0, 9],
    });
    roundtrip_resp(Response::Stats {
        entries: vec![
            Some(BlobStat {
                len: 5,
                modified: 9,
            }),
            None,
        ],
    });
    roundtrip_resp(Response::Status(NodeStatus {
        name: "DFS1".into(),
        version: "0.1.0".into(),
        blobs: 1,
        bytes: 2,
        quota: Some(1 << 30),
        free_bytes: None,
    }));
    roundtrip_resp(Response::Record(None));
    roundtrip_resp(Response::Record(Some(record())));
    roundtrip_resp(Response::RecordStored);
    roundtrip_resp(Response::error(ErrorCode::Throttled(1500), "slow down"));
}

#[test]
fn byte_fields_are_cbor_byte_strings() {
    // A 64-byte signature must cost ~66 bytes, not an array of 64 integers.
    let frame = encode_request(&Request::Login {
        user: "a".into(),
        proof: Proof::Signature(vec![0xff; 64]),
    });
    // CBOR byte string header for 64 bytes: major type 2, one-byte length.
    assert!(
        frame.windows(3).any(|w| w == [0x58, 0x40, 0xff]),
        "{frame:02x?}"
    );
    assert!(frame.len() < 110, "{} bytes", frame.len());
}

#[test]
fn truncated_input_is_an_error() {
    let frame = encode_request(&Request::PutBlob {
        id: id("p-1"),
        len: 7,
        expect: None,
    });
    for cut in 0..frame.len() {
        assert!(split_frame(&frame[..cut]).is_err(), "cut at {cut}");
    }
    let body = &frame[FRAME_PREFIX_LEN..];
    for cut in 0..body.len() {
        assert!(decode_request(&body[..cut]).is_err(), "body cut at {cut}");
    }
}

#[test]
fn oversized_length_is_refused_before_reading() {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    prefix[..2].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    prefix[2..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode_frame_header(&prefix),
        Err(DecodeError::TooLarge(u32::MAX as u64))
    );
    prefix[2..].copy_from_slice(&((MAX_FRAME_BODY_LEN as u32) + 1).to_be_bytes());
    assert!(matches!(
        decode_frame_header(&prefix),
        Err(DecodeError::TooLarge(_))
    ));
    assert!(decode_request(&vec![0u8; MAX_FRAME_BODY_LEN + 1]).is_err());
}

#[test]
fn unknown_version_is_refused() {
    let mut frame = encode_request(&Request::Status);
    // Version 1 (Vault 0.1) is not spoken any more.
    frame[..2].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(split_frame(&frame), Err(DecodeError::UnsupportedVersion(1)));
    frame[..2].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(split_frame(&frame), Err(DecodeError::UnsupportedVersion(0)));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    for len in 0..400usize {
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = decode_request(&body);
        let _ = decode_response(&body);
    }
    for body in [
        &b"\xff\xff\xff"[..],
        b"\xa1",
        b"\x9f\x9f\x9f\x9f",
        &[0x5b; 9],
    ] {
        assert!(decode_request(body).is_err());
    }
    // Deep nesting is refused, not a stack overflow.
    assert!(decode_request(&vec![0x81; 10_000]).is_err());
}

#[test]
fn trailing_bytes_are_refused() {
    let mut frame = encode_request(&Request::Status);
    frame.push(0);
    assert_eq!(split_frame(&frame), Err(DecodeError::Trailing));
    let body = &frame[FRAME_PREFIX_LEN..];
    assert_eq!(decode_request(body), Err(DecodeError::Trailing));
}

/// Encodes a message with arbitrary field values, bypassing validation.
fn raw_body<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn hostile_fields_are_refused() {
    #[derive(serde::Serialize)]
    enum Raw {
        GetBlob { id: String },
        Hello { user: String },
        List { after: Option<String>, limit: u32 },
    }
    for bad in [
        "..",
        "../../etc/passwd",
        "",
        "a/b",
        "a\0",
        "ü",
        &"a".repeat(10_000),
    ] {
        let body = raw_body(&Raw::GetBlob { id: bad.into() });
        assert!(decode_request(&body).is_err(), "{bad:?}");
        let body = raw_body(&Raw::Hello { user: bad.into() });
        assert!(decode_request(&body).is_err(), "{bad:?}");
    }
    for limit in [0, MAX_LIST_PAGE + 1, u32::MAX] {
        let body = raw_body(&Raw::List { after: None, limit });
        assert!(matches!(
            decode_request(&body),
            Err(DecodeError::Invalid(_))
        ));
    }
    // Wrong-length proofs.
    for proof in [Proof::LegacyMd5(vec![0; 15]), Proof::Signature(vec![0; 63])] {
        let body = raw_body(&Request::Login {
            user: "a".into(),
            proof,
        });
        assert!(matches!(
            decode_request(&body),
            Err(DecodeError::Invalid(_))
        ));
    }
    // A record with a short salt.
    let mut r = record();
    r.kdf.salt = vec![1; 4];
    let body = raw_body(&Request::PutRecord {
        expect_generation: 0,
        record: r,
        expect_record: None,
    });
    assert!(decode_request(&body).is_err());
}

#[test]
fn format_one_records_are_recognised_and_never_stored() {
    // A record written by Vault 0.1 has no `format` field: it decodes as
    // format 1 so a client can say what it is.
    #[derive(serde::Serialize)]
    struct V1Record {
        generation: u64,
        kdf: KdfParams,
        #[serde(with = "serde_bytes")]
        login_key: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        wrapped_key: Vec<u8>,
    }
    let r = record();
    let v1 = V1Record {
        generation: r.generation,
        kdf: r.kdf.clone(),
        login_key: r.login_key.clone(),
        wrapped_key: r.wrapped_key.clone(),
    };
    let body = raw_body(&Response::Record(None));
    assert_eq!(decode_response(&body).unwrap(), Response::Record(None));
    #[derive(serde::Serialize)]
    enum RawResponse {
        Record(Option<V1Record>),
    }
    let body = raw_body(&RawResponse::Record(Some(v1)));
    match decode_response(&body).unwrap() {
        Response::Record(Some(got)) => assert_eq!(got.format, 1),
        other => panic!("{other:?}"),
    }
    // Nodes accept only current-format records.
    let mut old = record();
    old.format = 1;
    let body = raw_body(&Request::PutRecord {
        expect_generation: 0,
        record: old,
        expect_record: None,
    });
    assert_eq!(
        decode_request(&body),
        Err(DecodeError::Invalid("record format"))
    );
}

#[test]
fn batches_are_bounded() {
    #[derive(serde::Serialize)]
    enum Raw {
        GetBlobs {
            ids: Vec<String>,
        },
        List {
            after: Option<String>,
            limit: u32,
            prefix: Option<String>,
        },
        ListData {
            after: Option<String>,
            prefix: String,
            max_entries: u32,
            max_bytes: u32,
            max_inline: u32,
        },
    }
    let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("p2-{i}")).collect();
    let body = raw_body(&Raw::GetBlobs { ids: too_many });
    assert_eq!(
        decode_request(&body),
        Err(DecodeError::Invalid("batch size"))
    );
    for prefix in ["M2-", "../", "a/b", &"x".repeat(MAX_ID_PREFIX_LEN + 1)] {
        let body = raw_body(&Raw::List {
            after: None,
            limit: 1,
            prefix: Some(prefix.into()),
        });
        assert_eq!(
            decode_request(&body),
            Err(DecodeError::Invalid("id prefix")),
            "{prefix}"
        );
    }
    for (entries, bytes, inline) in [
        (0, 1, 1),
        (MAX_BATCH as u32 + 1, 1, 1),
        (1, MAX_LIST_DATA_BYTES + 1, 1),
        (1, 1, MAX_INLINE_LEN + 1),
    ] {
        let body = raw_body(&Raw::ListData {
            after: None,
            prefix: "m2-".into(),
            max_entries: entries,
            max_bytes: bytes,
            max_inline: inline,
        });
        assert!(decode_request(&body).is_err());
    }
    // A batch whose lengths add up past the bound, or overflow.
    for lens in [vec![MAX_BATCH_BYTES, 1], vec![u64::MAX, 2]] {
        let req = Request::PutBlobs {
            items: lens
                .into_iter()
                .map(|len| PutItem {
                    id: id("p2-a"),
                    len,
                    expect: None,
                })
                .collect(),
        };
        let body = raw_body(&req);
        assert_eq!(
            decode_request(&body),
            Err(DecodeError::Invalid("batch length"))
        );
    }
    let resp = Response::Blobs {
        lens: vec![Some(MAX_BATCH_BYTES), Some(1)],
    };
    let body = raw_body(&resp);
    assert_eq!(
        decode_response(&body),
        Err(DecodeError::Invalid("batch length"))
    );
}

#[test]
fn conditions_round_trip_and_bad_hash_lengths_are_refused() {
    let h = content_hash(b"sealed manifest").to_vec();
    roundtrip_req(Request::PutBlob {
        id: id("m2-00"),
        len: 10,
        expect: Some(Expect::Hash(h.clone())),
    });
    roundtrip_req(Request::PutBlobs {
        items: vec![
            PutItem {
                id: id("m2-01"),
                len: 1,
                expect: Some(Expect::Absent),
            },
            PutItem {
                id: id("m2-02"),
                len: 1,
                expect: None,
            },
        ],
    });
    roundtrip_req(Request::PutRecord {
        expect_generation: 1,
        record: record(),
        expect_record: Some(record_hash(&record()).to_vec()),
    });
    // What the condition compares.
    assert!(Expect::of(Some(b"sealed manifest")).holds(Some(&content_hash(b"sealed manifest"))));
    assert!(!Expect::of(Some(b"sealed manifest")).holds(Some(&content_hash(b"other"))));
    assert!(!Expect::of(Some(b"x")).holds(None));
    assert!(Expect::Absent.holds(None));
    assert!(!Expect::Absent.holds(Some(&content_hash(b"x"))));
    // A hash of the wrong length is refused on decode, wherever it is.
    let short = Some(Expect::Hash(vec![0; 31]));
    for req in [
        Request::PutBlob {
            id: id("m2-00"),
            len: 1,
            expect: short.clone(),
        },
        Request::PutBlobs {
            items: vec![PutItem {
                id: id("m2-00"),
                len: 1,
                expect: short.clone(),
            }],
        },
        Request::PutRecord {
            expect_generation: 1,
            record: record(),
            expect_record: Some(vec![0; 33]),
        },
    ] {
        assert!(matches!(
            decode_request(&raw_body(&req)),
            Err(DecodeError::Invalid(_))
        ));
    }
    // A request from a 0.2 client (no condition) still decodes.
    #[derive(serde::Serialize)]
    enum Old {
        PutBlob { id: BlobId, len: u64 },
    }
    let old = decode_request(&raw_body(&Old::PutBlob {
        id: id("p2-1"),
        len: 3,
    }))
    .unwrap();
    assert_eq!(
        old,
        Request::PutBlob {
            id: id("p2-1"),
            len: 3,
            expect: None
        }
    );
}
