//! Shared helpers: a scratch directory on a real disk, and the list of drivers every test runs
//! on.
#![allow(dead_code)]

use directfile::{BackendChoice, Driver};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory on a disk file system (never tmpfs): `$DIRECTFILE_TEST_DIR`, else the
/// cargo target directory's tmp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var_os("DIRECTFILE_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The drivers the suite runs on: io_uring (when this machine can make a ring; otherwise the
/// reason is printed and only the thread pool runs), io_uring with cooperative completions,
/// and the thread pool. `DIRECTFILE_BACKEND` narrows the list to the io_uring drivers
/// (`uring`) or the thread pool (`threads`).
pub fn drivers() -> Vec<Driver> {
    drivers_with(|b| b)
}

pub fn drivers_with(
    configure: impl Fn(directfile::DriverBuilder) -> directfile::DriverBuilder,
) -> Vec<Driver> {
    let only = std::env::var("DIRECTFILE_BACKEND").ok();
    let mut out = Vec::new();
    for (name, choice, cooperative) in [
        ("uring", BackendChoice::Uring, false),
        ("uring-coop", BackendChoice::Uring, true),
        ("threads", BackendChoice::Threads, false),
    ] {
        // `uring` keeps both io_uring drivers.
        let wanted = match only.as_deref() {
            None => true,
            Some("uring") => name.starts_with("uring"),
            Some(other) => name == other,
        };
        if !wanted {
            continue;
        }
        let builder = Driver::builder()
            .backend(choice)
            .cooperative_completions(cooperative);
        match configure(builder).build() {
            Ok(d) => out.push(d),
            Err(e) => eprintln!("skipping the {name} driver here: {e}"),
        }
    }
    assert!(!out.is_empty(), "no driver could be built");
    out
}

/// A deterministic PRNG (xorshift64*), so failures replay.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A new file, opened read-write with direct I/O on `driver`, in a fresh scratch directory.
pub fn scratch_file(driver: &Driver, name: &str) -> directfile::File {
    directfile::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .driver(driver)
        .open(scratch_dir(name).join("f"))
        .unwrap()
}

/// Waits (up to 10 s) until the driver has no operation in flight, cancelled ones included.
pub fn wait_idle(driver: &Driver) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while driver.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "operations still in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The executors the suites run the driver's futures on. With the features `tokio` and
/// `async-io`, the tokio and smol runs go through the runtime's reactor (`docs/reactors.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// A tokio multi-thread runtime (2 workers, I/O driver on), the tasks spawned.
    TokioMultiThread,
    /// A tokio current-thread runtime (I/O driver on), the tasks spawned.
    TokioCurrentThread,
    /// A smol executor on one thread in `smol::block_on` (async-io's reactor with the
    /// `async-io` feature: the drivers are built with `Reactor::AsyncIo`).
    Smol,
    /// `Driver::block_on`, the tasks joined in one future.
    DriverBlockOn,
    /// `futures::executor::block_on`, the tasks joined in one future.
    Futures,
}

impl Executor {
    pub const ALL: [Executor; 4] = [
        Executor::TokioMultiThread,
        Executor::TokioCurrentThread,
        Executor::Smol,
        Executor::DriverBlockOn,
    ];

    /// The suite's drivers (`drivers_with`), set up for this executor.
    pub fn drivers_with(
        self,
        configure: impl Fn(directfile::DriverBuilder) -> directfile::DriverBuilder,
    ) -> Vec<Driver> {
        drivers_with(|b| self.configure(configure(b)))
    }

    /// The builder set up for this executor: async-io's reactor for smol (with the feature).
    pub fn configure(self, builder: directfile::DriverBuilder) -> directfile::DriverBuilder {
        #[cfg(feature = "async-io")]
        if self == Executor::Smol {
            return builder.reactor(directfile::Reactor::AsyncIo);
        }
        builder
    }

    /// Runs `tasks` concurrently to completion and returns their outputs in order.
    pub fn run<T: Send + 'static>(
        self,
        driver: &Driver,
        tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
    ) -> Vec<T> {
        match self {
            Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                let rt = tokio_runtime(self == Executor::TokioMultiThread);
                rt.block_on(async {
                    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(h.await.unwrap());
                    }
                    out
                })
            }
            Executor::Smol => {
                let ex = smol::Executor::new();
                smol::block_on(ex.run(async {
                    let handles: Vec<_> = tasks.into_iter().map(|t| ex.spawn(t)).collect();
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(h.await);
                    }
                    out
                }))
            }
            Executor::DriverBlockOn => driver.block_on(futures::future::join_all(tasks)),
            Executor::Futures => futures::executor::block_on(futures::future::join_all(tasks)),
        }
    }

    /// Runs one future to completion: inside a spawned task on tokio, in `smol::block_on`,
    /// or in `Driver::block_on`.
    pub fn block_on<T: Send + 'static>(
        self,
        driver: &Driver,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self {
            Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                tokio_runtime(self == Executor::TokioMultiThread)
                    .block_on(async { tokio::spawn(fut).await.unwrap() })
            }
            Executor::Smol => smol::block_on(fut),
            Executor::DriverBlockOn => driver.block_on(fut),
            Executor::Futures => futures::executor::block_on(fut),
        }
    }
}

/// A tokio runtime with its I/O driver on, as `#[tokio::main]` makes it.
pub fn tokio_runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().unwrap()
}
