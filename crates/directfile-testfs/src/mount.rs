//! Mounting, the power cut, and the durable image a power cut leaves.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::fs::{lock, root_perm, Shared, State, TestFs};
use crate::model::Tree;
use crate::{Options, Requests};

/// The FUSE device.
const DEV_FUSE: &str = "/dev/fuse";

/// The file system type as `findmnt` shows it (`fuse.` and a subtype).
pub const FS_TYPE: &str = "fuse.directfile-testfs";

/// How long an unmount waits for the session thread to see the connection end.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(10);

/// The environment variable that turns "FUSE is unavailable here" into a panic (set it to 1
/// where the tests must run, as in CI).
pub const REQUIRE_ENV: &str = "DIRECTFILE_REQUIRE_FUSE";

/// A mounted test file system. Dropping it unmounts it as a power cut would, discarding
/// everything (also when a test panics).
pub struct Mount {
    path: PathBuf,
    shared: Shared,
    session: Option<fuser::BackgroundSession>,
}

/// The durable state a [`Mount::power_cut`] left: files and directory entries as of their
/// last `fsync`/`fsyncdir`. Mount it again with [`Image::mount`] to recover.
pub struct Image {
    tree: Tree,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .field("requests", &self.requests())
            .finish()
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("inodes", &self.tree.inodes.len())
            .finish()
    }
}

