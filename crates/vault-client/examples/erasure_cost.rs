//! CPU cost of the Reed-Solomon data path per GiB, on one core: STREAM
//! encryption alone, shard encoding (tags included), and shard decoding
//! with all K data shards present (tags checked, no Reed-Solomon work) or
//! with M data shards missing (Reed-Solomon reconstruction from parity),
//! for RS(2,2), RS(4,2) and RS(10,4). Decryption is timed too, as the GET
//! side's counterpart of encryption, and BLAKE2b-MAC-128 alone (the shard
//! tags' primitive). "RS reconstruction per chunk" is the difference of the
//! two decodes per 64 KiB chunk: the Reed-Solomon work alone.
//!
//! ```sh
//! cargo run --release -p vault-client --example erasure_cost            # 1 GiB, 3 runs
//! cargo run --release -p vault-client --example erasure_cost -- 0.25 1  # GiB, runs
//! ```
//!
//! Every measurement goes through GiB of data in 64 KiB chunks, the same
//! calls the client makes (`Encryptor::seal_chunk`, `ShardEncoder::encode`,
//! `ShardDecoder::decode`), and prints the median of the runs as seconds
//! per GiB of plaintext and GB/s (10^9 bytes of plaintext per second).
//! The chunks cycle through a 16 MiB pool, larger than the caches, so the
//! coder reads memory as it would on a real file; the outputs go through
//! `black_box` so nothing is optimised away. One decode of each kind is
//! checked against the ciphertext it came from before timing.

use std::hint::black_box;
use std::time::Instant;

use blake2::digest::consts::U16;
use blake2::digest::Mac;
use blake2::Blake2bMac;

use vault_client::crypto::stream::{Decryptor, Encryptor, StreamKey, CHUNK_LEN, CT_CHUNK_LEN};
use vault_client::erasure::{Scheme, ShardDecoder, ShardEncoder, ShardKey};

/// Chunks in the pool the measurements cycle through (16 MiB of plaintext).
const POOL: usize = 256;

/// Bytes of plaintext per GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Deterministic filler (xorshift64*): random-looking plaintext without a
/// dependency.
fn fill(buf: &mut [u8], mut seed: u64) {
    for b in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        b.copy_from_slice(&v[..b.len()]);
    }
}

