use super::*;
use crate::crypto::format::SHARD_HEADER;
use crate::crypto::stream::{open_all, seal_all, StreamKey};

fn data(n: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn key(seed: u8) -> ShardKey {
    ShardKey::new([seed; 32])
}

/// A whole file through the coder: sealed as one STREAM, every chunk coded
/// into shard blobs (header, then the chunks), as a PUT stores them.
fn shard_blobs(scheme: Scheme, plain: &[u8], key_seed: u8) -> (Vec<u8>, Vec<Vec<u8>>) {
    let stream = StreamKey::new([7; 32]);
    let ct = seal_all(&stream, b"ad", plain);
    let mut blobs = vec![SHARD_HEADER.to_vec(); scheme.shards()];
    let mut enc = ShardEncoder::new(scheme, key(key_seed));
    let mut at = 0;
    for (j, len, last) in Scheme::chunk_lens(plain.len() as u64) {
        enc.encode(j, last, &ct[at..at + len], &mut blobs).unwrap();
        at += len;
    }
    assert_eq!(at, ct.len());
    for b in &blobs {
        assert_eq!(b.len() as u64, scheme.shard_blob_len(plain.len() as u64));
    }
    (ct, blobs)
}

/// Reads a file back from the shard blobs `have` (None: that node is down),
/// chunk by chunk, as a GET does; the shards found bad, and the plaintext.
fn read_back(
    scheme: Scheme,
    plain_len: usize,
    have: &[Option<&[u8]>],
    key_seed: u8,
) -> Result<(Vec<usize>, Vec<u8>), ErasureError> {
    let mut dec = ShardDecoder::new(scheme, key(key_seed));
    let mut ct = Vec::new();
    let mut bad = Vec::new();
    let mut out = Vec::new();
    for (j, len, last) in Scheme::chunk_lens(plain_len as u64) {
        let at = scheme.chunk_offset(j) as usize;
        let take = scheme.shard_len(len) + SHARD_TAG_LEN;
        let shards: Vec<(usize, &[u8])> = have
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.as_ref()?.get(at..at + take)?)))
            .collect();
        let r = dec.decode(j, last, len, &shards, &mut out)?;
        bad.extend(r.bad);
        ct.extend_from_slice(&out);
    }
    bad.sort_unstable();
    bad.dedup();
    let plain = open_all(&StreamKey::new([7; 32]), b"ad", &ct).expect("the chunks decrypt");
    Ok((bad, plain))
}

/// Every subset of `n` positions with at most `max` members.
fn subsets(n: usize, max: usize) -> impl Iterator<Item = Vec<usize>> {
    (0u32..1 << n).filter_map(move |bits| {
        let set: Vec<usize> = (0..n).filter(|i| bits & (1 << i) != 0).collect();
        (set.len() <= max).then_some(set)
    })
}

#[test]
fn schemes_are_bounded() {
    assert!(Scheme::new(0, 2).is_err());
    assert!(Scheme::new(2, 0).is_err());
    assert!(Scheme::new(30, 3).is_err());
    assert_eq!(Scheme::new(4, 2).unwrap().to_string(), "rs 4+2");
    assert!(Scheme { k: 0, m: 3 }.validate().is_err());
    assert!(Scheme { k: 31, m: 1 }.validate().is_ok());
    assert!(Scheme { k: 31, m: 2 }.validate().is_err());
}

#[test]
fn shard_lengths_are_even_and_cover_the_chunk() {
    for k in 1..=12 {
        let s = Scheme::new(k, 2).unwrap();
        for c in [16, 17, 18, 100, 4097, CT_CHUNK_LEN] {
            let len = s.shard_len(c);
            assert_eq!(len % 2, 0);
            assert!(
                len * k >= c && len * k < c + 2 * k + 2,
                "k {k} c {c} len {len}"
            );
        }
    }
}

#[test]
fn any_k_shards_rebuild_every_file_size() {
    let sizes = [0, 1, 63 * 1024, 64 * 1024, 64 * 1024 + 1, 200_000];
    for (k, m) in [(1, 1), (2, 1), (2, 2), (3, 2), (4, 2)] {
        let scheme = Scheme::new(k, m).unwrap();
        for (n, &size) in sizes.iter().enumerate() {
            let plain = data(size, n as u8);
            let (_, blobs) = shard_blobs(scheme, &plain, 1);
            for down in subsets(k + m, m) {
                let have: Vec<Option<&[u8]>> = (0..k + m)
                    .map(|i| (!down.contains(&i)).then_some(&blobs[i][..]))
                    .collect();
                let (bad, back) = read_back(scheme, size, &have, 1).unwrap();
                assert!(bad.is_empty());
                assert!(back == plain, "{scheme} size {size} down {down:?}");
            }
        }
    }
}

#[test]
fn wide_schemes_rebuild_with_parity_only_where_needed() {
    let scheme = Scheme::new(10, 4).unwrap();
    let plain = data(300_000, 3);
    let (_, blobs) = shard_blobs(scheme, &plain, 1);
    for down in [
        vec![],
        vec![0, 1, 2, 3],
        vec![9, 10, 11, 12],
        vec![3, 7, 12, 13],
    ] {
        let have: Vec<Option<&[u8]>> = (0..14)
            .map(|i| (!down.contains(&i)).then_some(&blobs[i][..]))
            .collect();
        assert_eq!(read_back(scheme, plain.len(), &have, 1).unwrap().1, plain);
    }
    // All data shards present: no decoding at all.
    let mut dec = ShardDecoder::new(scheme, key(1));
    let len = CT_CHUNK_LEN;
    let take = scheme.shard_len(len) + SHARD_TAG_LEN;
    let at = scheme.chunk_offset(0) as usize;
    let shards: Vec<(usize, &[u8])> = (0..14).map(|i| (i, &blobs[i][at..at + take])).collect();
    let mut out = Vec::new();
    let r = dec.decode(0, false, len, &shards, &mut out).unwrap();
    assert!(!r.reconstructed && r.bad.is_empty());
    let without_first: Vec<(usize, &[u8])> = shards[1..].to_vec();
    let r = dec.decode(0, false, len, &without_first, &mut out).unwrap();
    assert!(r.reconstructed);
}

