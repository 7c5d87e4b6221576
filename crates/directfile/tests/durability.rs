//! "Acknowledged" means durable on every file system, proven on one that keeps only what was
//! synced and loses the rest at a power cut (`directfile-testfs`, a FUSE file system).
//!
//! On FUSE an io_uring `O_DIRECT | O_DSYNC` write over existing blocks completes without the
//! kernel ever sending `FUSE_FSYNC`. With the sync strategy forced to `Dsync` (the flag alone,
//! right on ext4/xfs/btrfs) acknowledged writes are lost at the power cut; with the strategy
//! chosen for FUSE (`ExplicitSync`: a linked write + fsync) none is, and on the thread pool
//! none is either way.
//!
//! Linux only: FUSE and `directfile-testfs` are Linux's.
#![cfg(target_os = "linux")]

mod common;

use common::{drivers, scratch_dir};
use directfile::{Backend, OpenOptions, SyncStrategy};
use directfile_testfs::{unavailable_reason, Mount};
use futures::executor::block_on;

const BLOCKS: usize = 64;
const BLOCK: usize = 4096;

/// Prepares a file of `BLOCKS` synced blocks of zeros (entry and contents durable), so every
/// later write is an overwrite.
fn laid_out_file(mount: &Mount) -> std::path::PathBuf {
    let path = mount.path().join("data");
    std::fs::write(&path, vec![0u8; BLOCKS * BLOCK]).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    std::fs::File::open(mount.path())
        .unwrap()
        .sync_all()
        .unwrap();
    path
}

/// Overwrites every block through `file`, 8 at a time, each with its own pattern; returns
/// the blocks whose write was acknowledged.
fn overwrite_all(file: &directfile::File) -> Vec<usize> {
    block_on(async {
        let mut acknowledged = Vec::new();
        for group in (0..BLOCKS).collect::<Vec<_>>().chunks(8) {
            let writes = group.iter().map(|&block| {
                let mut buf = file.alloc_buf(BLOCK);
                buf.extend_from_slice(&[block as u8 + 1; BLOCK]);
                let write = file.write_at(buf, (block * BLOCK) as u64);
                async move { (block, write.await.0) }
            });
            for (block, result) in futures::future::join_all(writes).await {
                assert_eq!(result.unwrap(), BLOCK, "block {block}");
                acknowledged.push(block);
            }
        }
        acknowledged
    })
}

/// Acknowledged blocks that the durable image does not hold.
fn lost_blocks(image: &directfile_testfs::Image, acknowledged: &[usize]) -> usize {
    let durable = image.read_file("data").expect("the file is durable");
    acknowledged
        .iter()
        .filter(|&&block| {
            durable[block * BLOCK..(block + 1) * BLOCK]
                .iter()
                .any(|&b| b != block as u8 + 1)
        })
        .count()
}

#[test]
fn acknowledged_writes_survive_a_power_cut_on_fuse_only_with_the_explicit_sync() {
    if let Some(reason) = unavailable_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    for driver in drivers() {
        for forced in [Some(SyncStrategy::Dsync), None] {
            let dir = scratch_dir("fuse-durability");
            let mount = Mount::new(&dir).unwrap();
            let lost = run_case(&driver, mount, forced);
            match (driver.backend(), forced) {
                // The loss the issue found: the flag alone, on the asynchronous path.
                (Backend::Uring, Some(SyncStrategy::Dsync)) => assert!(lost.0 > 0, "{}", lost.1),
                // The explicit sync (io_uring's linked pairs); and the thread pool's
                // synchronous writes, which the kernel syncs on this file system.
                _ => assert_eq!(lost.0, 0, "{}", lost.1),
            }
            std::fs::remove_dir(&dir).unwrap();
        }
    }
}

/// With `FOPEN_DIRECT_IO` (libfuse's `direct_io`), even a synchronous `O_DSYNC` write gets no
/// `FUSE_FSYNC`: the flag alone loses acknowledged writes on the thread pool too, and the
/// explicit sync (on the thread pool an `fdatasync` after the write) loses none.
#[test]
fn with_fuse_direct_io_only_the_explicit_sync_is_durable_on_every_driver() {
    if let Some(reason) = unavailable_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let options = directfile_testfs::Options {
        direct_io_open: true,
        ..Default::default()
    };
    for driver in drivers() {
        for forced in [Some(SyncStrategy::Dsync), None] {
            let dir = scratch_dir("fuse-direct-io");
            let mount = Mount::with_options(&dir, &options).unwrap();
            let lost = run_case(&driver, mount, forced);
            if forced == Some(SyncStrategy::Dsync) {
                assert!(lost.0 > 0, "{}", lost.1);
            } else {
                assert_eq!(lost.0, 0, "{}", lost.1);
            }
            std::fs::remove_dir(&dir).unwrap();
        }
    }
}

/// Overwrites a laid-out file on `mount` through `driver` with the strategy `forced` (or the
/// one chosen), cuts the power; returns how many acknowledged writes were lost, and a line
/// saying what happened.
fn run_case(
    driver: &directfile::Driver,
    mount: Mount,
    forced: Option<SyncStrategy>,
) -> (usize, String) {
    {
        {
            let path = laid_out_file(&mount);
            let mut options = OpenOptions::new();
            options
                .read(true)
                .write(true)
                .write_through(true)
                .driver(driver);
            if let Some(strategy) = forced {
                options.sync_strategy(strategy);
            }
            let file = options.open(&path).unwrap();
            if forced.is_none() {
                assert_eq!(
                    file.sync_strategy(),
                    Some(SyncStrategy::ExplicitSync),
                    "chosen for FUSE"
                );
            }
            let syncs_before = mount.fsync_count();
            let acknowledged = overwrite_all(&file);
            let syncs = mount.fsync_count() - syncs_before;
            drop(file);
            let image = mount.power_cut();
            let lost = lost_blocks(&image, &acknowledged);
            let what = format!(
                "{} ({}), strategy {forced:?}: {lost} of {} acknowledged writes lost, {syncs} FUSE_FSYNC",
                driver.backend(),
                driver.backend_reason(),
                acknowledged.len()
            );
            eprintln!("{what}");
            (lost, what)
        }
    }
}
