//! A progress bar on stderr, only when stderr is a terminal. It writes through a locked stderr
//! handle with `write!`, which does not allocate, so it does not disturb allocs_per_op.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A running progress bar; stops and clears its line on [`Progress::finish`] or drop.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label` and a bar that fills over `expected`; does nothing unless stderr is a
    /// terminal.
    pub fn start(label: String, expected: Duration) -> Progress {
        let start = Instant::now();
        Progress::spawn(move || {
            let elapsed = start.elapsed().min(expected).as_secs_f64();
            let total = expected.as_secs_f64();
            draw(&label, elapsed / total.max(1e-9), elapsed, total, "s");
        })
    }

    /// Shows `label` and a bar that fills as `done` approaches `total` bytes.
    pub fn bytes(label: String, total: u64, done: Arc<AtomicU64>) -> Progress {
        Progress::spawn(move || {
            let mebibytes = |bytes: u64| bytes as f64 / f64::from(1 << 20);
            let current = done.load(Ordering::Relaxed).min(total);
            let fraction = current as f64 / total.max(1) as f64;
            draw(
                &label,
                fraction,
                mebibytes(current),
                mebibytes(total),
                "MiB",
            );
        })
    }

    fn spawn(redraw: impl Fn() + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    redraw();
                    thread::sleep(Duration::from_millis(200));
                }
                let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            })
            .ok();
        Progress { stop, thread }
    }

    /// Stops the bar and clears its line (the same as dropping it; reads better at call sites).
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const BAR_WIDTH: usize = 30;

fn draw(label: &str, fraction: f64, done: f64, total: f64, unit: &str) {
    let fraction = fraction.clamp(0.0, 1.0);
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{label} [");
    for cell in 0..BAR_WIDTH {
        let _ = stderr.write_all(if cell < filled { b"#" } else { b"." });
    }
    let _ = write!(stderr, "] {done:.1}/{total:.1} {unit}");
    let _ = stderr.flush();
}
