//! What the Windows drivers do that Linux has no counterpart test for, on both of them (the
//! completion port and the thread pool): a write of `SyncStrategy::ExplicitSync` is followed
//! by `FlushFileBuffers` and completes only when the flush does, with the flush's error if it
//! fails, and its buffer stays with the driver until then; exact transfers on a pipe continue
//! after short ones (the FIFO test of `bad_input.rs`).
//!
//! A named pipe shows it under Wine, whose file flushes return at once: `FlushFileBuffers` on
//! a pipe waits until the other end has read everything written, so the flush, and with it
//! the write, stays in flight until the test's server end reads the byte.
//!
//! Also: with no runtime reactor on Windows, futures waiting on tokio and smol are woken by
//! the driver's own threads.
#![cfg(windows)]

mod common;

use common::{
    drivers, held_pipe, held_pipe_opened_with, wait_idle, Executor, HeldPipe, AT_POSITION,
};
use directfile::{Driver, OpenOptions, SyncStrategy};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A pipe opened write-through with `strategy` on `driver`.
fn pipe(driver: &Driver, strategy: SyncStrategy, name: &str) -> HeldPipe {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .direct(false)
        .write_through(true)
        .sync_strategy(strategy)
        .driver(driver);
    held_pipe_opened_with(&options, name)
}

/// Polls `fut` every millisecond for up to `time`; its output if it completed.
fn poll_for<F: Future + Unpin>(fut: &mut F, time: Duration) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    let deadline = Instant::now() + time;
    loop {
        if let Poll::Ready(out) = std::pin::Pin::new(&mut *fut).poll(&mut cx) {
            return Some(out);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn one_byte(file: &directfile::File, value: u8) -> directfile::AlignedBuf {
    let mut buf = file.alloc_buf(1);
    buf.extend_from_slice(&[value]);
    buf
}

#[test]
fn an_explicit_sync_write_completes_when_its_flush_does() {
    for driver in drivers() {
        // The flag alone: the pipe takes the byte into its buffer and the write is over.
        let mut plain = pipe(&driver, SyncStrategy::Dsync, "flush-dsync");
        let mut write = Box::pin(plain.file.write_at(one_byte(&plain.file, 6), AT_POSITION));
        let (n, _) = poll_for(&mut write, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "{}: a buffered pipe write never completed",
                driver.backend()
            )
        });
        assert_eq!(n.unwrap(), 1);
        assert_eq!(plain.take_byte(), 6);

        // With the explicit sync: in flight until the flush is, i.e. until the server reads.
        let mut synced = pipe(&driver, SyncStrategy::ExplicitSync, "flush-explicit");
        let mut write = Box::pin(synced.file.write_at(one_byte(&synced.file, 7), AT_POSITION));
        assert!(
            poll_for(&mut write, Duration::from_millis(300)).is_none(),
            "{}: the write completed before its flush",
            driver.backend()
        );
        assert_eq!(driver.in_flight(), 1);
        assert_eq!(synced.take_byte(), 7, "the write itself was done");
        let (n, buf) = poll_for(&mut write, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}: the flush never completed", driver.backend()));
        assert_eq!(n.unwrap(), 1, "{}: the bytes written", driver.backend());
        assert_eq!(buf.len(), 1);
        assert_eq!(driver.in_flight(), 0);
    }
}

#[test]
fn a_failed_flush_is_the_write_error() {
    for driver in drivers() {
        let mut synced = pipe(&driver, SyncStrategy::ExplicitSync, "flush-fails");
        let mut write = Box::pin(synced.file.write_at(one_byte(&synced.file, 8), AT_POSITION));
        assert!(poll_for(&mut write, Duration::from_millis(300)).is_none());
        // The server drops the client with the byte unread: the waiting flush fails.
        synced.disconnect();
        let (r, buf) = poll_for(&mut write, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}: the flush never completed", driver.backend()));
        let err = r.expect_err("a write whose flush failed is not acknowledged");
        assert!(
            err.raw_os_error().is_some(),
            "{}: the flush's OS error: {err:?}",
            driver.backend()
        );
        assert_eq!(buf.len(), 1, "the buffer comes back");
        assert_eq!(driver.in_flight(), 0);
    }
}