impl Mount {
    /// Mounts an empty file system on `dir` (created if missing), with [`Options::default`].
    ///
    /// The mount is a direct `mount(2)` of type `fuse.directfile-testfs` (no `fusermount`),
    /// served by a thread of this process.
    ///
    /// # Errors
    /// When `/dev/fuse` cannot be opened, `mount(2)` is refused (not root), or the kernel's
    /// FUSE handshake fails. [`unavailable_reason`] tells beforehand.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Mount> {
        Mount::with_options(dir, &Options::default())
    }

    /// Mounts an empty file system on `dir` with `options`.
    ///
    /// # Errors
    /// As [`Mount::new`].
    pub fn with_options(dir: impl AsRef<Path>, options: &Options) -> io::Result<Mount> {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        start(dir.as_ref(), Tree::empty(uid, gid), options)
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The requests served so far.
    pub fn requests(&self) -> Requests {
        lock(&self.shared).requests
    }

    /// `FUSE_FSYNC` requests served so far (`fsync(2)`, `fdatasync(2)`, the kernel's sync after
    /// an `O_DSYNC` write, `IORING_OP_FSYNC`); `FUSE_FSYNCDIR` is counted apart.
    pub fn fsync_count(&self) -> u64 {
        self.requests().fsync_count
    }

    /// The kernel's FUSE protocol version, `(major, minor)`, from its `FUSE_INIT`.
    pub fn kernel_fuse_version(&self) -> (u32, u32) {
        lock(&self.shared)
            .kernel_version
            .expect("the handshake completed before the mount was returned")
    }

    /// Whether the kernel queues asynchronous direct I/O (`FUSE_ASYNC_DIO` negotiated).
    pub fn async_direct_io(&self) -> bool {
        lock(&self.shared).async_direct_io
    }

    /// Whether a power cut now would lose anything (file contents, sizes or directory
    /// entries not yet synced).
    pub fn has_unsynced_changes(&self) -> bool {
        lock(&self.shared).tree.is_dirty()
    }

    /// Cuts the power: freezes the durable state at this instant (everything not yet synced
    /// is gone), makes every later request on this mount fail (the connection is aborted, so
    /// a process that still holds files open can make nothing more durable), and unmounts.
    pub fn power_cut(mut self) -> Image {
        let tree = {
            let mut state = lock(&self.shared);
            state.powered = false;
            state.tree.take_durable()
        };
        self.shut_down();
        Image { tree }
    }

    /// Aborts the connection, detaches the mount and waits for the session thread.
    fn shut_down(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        lock(&self.shared).powered = false;
        // MNT_FORCE has the kernel abort the connection (`fuse_umount_begin` ->
        // `fuse_abort_conn`): waiting and later requests fail, also for files still open.
        // MNT_DETACH then takes the mount out even while such files keep it busy.
        if let Err(error) =
            rustix::mount::unmount(&self.path, UnmountFlags::FORCE | UnmountFlags::DETACH)
        {
            eprintln!(
                "directfile-testfs: unmounting {} failed: {error}",
                self.path.display()
            );
        }
        // The session thread's next read of /dev/fuse fails (ECONNABORTED), and it exits.
        let deadline = Instant::now() + SESSION_EXIT_WAIT;
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if session.guard.is_finished() {
            // Its result is the abort it saw; nothing to report.
            let _ = session.join();
        } else {
            eprintln!(
                "directfile-testfs: the session thread of {} did not exit within {:?}; left \
                 running",
                self.path.display(),
                SESSION_EXIT_WAIT
            );
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl Image {
    /// The image of an empty file system (what [`Mount::new`] starts from).
    pub fn empty() -> Image {
        Image {
            tree: Tree::empty(
                rustix::process::getuid().as_raw(),
                rustix::process::getgid().as_raw(),
            ),
        }
    }

    /// Mounts a file system whose state is this image on `dir`: recovery after the power
    /// cut. The image is kept, so it can be mounted again.
    ///
    /// # Errors
    /// As [`Mount::new`].
    pub fn mount(&self, dir: impl AsRef<Path>) -> io::Result<Mount> {
        self.mount_with_options(dir, &Options::default())
    }

    /// Mounts this image on `dir` with `options`.
    ///
    /// # Errors
    /// As [`Mount::new`].
    pub fn mount_with_options(
        &self,
        dir: impl AsRef<Path>,
        options: &Options,
    ) -> io::Result<Mount> {
        start(dir.as_ref(), self.tree.clone_durable(), options)
    }

    /// The durable contents of the file at `path` (relative to the mount point), or `None`
    /// when no durable entry leads there.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.tree.durable_file(path.as_ref())
    }
}

fn with_context(error: io::Error, context: impl std::fmt::Display) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// Mounts `tree` on `dir` and starts its session thread.
fn start(dir: &Path, tree: Tree, options: &Options) -> io::Result<Mount> {
    // A mount point left by a killed test process answers ENOTCONN: take it away first.
    if let Err(error) = std::fs::metadata(dir) {
        if error.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) {
            let _ = rustix::mount::unmount(dir, UnmountFlags::DETACH);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| with_context(e, dir.display()))?;
    let path = dir
        .canonicalize()
        .map_err(|e| with_context(e, dir.display()))?;
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV_FUSE)
        .map_err(|e| with_context(e, format!("opening {DEV_FUSE}")))?;
    // The options fusermount would pass (libfuse's `fuse_mount_sys`): the device descriptor,
    // the root's mode, and the mounting user as the one allowed in (no allow_other).
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        device.as_raw_fd(),
        0o040000 | u32::from(root_perm(&tree)),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let data = CString::new(data).expect("no NUL in the mount options");
    rustix::mount::mount(
        "directfile-testfs",
        &path,
        FS_TYPE,
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| {
        with_context(
            io::Error::from(e),
            format!("mount(2) of {FS_TYPE} on {}", path.display()),
        )
    })?;

    let shared: Shared = Arc::new(Mutex::new(State {
        tree,
        powered: true,
        requests: Requests::default(),
        kernel_version: None,
        async_direct_io: false,
    }));
    let fs = TestFs {
        shared: shared.clone(),
        options: options.clone(),
    };
    // The session reads FUSE_INIT (queued by the mount) and answers it before returning.
    let session = fuser::Session::from_fd(
        fs,
        OwnedFd::from(device),
        fuser::SessionACL::All,
        fuser::Config::default(),
    )
    .and_then(fuser::Session::spawn);
    match session {
        Ok(session) => Ok(Mount {
            path,
            shared,
            session: Some(session),
        }),
        Err(error) => {
            let _ = rustix::mount::unmount(&path, UnmountFlags::FORCE | UnmountFlags::DETACH);
            Err(with_context(
                error,
                format!("FUSE handshake on {}", path.display()),
            ))
        }
    }
}

/// Why this test file system cannot be mounted in this process, or `None` when it can.
///
/// The first call opens `/dev/fuse` and mounts and unmounts an empty file system in a fresh
/// directory under [`std::env::temp_dir`]; the answer is kept. A test that gets a reason
/// prints it and skips: it never passes silently.
///
/// # Panics
/// When FUSE is unavailable and the environment variable [`REQUIRE_ENV`]
/// (`DIRECTFILE_REQUIRE_FUSE`) is `1`: where the tests must run, a skip is a failure.
pub fn unavailable_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    let reason = REASON.get_or_init(probe).clone();
    if let Some(reason) = &reason {
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_ENV}=1, but the FUSE test file system cannot be used here: {reason}");
        }
    }
    reason
}

fn probe() -> Option<String> {
    if let Err(error) = OpenOptions::new().read(true).write(true).open(DEV_FUSE) {
        return Some(format!(
            "cannot open {DEV_FUSE}: {error} (no FUSE in this kernel or container)"
        ));
    }
    let dir = std::env::temp_dir().join(format!("directfile-testfs-probe-{}", std::process::id()));
    let answer = match Mount::new(&dir) {
        Ok(mount) => {
            let check = std::fs::read_dir(mount.path()).map(drop);
            drop(mount);
            check
                .err()
                .map(|error| format!("a FUSE mount on {} does not answer: {error}", dir.display()))
        }
        Err(error) => Some(format!(
            "{error} (this crate mounts with mount(2) itself, without fusermount, which needs \
             root or CAP_SYS_ADMIN; euid is {})",
            rustix::process::geteuid().as_raw()
        )),
    };
    let _ = std::fs::remove_dir(&dir);
    answer
}
