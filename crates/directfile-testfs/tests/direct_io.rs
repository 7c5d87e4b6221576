//! `O_DIRECT | O_DSYNC` writes on FUSE: which ones the kernel follows with a `FUSE_FSYNC`, and
//! so which ones survive a power cut. The facts `directfile`'s durability strategy rests on
//! (issue 12): io_uring is used directly, so they hold whatever the library does.

mod common;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use directfile_testfs::{Mount, Options, Requests};
use io_uring::{opcode, squeue, types, IoUring};

const BLOCK_BYTES: usize = 4096;
/// The file the tests overwrite: 4 blocks.
const BLOCKS: usize = 4;

/// A direct-I/O buffer (4096-aligned, as any direct-I/O alignment requires).
#[repr(C, align(4096))]
struct Block([u8; BLOCK_BYTES]);

/// A block filled with `byte`, never freed: the kernel may still be writing from it if a test
/// panics with an operation in flight.
fn leaked_block(byte: u8) -> &'static Block {
    Box::leak(Box::new(Block([byte; BLOCK_BYTES])))
}

fn open_direct_dsync(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .unwrap()
}

/// A ring, or `None` (with the reason printed) where io_uring cannot be used.
fn ring(test: &str) -> Option<IoUring> {
    match IoUring::new(16) {
        Ok(ring) => Some(ring),
        Err(error) => {
            eprintln!("skipping {test}: io_uring is unavailable here: {error}");
            None
        }
    }
}