#[test]
fn a_write_dropped_during_its_flush_keeps_its_buffer_until_the_flush_is_over() {
    for driver in drivers() {
        let mut synced = pipe(&driver, SyncStrategy::ExplicitSync, "flush-dropped");
        let pool = driver.buf_pool(1, 4096, 4096);
        let mut buf = pool.try_get().unwrap();
        buf.extend_from_slice(&[9]);
        let mut write = Box::pin(synced.file.write_at(buf, AT_POSITION));
        assert!(poll_for(&mut write, Duration::from_millis(300)).is_none());
        drop(write);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            (driver.in_flight(), pool.available()),
            (1, 0),
            "{}: the flush runs on, with the buffer",
            driver.backend()
        );
        assert_eq!(synced.take_byte(), 9);
        wait_idle(&driver);
        assert_eq!(pool.available(), 1, "{}: buffer back", driver.backend());
    }
}

/// `u64::MAX` is the current position (Windows ignores a pipe's offset anyway): `read_exact_at`
/// on a pipe goes on reading after a short read, and `write_all_at` writes everything.
#[test]
fn exact_transfers_on_a_pipe_continue_after_short_ones() {
    for driver in drivers() {
        let mut pipe = held_pipe(&driver, "exact");
        let file = pipe.file.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = file.alloc_buf(8);
            buf.set_len(8);
            futures::executor::block_on(file.read_exact_at(buf, AT_POSITION))
        });
        pipe.send(b"abc");
        std::thread::sleep(Duration::from_millis(50));
        pipe.send(b"defgh");
        let (r, buf) = reader.join().unwrap();
        r.unwrap();
        assert_eq!(&buf[..], b"abcdefgh", "{}", driver.backend());
        let mut out = pipe.file.alloc_buf(5);
        out.extend_from_slice(b"12345");
        let (r, _) = futures::executor::block_on(pipe.file.write_all_at(out, AT_POSITION));
        r.unwrap();
        assert_eq!(pipe.take(5), b"12345");
        assert_eq!(driver.in_flight(), 0);
    }
}

/// The runtime reactors are io_uring's (an eventfd): on Windows the features `tokio` and
/// `async-io` turn nothing on, and a future waiting on tokio (both flavours) or smol is woken
/// by the driver's own threads (the port's reaper thread, the pool's workers), with the
/// `Reactor` each executor's drivers are built with (`Auto`; `AsyncIo` for smol with the
/// feature). The read of a pipe stays in flight until the server writes, so the future must
/// wait and be woken: polled at least twice, and no reactor ever registered.
#[test]
fn futures_on_tokio_and_smol_are_woken_by_the_drivers_own_threads() {
    for executor in [
        Executor::TokioMultiThread,
        Executor::TokioCurrentThread,
        Executor::Smol,
    ] {
        for driver in executor.drivers_with(|b| b.spin(Duration::ZERO)) {
            let mut pipe = held_pipe(&driver, "no-reactor");
            let file = pipe.file.clone();
            let polls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&polls);
            let waiter = Box::pin(async move {
                let mut buf = file.alloc_buf(1);
                buf.set_len(1);
                let mut read = Box::pin(file.read_at(buf, AT_POSITION));
                let (n, buf) = std::future::poll_fn(|cx| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    read.as_mut().poll(cx)
                })
                .await;
                (n.unwrap(), buf[0])
            }) as Pin<Box<dyn Future<Output = (usize, u8)> + Send>>;
            let (tx, rx) = std::sync::mpsc::channel();
            let d = driver.clone();
            std::thread::spawn(move || tx.send(executor.run(&d, vec![waiter])).unwrap());
            // The read is submitted (and, with no spin, its future waits): let the byte in.
            let deadline = Instant::now() + Duration::from_secs(10);
            while driver.in_flight() == 0 {
                assert!(Instant::now() < deadline, "the read was never submitted");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            pipe.release();
            let out = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{executor:?} on {}: never woken", driver.backend()));
            assert_eq!(out, [(1, 1)], "{executor:?} on {}", driver.backend());
            assert!(
                polls.load(Ordering::SeqCst) >= 2,
                "{executor:?} on {}: the read did not wait",
                driver.backend()
            );
            assert_eq!(driver.completion_reactor(), None);
            assert_eq!(driver.reactor_wakes(), 0);
            wait_idle(&driver);
        }
    }
}
