//! What a PUT tells its progress sink (issue 16, point 4): each file's
//! bytes counted once as they are sent, the MD5 pass announced first and
//! counted apart, so a bar shows file bytes and never twice the file.

use std::sync::{Arc, Mutex};

use vault_client::ops::put_many::{Outcome, PutOptions, PutPlan};
use vault_client::ops::{self, Phase, Progress, ProgressRef};
use vault_client::path::LocalFile;
use vault_node::testing::{timed, TestCluster};

use super::common::*;

/// One thing a sink was told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Hashing(String),
    Uploading(String),
    Hashed(u64),
    Advance(u64),
    Total(u64),
}

/// A sink that records everything, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn sum(&self, f: impl Fn(&Event) -> Option<u64>) -> u64 {
        self.events().iter().filter_map(f).sum()
    }

    fn advanced(&self) -> u64 {
        self.sum(|e| match e {
            Event::Advance(n) => Some(*n),
            _ => None,
        })
    }

    fn hashed_bytes(&self) -> u64 {
        self.sum(|e| match e {
            Event::Hashed(n) => Some(*n),
            _ => None,
        })
    }

    fn position(&self, e: &Event) -> usize {
        self.events()
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e:?} was never announced"))
    }
}

impl Progress for Recorder {
    fn advance(&self, bytes: u64) {
        self.push(Event::Advance(bytes));
    }

    fn set_total(&self, bytes: u64) {
        self.push(Event::Total(bytes));
    }

    fn phase(&self, phase: Phase<'_>) {
        match phase {
            Phase::Hashing(name) => self.push(Event::Hashing(name.to_string())),
            Phase::Uploading(name) => self.push(Event::Uploading(name.to_string())),
            other => panic!("unexpected phase {other:?}"),
        }
    }

    fn hashed(&self, bytes: u64) {
        self.push(Event::Hashed(bytes));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_counts_the_file_once_hashing_announced_before_sending() {
    timed(async {
        let c = TestCluster::start(&format!("Alice {ALICE}\n"))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // Several MD5 reads (1 MiB each) and several parts.
        let n = (3 << 20) + 12_345;
        let path = write(&c, "big.bin", &data(n, 3));
        let n = n as u64;
        let rec = Arc::new(Recorder::default());
        let report = ops::put::put_file(&v, &path, rec.clone() as ProgressRef)
            .await
            .unwrap();
        assert_eq!(report.size, n);

        let events = rec.events();
        let hashing = rec.position(&Event::Hashing("big.bin".into()));
        let uploading = rec.position(&Event::Uploading("big.bin".into()));
        assert_eq!(hashing, 0, "the MD5 pass is announced first: {events:?}");
        assert!(hashing < uploading, "hashing comes before sending");
        // Each phase counts the file's bytes once, never more on the way.
        let (mut hashed, mut sent) = (0u64, 0u64);
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Hashed(b) => {
                    assert!(i > hashing && i < uploading, "hashed outside its phase");
                    hashed += b;
                    assert!(hashed <= n, "the MD5 pass counted {hashed} of {n}");
                }
                Event::Advance(b) => {
                    assert!(i > uploading, "advanced before sending began");
                    sent += b;
                    assert!(sent <= n, "sending counted {sent} of {n}");
                }
                _ => {}
            }
        }
        assert_eq!(hashed, n);
        assert_eq!(sent, n, "the file's bytes are counted once, not twice");
        assert_eq!(rec.advanced(), n);
    })
    .await;
}

/// Many files, as `put a b c` (MD5 passes started ahead) and as `put -r`
/// (each large file hashed just before it is sent): the advances add up to
/// the files' sizes, each large file's MD5 pass is counted apart and
/// announced before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_several_files_counts_each_file_once() {
    timed(async {
        let c = TestCluster::start(&format!("Alice {ALICE}\n"))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        for (round, skip_unchanged) in [(0, false), (1, true)] {
            let sizes = [(2 << 20) + 7, 150_000, 3_000, (1 << 20) + 1];
            let files: Vec<LocalFile> = sizes
                .iter()
                .enumerate()
                .map(|(i, &len)| {
                    let name = format!("r{round}-f{i}.bin");
                    let path = write(&c, &name, &data(len, 10 + i as u64));
                    LocalFile {
                        path,
                        name,
                        size: len as u64,
                        mtime_ns: None,
                    }
                })
                .collect();
            let total: u64 = sizes.iter().map(|&s| s as u64).sum();
            let large: Vec<&LocalFile> = files
                .iter()
                .filter(|f| f.size > ops::put_many::SMALL_FILE)
                .collect();
            assert_eq!(large.len(), 2);
            let rec = Arc::new(Recorder::default());
            let options = PutOptions {
                skip_unchanged,
                ..PutOptions::default()
            };
            let plan = PutPlan::start(files.clone(), options, rec.clone() as ProgressRef);
            let summary = plan.run(&v).await.unwrap();
            assert!(
                summary
                    .files
                    .iter()
                    .all(|(_, o)| matches!(o, Outcome::Stored(_))),
                "{:?}",
                summary.files
            );
            assert_eq!(rec.advanced(), total, "round {round}: file bytes once");
            let large_bytes: u64 = large.iter().map(|f| f.size).sum();
            assert_eq!(rec.hashed_bytes(), large_bytes, "round {round}");
            for f in &large {
                let h = rec.position(&Event::Hashing(f.name.clone()));
                let u = rec.position(&Event::Uploading(f.name.clone()));
                assert!(h < u, "round {round}: {} sent before hashed", f.name);
            }
        }
    })
    .await;
}
