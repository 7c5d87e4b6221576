//! The same workload on every executor we promise: tokio (multi-thread and current-thread),
//! smol, and futures' block_on; futures are Send and 'static.

mod common;

use common::{drivers, scratch_file};
use directfile::File;

fn assert_send_static<T: Send + 'static>(_: &T) {}

async fn workload(
    file: File,
    tasks: usize,
    writes: usize,
    spawn: impl Fn(
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    let unit = file.alignment().offset;
    let mut joins = Vec::new();
    for t in 0..tasks {
        let file = file.clone();
        joins.push(spawn(Box::pin(async move {
            let mut buf = file.alloc_buf(unit);
            for w in 0..writes {
                buf.set_len(unit);
                buf.fill((t * writes + w) as u8);
                let off = ((t * writes + w) * unit) as u64;
                let fut = file.write_at(buf, off);
                assert_send_static(&fut);
                let (n, b) = fut.await;
                assert_eq!(n.unwrap(), unit);
                buf = b;
            }
            let sync = file.sync_data();
            assert_send_static(&sync);
            sync.await.unwrap();
        })));
    }
    futures::future::join_all(joins).await;
    let total = tasks * writes * unit;
    let mut back = file.alloc_buf(total);
    back.set_len(total);
    let (n, back) = file.read_at(back, 0).await;
    assert_eq!(n.unwrap(), total);
    for (i, chunk) in back.chunks(unit).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8), "block {i}");
    }
}

#[test]
fn tokio_multi_thread() {
    for driver in drivers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let file = scratch_file(&driver, "tokio-mt");
        rt.block_on(workload(file, 16, 32, |f| {
            let h = tokio::spawn(f);
            Box::pin(async move { h.await.unwrap() })
        }));
    }
}

#[test]
fn tokio_current_thread() {
    for driver in drivers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let file = scratch_file(&driver, "tokio-ct");
        rt.block_on(workload(file, 16, 32, |f| {
            let h = tokio::spawn(f);
            Box::pin(async move { h.await.unwrap() })
        }));
    }
}

#[test]
fn smol_executor() {
    for driver in drivers() {
        let file = scratch_file(&driver, "smol");
        let ex = std::sync::Arc::new(smol::Executor::new());
        let ex2 = ex.clone();
        smol::block_on(ex.run(workload(file, 16, 32, move |f| {
            let task = ex2.spawn(f);
            Box::pin(task)
        })));
    }
}

#[test]
fn futures_block_on() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on");
        // No spawner: the tasks run concurrently inside one future (join_all).
        futures::executor::block_on(workload(file, 16, 32, |f| f));
    }
}

#[test]
fn driver_block_on() {
    for driver in drivers() {
        let file = scratch_file(&driver, "driver-block-on");
        driver.block_on(workload(file, 16, 32, |f| f));
    }
}
