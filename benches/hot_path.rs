//! The tokenize hot path, primitive by primitive and end to end in process:
//! PAN parsing, token drawing, fingerprinting, sealing, opening; the no-I/O
//! path (parse + fingerprint + token + seal); synced tokenize and detokenize
//! on a temp RocksDB with 1 and 64 concurrent callers; and, for comparison,
//! the ceiling: a raw RocksDB loop of synced WriteBatches of 1 and 64 puts.
//!
//! Run: `cargo bench --bench hot_path` (figures in docs/BENCHMARKS.md).

// criterion_group! generates an undocumented function.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cardvault::crypto::record::{self, RecordView};
use cardvault::crypto::{DataKey, Fingerprinter, KeyFileProvider, SecretKey};
use cardvault::domain::luhn;
use cardvault::store::rocksdb::ceiling::CeilingDb;
use cardvault::{Pan, TenantId, Token, Vault, VaultOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn pan_text(i: u64) -> String {
    let body = format!("49{i:013}");
    (b'0'..=b'9')
        .map(|d| format!("{body}{}", char::from(d)))
        .find(|s| luhn::passes(s.as_bytes()))
        .unwrap_or_default()
}

fn primitives(c: &mut Criterion) {
    let tenant = TenantId::parse("bench").unwrap();
    let text = pan_text(42);
    let pan = Pan::parse(&text).unwrap();
    let dek = DataKey::new(1, &SecretKey::generate().unwrap(), 0);
    let fingerprinter = Fingerprinter::new(1, &SecretKey::generate().unwrap()).unwrap();
    let token = Token::generate(&pan).unwrap();
    let sealed = record::seal(&dek, &tenant, &token, &pan).unwrap();

    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pan_parse", |b| {
        b.iter(|| Pan::parse(black_box(&text)).unwrap())
    });
    g.bench_function("token_generate", |b| {
        b.iter(|| Token::generate(black_box(&pan)).unwrap())
    });
    g.bench_function("fingerprint", |b| {
        b.iter(|| fingerprinter.fingerprint(black_box(&pan)))
    });
    g.bench_function("seal", |b| {
        b.iter(|| record::seal(&dek, &tenant, black_box(&token), black_box(&pan)).unwrap())
    });
    g.bench_function("open", |b| {
        b.iter(|| {
            RecordView::decode(black_box(&sealed))
                .unwrap()
                .open(&dek, &tenant, &token)
                .unwrap()
        })
    });
    g.bench_function("no_io_path", |b| {
        b.iter(|| {
            let pan = Pan::parse(black_box(&text)).unwrap();
            let fp = fingerprinter.fingerprint(&pan);
            let token = Token::generate(&pan).unwrap();
            (fp, record::seal(&dek, &tenant, &token, &pan).unwrap())
        })
    });
    g.finish();
}

struct BenchVault {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
}

fn open_vault() -> BenchVault {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek.key");
    KeyFileProvider::create(&kek).unwrap();
    let provider = Arc::new(KeyFileProvider::open(&kek).unwrap());
    let vault = Vault::open(&dir.path().join("db"), provider, VaultOptions::default()).unwrap();
    BenchVault {
        _dir: dir,
        vault: Arc::new(vault),
    }
}

/// Runs `iters` operations split over `callers` concurrent tasks; returns
/// the wall time, so criterion reports time per operation at that concurrency.
fn concurrent<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, callers: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let op = Arc::clone(&op);
                tokio::spawn(async move {
                    let mut k = c;
                    while k < iters {
                        op(k).await;
                        k += callers;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    start.elapsed()
}

fn synced_vault(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    let bench = open_vault();
    let next = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("vault_synced");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for callers in [1u64, 64] {
        g.bench_function(format!("tokenize_new/{callers}"), |b| {
            b.iter_custom(|iters| {
                let (vault, tenant, next) =
                    (Arc::clone(&bench.vault), tenant.clone(), Arc::clone(&next));
                concurrent(&rt, iters, callers, move |_| {
                    let (vault, tenant) = (Arc::clone(&vault), tenant.clone());
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let pan = Pan::parse(&pan_text(i)).unwrap();
                        vault.tokenize(&tenant, &pan, None).await.unwrap();
                    }
                })
            })
        });
    }
    // Tokens to read back: the PANs tokenized above.
    let issued = next.load(Ordering::Relaxed).max(1);
    let tokens: Arc<Vec<Token>> = Arc::new(rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..issued.min(10_000) {
            let pan = Pan::parse(&pan_text(i)).unwrap();
            out.push(
                bench
                    .vault
                    .tokenize(&tenant, &pan, None)
                    .await
                    .unwrap()
                    .token,
            );
        }
        out
    }));
    g.bench_function("tokenize_existing/1", |b| {
        b.iter_custom(|iters| {
            let (vault, tenant) = (Arc::clone(&bench.vault), tenant.clone());
            let n = tokens.len() as u64;
            concurrent(&rt, iters, 1, move |k| {
                let (vault, tenant) = (Arc::clone(&vault), tenant.clone());
                async move {
                    let pan = Pan::parse(&pan_text(k % n)).unwrap();
                    vault.tokenize(&tenant, &pan, None).await.unwrap();
                }
            })
        })
    });
    for callers in [1u64, 64] {
        g.bench_function(format!("detokenize/{callers}"), |b| {
            b.iter_custom(|iters| {
                let (vault, tenant, tokens) = (
                    Arc::clone(&bench.vault),
                    tenant.clone(),
                    Arc::clone(&tokens),
                );
                concurrent(&rt, iters, callers, move |k| {
                    let (vault, tenant, tokens) =
                        (Arc::clone(&vault), tenant.clone(), Arc::clone(&tokens));
                    async move {
                        let token = tokens[(k as usize) % tokens.len()];
                        black_box(vault.detokenize(&tenant, &token).await.unwrap());
                    }
                })
            })
        });
    }
    g.finish();
}

/// The ceiling: what RocksDB itself does with synced WriteBatches of `group`
/// puts (the same writes `cardvault load ceiling` makes), with no vault
/// around it.
fn raw_rocksdb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = CeilingDb::open(dir.path()).unwrap();

    let mut g = c.benchmark_group("raw_rocksdb_synced");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for group in [1usize, 64] {
        g.throughput(Throughput::Elements(group as u64));
        g.bench_function(format!("batch/{group}"), |b| {
            b.iter(|| db.commit(group).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, primitives, synced_vault, raw_rocksdb);
criterion_main!(benches);