/// A node flipping one byte of its shard: that shard is named bad and the
/// file still reads back whole from the others.
#[test]
fn a_flipped_byte_is_caught_and_another_shard_used() {
    let scheme = Scheme::new(4, 2).unwrap();
    let plain = data(150_000, 4);
    let (_, blobs) = shard_blobs(scheme, &plain, 1);
    for victim in 0..6 {
        for at in [
            SHARD_HEADER.len(),
            SHARD_HEADER.len() + 5,
            blobs[victim].len() - 1,
        ] {
            let mut forged = blobs.clone();
            forged[victim][at] ^= 0x40;
            let have: Vec<Option<&[u8]>> = forged.iter().map(|b| Some(&b[..])).collect();
            let (bad, back) = read_back(scheme, plain.len(), &have, 1).unwrap();
            assert_eq!(bad, vec![victim]);
            assert_eq!(back, plain);
        }
    }
}

/// A node serving the same-index shard of another file, or of an older
/// version of this one (another file id: another key): refused.
#[test]
fn a_shard_of_another_file_or_version_is_refused() {
    let scheme = Scheme::new(2, 2).unwrap();
    let plain = data(70_000, 5);
    let (_, ours) = shard_blobs(scheme, &plain, 1);
    let (_, old) = shard_blobs(scheme, &plain, 2);
    let mut have: Vec<Option<&[u8]>> = ours.iter().map(|b| Some(&b[..])).collect();
    have[0] = Some(&old[0]);
    have[3] = Some(&old[3]);
    let (bad, back) = read_back(scheme, plain.len(), &have, 1).unwrap();
    assert_eq!(bad, vec![0, 3]);
    assert_eq!(back, plain);
    // Three of four replayed: fewer than K good, a clean refusal.
    have[1] = Some(&old[1]);
    assert_eq!(
        read_back(scheme, plain.len(), &have, 1).unwrap_err(),
        ErasureError::TooFewShards { good: 1, needed: 2 }
    );
}

/// Two nodes swapping their shards, or a node serving chunks out of order
/// or a non-final chunk as the last: every such chunk fails its tag.
#[test]
fn swapped_reordered_and_cut_shards_are_refused() {
    let scheme = Scheme::new(2, 2).unwrap();
    let plain = data(3 * 64 * 1024, 6);
    let (_, blobs) = shard_blobs(scheme, &plain, 1);
    let mut have: Vec<Option<&[u8]>> = blobs.iter().map(|b| Some(&b[..])).collect();
    have.swap(1, 2);
    let (bad, back) = read_back(scheme, plain.len(), &have, 1).unwrap();
    assert_eq!(bad, vec![1, 2]);
    assert_eq!(back, plain);

    let mut dec = ShardDecoder::new(scheme, key(1));
    let len = CT_CHUNK_LEN;
    let take = scheme.shard_len(len) + SHARD_TAG_LEN;
    let chunk = |i: usize, j: u64| {
        let at = scheme.chunk_offset(j) as usize;
        &blobs[i][at..at + take]
    };
    // Chunk 1's shards offered as chunk 0, and chunk 0's as the last.
    for (j, last, from) in [(0, false, 1), (0, true, 0)] {
        let shards: Vec<(usize, &[u8])> = (0..4).map(|i| (i, chunk(i, from))).collect();
        let mut out = vec![1, 2, 3];
        let err = dec.decode(j, last, len, &shards, &mut out).unwrap_err();
        assert_eq!(err, ErasureError::TooFewShards { good: 0, needed: 2 });
        assert!(out.is_empty(), "nothing is handed on from a failed chunk");
    }
    // A chunk of the wrong length, and the same index twice.
    let short = &chunk(0, 0)[..take - 2];
    assert!(!dec.verify(0, 0, false, len, short));
    let twice = [(0, chunk(0, 0)), (0, chunk(0, 0))];
    assert!(dec.decode(0, false, len, &twice, &mut Vec::new()).is_err());
}

#[test]
fn offsets_and_lengths_agree_with_the_stream() {
    use crate::crypto::stream::ciphertext_len;
    for (k, m) in [(2, 1), (4, 2), (10, 4)] {
        let scheme = Scheme::new(k, m).unwrap();
        for size in [0u64, 1, 65_536, 65_537, 10 << 20] {
            let lens: Vec<_> = Scheme::chunk_lens(size).collect();
            assert_eq!(
                lens.iter().map(|l| l.1 as u64).sum::<u64>(),
                ciphertext_len(size)
            );
            assert!(lens.last().unwrap().2);
            let last = lens.last().unwrap();
            let end =
                scheme.chunk_offset(last.0) + (scheme.shard_len(last.1) + SHARD_TAG_LEN) as u64;
            assert_eq!(end, scheme.shard_blob_len(size));
        }
    }
}