/// Median of `runs` timings of `f` (seconds).
fn median(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut t: Vec<f64> = (0..runs).map(|_| f()).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

/// One table cell: seconds per GiB and GB/s, from `secs` for `chunks` chunks.
fn cell(secs: f64, chunks: usize) -> String {
    let bytes = (chunks * CHUNK_LEN) as f64;
    format!(
        "{:.3} s/GiB = {:.2} GB/s",
        secs * GIB / bytes,
        bytes / secs / 1e9
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: f64 = args
        .next()
        .map_or(1.0, |a| a.parse().expect("GiB: a number"));
    let runs: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("runs: a number"));
    let chunks = ((gib * GIB) as usize / CHUNK_LEN).max(POOL);
    let key = StreamKey::new([7; 32]);
    let ad = b"erasure_cost";

    // The plaintext pool, and its ciphertext (non-last chunks, as in the
    // middle of a file).
    let mut plain = vec![0u8; POOL * CHUNK_LEN];
    fill(&mut plain, 0x9E37_79B9_7F4A_7C15);
    let mut pool_ct: Vec<Vec<u8>> = Vec::with_capacity(POOL);
    let mut enc = Encryptor::new(&key, ad);
    for p in plain.chunks(CHUNK_LEN) {
        let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
        buf.extend_from_slice(p);
        enc.seal_chunk(&mut buf, false).expect("seal");
        pool_ct.push(buf);
    }

    println!(
        "{} GiB ({chunks} chunks of 64 KiB) per measurement, median of {runs} run(s), one thread",
        chunks as f64 * CHUNK_LEN as f64 / GIB
    );
    println!();

    // STREAM encryption alone: copy the plaintext chunk in, seal it.
    let encrypt = median(runs, || {
        let mut enc = Encryptor::new(&key, ad);
        let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
        let start = Instant::now();
        for j in 0..chunks {
            buf.clear();
            buf.extend_from_slice(&plain[(j % POOL) * CHUNK_LEN..][..CHUNK_LEN]);
            enc.seal_chunk(&mut buf, j + 1 == chunks).expect("seal");
            black_box(&buf);
        }
        start.elapsed().as_secs_f64()
    });
    // Decryption of full chunks (the last flag would need the matching
    // stream; the cost per chunk is the same).
    let decrypt = median(runs, || {
        let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
        let mut secs = 0.0;
        let mut done = 0;
        while done < chunks {
            // A fresh stream per pass over the pool: chunk counters match.
            let mut dec = Decryptor::new(&key, ad);
            let n = POOL.min(chunks - done);
            let start = Instant::now();
            for ct in &pool_ct[..n] {
                buf.clear();
                buf.extend_from_slice(ct);
                dec.open_chunk(&mut buf, false).expect("open");
                black_box(&buf);
            }
            secs += start.elapsed().as_secs_f64();
            done += n;
        }
        secs
    });
    // The shard tag's primitive alone: BLAKE2b-MAC-128 over each 64 KiB
    // plaintext chunk (a shard tag covers (K+M)/K times the bytes).
    let mac = median(runs, || {
        let start = Instant::now();
        for j in 0..chunks {
            let mut h = <Blake2bMac<U16> as Mac>::new_from_slice(&[9; 32]).expect("key");
            h.update(&plain[(j % POOL) * CHUNK_LEN..][..CHUNK_LEN]);
            black_box(h.finalize().into_bytes());
        }
        start.elapsed().as_secs_f64()
    });
    println!("| step | cost |");
    println!("|---|---|");
    println!(
        "| STREAM encryption (ChaCha20-Poly1305) | {} |",
        cell(encrypt, chunks)
    );
    println!("| STREAM decryption | {} |", cell(decrypt, chunks));
    println!(
        "| BLAKE2b-MAC-128 (shard tag primitive) | {} |",
        cell(mac, chunks)
    );
    println!();

    println!("| scheme | encode (tags incl.) | encrypt + encode | decode, K data shards (tags, no RS) | decode, M data shards missing (RS) | RS reconstruction per chunk | shard bytes / plaintext |");
    println!("|---|---|---|---|---|---|---|");
    for (k, m) in [(2, 2), (4, 2), (10, 4)] {
        let scheme = Scheme::new(k, m).expect("scheme");
        let n = scheme.shards();
        let skey = ShardKey::new([9; 32]);

        // The pool's shard chunks, chunk index = pool index.
        let mut encoder = ShardEncoder::new(scheme, skey.clone());
        let pool_shards: Vec<Vec<Vec<u8>>> = pool_ct
            .iter()
            .enumerate()
            .map(|(j, ct)| {
                let mut out = vec![Vec::new(); n];
                encoder
                    .encode(j as u64, false, ct, &mut out)
                    .expect("encode");
                out
            })
            .collect();
        let stored: usize = pool_shards[0].iter().map(Vec::len).sum();
        // Exactly K shards, as a GET reads: all data shards, or the data
        // shards M.. and all parity (the first M data shards missing).
        let all_data: Vec<usize> = (0..k).collect();
        let missing: Vec<usize> = (m.min(k)..n).take(k).collect();
        assert_eq!(missing.len(), k);
        let mut decoder = ShardDecoder::new(scheme, skey.clone());
        let mut out = Vec::with_capacity(CT_CHUNK_LEN);
        for pick in [&all_data, &missing] {
            let given: Vec<(usize, &[u8])> =
                pick.iter().map(|&i| (i, &pool_shards[3][i][..])).collect();
            let report = decoder
                .decode(3, false, CT_CHUNK_LEN, &given, &mut out)
                .expect("decode");
            assert!(report.bad.is_empty());
            assert_eq!(report.reconstructed, pick == &missing);
            assert_eq!(out, pool_ct[3], "decoded chunk differs");
        }

        let encode = median(runs, || {
            let mut encoder = ShardEncoder::new(scheme, skey.clone());
            let mut out: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(CT_CHUNK_LEN)).collect();
            let start = Instant::now();
            for j in 0..chunks {
                out.iter_mut().for_each(Vec::clear);
                encoder
                    .encode(j as u64, false, &pool_ct[j % POOL], &mut out)
                    .expect("encode");
                black_box(&out);
            }
            start.elapsed().as_secs_f64()
        });
        let both = median(runs, || {
            let mut enc = Encryptor::new(&key, ad);
            let mut encoder = ShardEncoder::new(scheme, skey.clone());
            let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
            let mut out: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(CT_CHUNK_LEN)).collect();
            let start = Instant::now();
            for j in 0..chunks {
                buf.clear();
                buf.extend_from_slice(&plain[(j % POOL) * CHUNK_LEN..][..CHUNK_LEN]);
                enc.seal_chunk(&mut buf, false).expect("seal");
                out.iter_mut().for_each(Vec::clear);
                encoder
                    .encode(j as u64, false, &buf, &mut out)
                    .expect("encode");
                black_box(&out);
            }
            start.elapsed().as_secs_f64()
        });
        let decode = |pick: &[usize]| {
            median(runs, || {
                let mut decoder = ShardDecoder::new(scheme, skey.clone());
                let mut out = Vec::with_capacity(CT_CHUNK_LEN);
                let mut given: Vec<(usize, &[u8])> = Vec::with_capacity(k);
                let start = Instant::now();
                for j in 0..chunks {
                    let p = j % POOL;
                    given.clear();
                    given.extend(pick.iter().map(|&i| (i, &pool_shards[p][i][..])));
                    let report = decoder
                        .decode(p as u64, false, CT_CHUNK_LEN, &given, &mut out)
                        .expect("decode");
                    black_box(&report);
                    black_box(&out);
                }
                start.elapsed().as_secs_f64()
            })
        };
        let dec_data = decode(&all_data);
        let dec_rs = decode(&missing);
        println!(
            "| RS({k},{m}) | {} | {} | {} | {} | {:.0} µs | {:.3} |",
            cell(encode, chunks),
            cell(both, chunks),
            cell(dec_data, chunks),
            cell(dec_rs, chunks),
            (dec_rs - dec_data) / chunks as f64 * 1e6,
            stored as f64 / CHUNK_LEN as f64
        );
    }
}
