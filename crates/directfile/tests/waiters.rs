//! Tasks waiting for a slot (backpressure) are never stranded: not by a waiter that gives up,
//! not by closing the driver. An operation is held in flight by reading an empty FIFO (a
//! named pipe on Windows).

mod common;

use common::{drivers_with, held_pipe, HeldPipe, AT_POSITION};
use directfile::{Driver, File};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

/// Polls `fut` until the driver has nothing in flight (the held read completed).
fn finish<F: Future + Unpin>(driver: &Driver, fut: &mut F, waker: &Waker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.in_flight() != 0 {
        assert!(
            Instant::now() < deadline,
            "the held operation did not complete"
        );
        let _ = std::pin::Pin::new(&mut *fut).poll(&mut Context::from_waker(waker));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A one-byte buffer: a read of it blocks on an empty FIFO.
fn one_byte(file: &File) -> directfile::AlignedBuf {
    let mut buf = file.alloc_buf(1);
    buf.set_len(1);
    buf
}

fn one_slot() -> Vec<Driver> {
    drivers_with(|b| b.queue_depth(1).threads(1).spin(Duration::ZERO))
}

/// A read held in flight on an empty pipe (the driver's one slot), and two more reads queued
/// for the slot behind it, each polled once with its own counting waker.
struct Queued {
    pipe: HeldPipe,
    held: ReadFuture,
    held_waker: Waker,
    waiting: [(ReadFuture, Arc<Count>, Waker); 2],
}

type ReadFuture = std::pin::Pin<
    Box<dyn Future<Output = directfile::BufResult<usize, directfile::AlignedBuf>> + Send>,
>;

fn hold_one_and_queue_two(driver: &Driver, name: &str) -> Queued {
    let pipe = held_pipe(driver, name);
    let file = pipe.file.clone();
    let read = || -> ReadFuture { Box::pin(file.read_at(one_byte(&file), AT_POSITION)) };
    let (_, held_waker) = counting_waker();
    let mut held = read();
    if let Poll::Ready((r, b)) = held.as_mut().poll(&mut Context::from_waker(&held_waker)) {
        panic!("{}: the held read completed: {r:?} {b:?}", driver.backend());
    }
    let waiting = [(); 2].map(|()| {
        let (count, waker) = counting_waker();
        let mut fut = read();
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        (fut, count, waker)
    });
    Queued {
        pipe,
        held,
        held_waker,
        waiting,
    }
}

#[test]
fn a_waiter_that_gives_up_does_not_strand_the_next() {
    for driver in one_slot() {
        let Queued {
            mut pipe,
            mut held,
            held_waker,
            waiting,
        } = hold_one_and_queue_two(&driver, "waiters-give-up");
        let [x, (_y, y_count, _y_waker)] = waiting;
        drop(x); // a timeout fired, or it lost a select!
        pipe.release();
        finish(&driver, &mut held, &held_waker);
        assert_eq!(
            y_count.0.load(Ordering::SeqCst),
            1,
            "{}: Y woken",
            driver.backend()
        );
    }
}

#[test]
fn closing_the_driver_wakes_every_waiter() {
    for driver in one_slot() {
        let Queued {
            mut pipe,
            mut held,
            held_waker,
            waiting,
        } = hold_one_and_queue_two(&driver, "waiters-close");
        driver.close();
        for (mut fut, count, waker) in waiting {
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready((r, _)) => assert!(matches!(r, Err(directfile::Error::Closed))),
                Poll::Pending => panic!("{}: a waiter still waits after close", driver.backend()),
            }
        }
        pipe.release();
        finish(&driver, &mut held, &held_waker);
    }
}