/// Submits one `IORING_OP_WRITE` per block at once (queue depth `blocks.len()`), each followed
/// by a linked `IORING_OP_FSYNC(DATASYNC)` when `linked_fdatasync`, and waits for all of them.
/// Returns each write's result.
fn uring_writes(
    ring: &mut IoUring,
    file: &File,
    blocks: &[(&'static Block, u64)],
    linked_fdatasync: bool,
) -> Vec<io::Result<usize>> {
    let fd = types::Fd(file.as_raw_fd());
    let mut expected = 0;
    for (index, &(block, offset)) in blocks.iter().enumerate() {
        let write = opcode::Write::new(fd, block.0.as_ptr(), BLOCK_BYTES as u32)
            .offset(offset)
            .build()
            .user_data(index as u64);
        let write = if linked_fdatasync {
            write.flags(squeue::Flags::IO_LINK)
        } else {
            write
        };
        // SAFETY: the buffer is leaked ('static), so it stays valid for as long as the kernel
        // may use it, whatever happens to this test; the descriptor is resolved at submission
        // and `file` outlives the wait below.
        unsafe { ring.submission().push(&write) }.expect("the ring has room");
        expected += 1;
        if linked_fdatasync {
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(1 << 32 | index as u64);
            // SAFETY: an fsync references no memory; the descriptor as above.
            unsafe { ring.submission().push(&sync) }.expect("the ring has room");
            expected += 1;
        }
    }
    let mut results: Vec<Option<io::Result<usize>>> = (0..blocks.len()).map(|_| None).collect();
    let mut reaped = 0;
    while reaped < expected {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => panic!("io_uring_enter: {error}"),
        }
        for completion in ring.completion() {
            reaped += 1;
            let result = if completion.result() < 0 {
                Err(io::Error::from_raw_os_error(-completion.result()))
            } else {
                Ok(completion.result() as usize)
            };
            let index = (completion.user_data() & 0xffff_ffff) as usize;
            if completion.user_data() >> 32 == 0 {
                results[index] = Some(result);
            } else {
                result.expect("the linked fdatasync");
            }
        }
    }
    results.into_iter().map(|r| r.expect("reaped")).collect()
}

/// A mount with a 4-block file `data` of `old_byte`s whose contents and entry are durable.
fn mount_with_synced_file(
    test: &str,
    options: &Options,
    old_byte: u8,
) -> (common::MountPoint, Mount) {
    let dir = common::mount_point(test);
    let mount = Mount::with_options(&dir, options).unwrap();
    let path = mount.path().join("data");
    std::fs::write(&path, vec![old_byte; BLOCKS * BLOCK_BYTES]).unwrap();
    File::open(&path).unwrap().sync_all().unwrap();
    File::open(mount.path()).unwrap().sync_all().unwrap();
    assert!(!mount.has_unsynced_changes());
    (dir, mount)
}

fn delta(after: Requests, before: Requests) -> (u64, u64, u64) {
    (
        after.write_count - before.write_count,
        after.write_dsync_count - before.write_dsync_count,
        after.fsync_count - before.fsync_count,
    )
}

/// Power cut, remount, read `data` back through the mount; also checks the image agrees.
fn after_power_cut(mount: Mount, dir: &common::MountPoint) -> Vec<u8> {
    let image = mount.power_cut();
    let recovered = image.mount(dir).unwrap();
    let contents = std::fs::read(recovered.path().join("data")).unwrap();
    assert_eq!(image.read_file("data").as_deref(), Some(&contents[..]));
    contents
}

fn overwrite_blocks(byte: u8) -> Vec<(&'static Block, u64)> {
    (0..BLOCKS)
        .map(|i| (leaked_block(byte), (i * BLOCK_BYTES) as u64))
        .collect()
}

/// Test (3): a synchronous `pwrite(2)` with `O_DIRECT | O_DSYNC` over existing blocks is
/// followed by a `FUSE_FSYNC` (the kernel's `generic_write_sync` after the direct write), and
/// survives.
#[test]
fn sync_pwrite_dsync_overwrite_is_synced_and_survives() {
    let test = "sync_pwrite_dsync_overwrite_is_synced_and_survives";
    if common::skip(test) {
        return;
    }
    let (dir, mount) = mount_with_synced_file(test, &Options::default(), 0xaa);
    assert!(
        mount.async_direct_io(),
        "FUSE_ASYNC_DIO negotiated, as libfuse does"
    );
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    let block = leaked_block(0x55);
    for i in 0..BLOCKS {
        let written = file.write_at(&block.0, (i * BLOCK_BYTES) as u64).unwrap();
        assert_eq!(written, BLOCK_BYTES);
    }
    let (writes, dsync_writes, fsyncs) = delta(mount.requests(), before);
    assert_eq!((writes, dsync_writes), (4, 4));
    assert_eq!(
        fsyncs, 4,
        "one FUSE_FSYNC after each synchronous O_DSYNC write"
    );
    assert_eq!(
        mount.requests().fdatasync_count,
        4,
        "with the datasync flag"
    );
    assert!(!mount.has_unsynced_changes());
    drop(file);
    let contents = after_power_cut(mount, &dir);
    assert_eq!(contents, vec![0x55; BLOCKS * BLOCK_BYTES]);
}

/// Test (4), the loss of issue 12: io_uring `O_DIRECT | O_DSYNC` writes over existing, synced
/// blocks complete (acknowledged) without any `FUSE_FSYNC`, and are lost at a power cut.
#[test]
fn uring_dsync_overwrite_is_not_synced_and_is_lost() {
    let test = "uring_dsync_overwrite_is_not_synced_and_is_lost";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let (dir, mount) = mount_with_synced_file(test, &Options::default(), 0xaa);
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    for result in uring_writes(&mut ring, &file, &overwrite_blocks(0x55), false) {
        assert_eq!(result.unwrap(), BLOCK_BYTES, "acknowledged");
    }
    // A reader sees the new data: the writes reached the file system.
    let mut seen = vec![0u8; BLOCKS * BLOCK_BYTES];
    File::open(mount.path().join("data"))
        .unwrap()
        .read_exact_at(&mut seen, 0)
        .unwrap();
    assert_eq!(seen, vec![0x55; BLOCKS * BLOCK_BYTES]);
    let (writes, dsync_writes, fsyncs) = delta(mount.requests(), before);
    assert_eq!(
        (writes, dsync_writes),
        (4, 4),
        "each FUSE_WRITE carries O_DSYNC in its flags"
    );
    assert_eq!(
        fsyncs, 0,
        "the kernel sent no FUSE_FSYNC for async O_DSYNC overwrites"
    );
    assert!(mount.has_unsynced_changes());
    drop(file);
    let contents = after_power_cut(mount, &dir);
    let lost_bytes = contents.iter().filter(|&&b| b != 0x55).count();
    eprintln!(
        "{test}: {lost_bytes} of {} acknowledged bytes lost (4 io_uring writes, 0 FUSE_FSYNC)",
        BLOCKS * BLOCK_BYTES
    );
    assert_eq!(
        contents,
        vec![0xaa; BLOCKS * BLOCK_BYTES],
        "the old, synced data is back"
    );
    assert_eq!(lost_bytes, BLOCKS * BLOCK_BYTES);
}

/// Test (5): the same writes followed by an explicit `fdatasync(2)` survive.
#[test]
fn uring_dsync_overwrite_then_fdatasync_survives() {
    let test = "uring_dsync_overwrite_then_fdatasync_survives";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let (dir, mount) = mount_with_synced_file(test, &Options::default(), 0xaa);
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    for result in uring_writes(&mut ring, &file, &overwrite_blocks(0x55), false) {
        assert_eq!(result.unwrap(), BLOCK_BYTES);
    }
    assert_eq!(delta(mount.requests(), before).2, 0);
    file.sync_data().unwrap();
    let after = mount.requests();
    assert_eq!(
        delta(after, before).2,
        1,
        "fdatasync(2) sent one FUSE_FSYNC"
    );
    assert_eq!(after.fdatasync_count - before.fdatasync_count, 1);
    assert!(!mount.has_unsynced_changes());
    drop(file);
    assert_eq!(
        after_power_cut(mount, &dir),
        vec![0x55; BLOCKS * BLOCK_BYTES]
    );
}

/// Test (5), as the library's fix submits it: each write linked (`IOSQE_IO_LINK`) to an
/// `IORING_OP_FSYNC(DATASYNC)`; every sync reaches the file system and the writes survive.
#[test]
fn uring_dsync_overwrite_linked_to_fdatasync_survives() {
    let test = "uring_dsync_overwrite_linked_to_fdatasync_survives";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let (dir, mount) = mount_with_synced_file(test, &Options::default(), 0xaa);
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    for result in uring_writes(&mut ring, &file, &overwrite_blocks(0x55), true) {
        assert_eq!(result.unwrap(), BLOCK_BYTES);
    }
    let (writes, _, fsyncs) = delta(mount.requests(), before);
    assert_eq!((writes, fsyncs), (4, 4), "one FUSE_FSYNC per linked sync");
    assert!(!mount.has_unsynced_changes());
    drop(file);
    assert_eq!(
        after_power_cut(mount, &dir),
        vec![0x55; BLOCKS * BLOCK_BYTES]
    );
}

/// Why the loss needs `FUSE_ASYNC_DIO` (libfuse's default, not `fuser`'s): without it the
/// kernel waits for every direct write, even an io_uring one, and syncs each `O_DSYNC` one.
#[test]
fn without_async_dio_uring_dsync_overwrite_is_synced() {
    let test = "without_async_dio_uring_dsync_overwrite_is_synced";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let options = Options {
        async_direct_io: false,
        ..Options::default()
    };
    let (dir, mount) = mount_with_synced_file(test, &options, 0xaa);
    assert!(!mount.async_direct_io());
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    for result in uring_writes(&mut ring, &file, &overwrite_blocks(0x55), false) {
        assert_eq!(result.unwrap(), BLOCK_BYTES);
    }
    assert_eq!(delta(mount.requests(), before), (4, 4, 4));
    drop(file);
    assert_eq!(
        after_power_cut(mount, &dir),
        vec![0x55; BLOCKS * BLOCK_BYTES]
    );
}

/// An io_uring `O_DSYNC` write that extends the file takes the kernel's waiting path ("we
/// cannot asynchronously extend the size of a file") and is synced: only overwrites are lost.
#[test]
fn uring_dsync_extending_write_is_synced() {
    let test = "uring_dsync_extending_write_is_synced";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let (dir, mount) = mount_with_synced_file(test, &Options::default(), 0xaa);
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    let past_the_end = vec![(leaked_block(0x77), (BLOCKS * BLOCK_BYTES) as u64)];
    for result in uring_writes(&mut ring, &file, &past_the_end, false) {
        assert_eq!(result.unwrap(), BLOCK_BYTES);
    }
    assert_eq!(delta(mount.requests(), before), (1, 1, 1));
    drop(file);
    let contents = after_power_cut(mount, &dir);
    assert_eq!(contents.len(), (BLOCKS + 1) * BLOCK_BYTES);
    assert!(contents[BLOCKS * BLOCK_BYTES..].iter().all(|&b| b == 0x77));
}

/// A server that honours the `O_DSYNC` bit of `FUSE_WRITE` ([`Options::durable_dsync_writes`])
/// keeps the io_uring overwrites without any sync.
#[test]
fn server_honouring_dsync_bit_keeps_uring_overwrite() {
    let test = "server_honouring_dsync_bit_keeps_uring_overwrite";
    if common::skip(test) {
        return;
    }
    let Some(mut ring) = ring(test) else { return };
    let options = Options {
        durable_dsync_writes: true,
        ..Options::default()
    };
    let (dir, mount) = mount_with_synced_file(test, &options, 0xaa);
    let file = open_direct_dsync(&mount.path().join("data"));
    let before = mount.requests();
    for result in uring_writes(&mut ring, &file, &overwrite_blocks(0x55), false) {
        assert_eq!(result.unwrap(), BLOCK_BYTES);
    }
    assert_eq!(delta(mount.requests(), before), (4, 4, 0));
    drop(file);
    assert_eq!(
        after_power_cut(mount, &dir),
        vec![0x55; BLOCKS * BLOCK_BYTES]
    );
}
