//! "Acknowledged" means durable on every file system, proven on one that keeps only what was
//! synced and loses the rest at a power cut (`directfile-testfs`, a FUSE file system).
//!
//! On FUSE an io_uring `O_DIRECT | O_DSYNC` write over existing blocks completes without the
//! kernel ever sending `FUSE_FSYNC`. With the sync strategy forced to `Dsync` (the flag alone,
//! right on ext4/xfs/btrfs) acknowledged writes are lost at the power cut; with the strategy
//! chosen for FUSE (`ExplicitSync`: a linked write + fsync) none is, and on the thread pool
//! none is either way.

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
            let path = laid_out_file(&mount);
            let mut options = OpenOptions::new();
            options
                .read(true)
                .write(true)
                .write_through(true)
                .driver(&driver);
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
            let lost = lost_blocks(&mount.power_cut(), &acknowledged);
            let what = format!(
                "{} ({}), strategy {forced:?}: {lost} of {} acknowledged writes lost, {syncs} FUSE_FSYNC",
                driver.backend(),
                driver.backend_reason(),
                acknowledged.len()
            );
            eprintln!("{what}");
            match (driver.backend(), forced) {
                // The loss the issue found: the flag alone, on the asynchronous path.
                (Backend::Uring, Some(SyncStrategy::Dsync)) => {
                    assert!(lost > 0, "{what}: expected losses");
                    assert_eq!(syncs, 0, "{what}");
                }
                // The explicit sync: one FUSE_FSYNC per write at least, nothing lost.
                (Backend::Uring, _) => {
                    assert_eq!(lost, 0, "{what}");
                    assert!(syncs >= BLOCKS as u64, "{what}");
                }
                // The thread pool's synchronous writes: the kernel syncs each one.
                (_, _) => assert_eq!(lost, 0, "{what}"),
            }
            std::fs::remove_dir(&dir).unwrap();
        }
    }
}
