//! A progress bar on stderr, only when stderr is a terminal. It writes through a locked stderr
//! handle with `write!`, which does not allocate, so it does not disturb allocs_per_op.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
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
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let start = Instant::now();
                while !stop_flag.load(Ordering::Relaxed) {
                    draw(&label, start.elapsed(), expected);
                    thread::sleep(Duration::from_millis(200));
                }
                let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            })
            .ok();
        Progress { stop, thread }
    }

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

fn draw(label: &str, elapsed: Duration, expected: Duration) {
    let fraction = (elapsed.as_secs_f64() / expected.as_secs_f64().max(1e-9)).min(1.0);
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{label} [");
    for cell in 0..BAR_WIDTH {
        let _ = stderr.write_all(if cell < filled { b"#" } else { b"." });
    }
    let _ = write!(
        stderr,
        "] {:.1}/{:.1} s",
        elapsed.as_secs_f64().min(expected.as_secs_f64()),
        expected.as_secs_f64()
    );
    let _ = stderr.flush();
}
