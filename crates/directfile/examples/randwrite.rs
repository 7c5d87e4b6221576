//! Random 4 KiB O_DIRECT writes at a queue depth, on one thread with `futures::executor`: a
//! small, dependency-free look at what the library does (the CLI's `directfile bench` is the
//! full benchmark).
//!
//! `cargo run --release -p directfile --example randwrite -- [PATH] [QD] [SECONDS] [dsync]`

use directfile::{Driver, OpenOptions};
use std::time::{Duration, Instant};

fn main() -> directfile::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "randwrite.dat".into());
    let qd: usize = args.next().map_or(32, |s| s.parse().expect("QD"));
    let secs: u64 = args.next().map_or(3, |s| s.parse().expect("SECONDS"));
    let dsync = args.next().is_some_and(|s| s == "dsync");
    const SIZE: u64 = 256 << 20;
    const BS: usize = 4096;

    let mut builder = Driver::builder();
    if let Some(us) = std::env::var("SPIN_US").ok().and_then(|s| s.parse().ok()) {
        builder = builder.spin(Duration::from_micros(us));
    }
    let driver = builder.build()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .write_through(dsync)
        .driver(&driver)
        .open(&path)?;
    // EXECUTOR=block_on (default) | tokio-ct | tokio-mt: the same workload on another executor.
    let executor = std::env::var("EXECUTOR").unwrap_or_else(|_| "block_on".into());
    let run =
        |fut: std::pin::Pin<Box<dyn std::future::Future<Output = directfile::Result<()>>>>| {
            match executor.as_str() {
                "tokio-ct" => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(fut),
                "tokio-mt" => tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?
                    .block_on(fut),
                _ => futures::executor::block_on(fut),
            }
        };
    run(Box::pin(async {
        // Lay the file out with data first: writes into unwritten extents would measure the
        // file system's extent conversion, not the device.
        if file.len()? < SIZE {
            let mut buf = file.alloc_buf(1 << 20);
            buf.set_len(1 << 20);
            for off in (0..SIZE).step_by(1 << 20) {
                let (r, b) = file.write_at(buf, off).await;
                r?;
                buf = b;
            }
            file.sync_all().await?;
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        let lanes = (0..qd).map(|lane| {
            let file = file.clone();
            let lane = async move {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (lane as u64 + 1);
                let mut lat = Vec::with_capacity(1 << 20);
                let mut buf = file.alloc_buf(BS);
                buf.set_len(BS);
                while Instant::now() < deadline {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let off = (rng % (SIZE / BS as u64)) * BS as u64;
                    let t = Instant::now();
                    let (r, b) = file.write_at(buf, off).await;
                    lat.push(t.elapsed().as_nanos() as u64);
                    r?;
                    buf = b;
                }
                directfile::Result::<Vec<u64>>::Ok(lat)
            };
            // Under tokio each lane is a task of its own, as an application would have it.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let task = rt.spawn(lane);
                    futures::future::Either::Left(async move { task.await.expect("lane panicked") })
                }
                Err(_) => futures::future::Either::Right(lane),
            }
        });
        let start = Instant::now();
        let mut all = Vec::new();
        for lat in futures::future::join_all(lanes).await {
            all.extend(lat?);
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{} qd={qd} dsync={dsync}: {:.0} IOPS, p50 {:.1} us, p99 {:.1} us ({} ops)",
            driver.backend(),
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            all.len()
        );
        Ok(())
    }))
}
