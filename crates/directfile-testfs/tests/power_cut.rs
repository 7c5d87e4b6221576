//! The durability model through plain `std::fs` on the mount: what a power cut keeps and
//! what it loses, and that the mount goes away cleanly.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use directfile_testfs::{Image, Mount};

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// Whether `path` is a mount point of this process's namespace.
fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    // Field 5 is the mount point (spaces escaped as \040; our paths have none).
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path))
}

/// Test (1): written but not fsynced data is gone after a power cut; fsynced data is there.
#[test]
fn unsynced_writes_are_lost_and_synced_ones_kept() {
    let test = "unsynced_writes_are_lost_and_synced_ones_kept";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    let path = mount.path().join("file");
    let synced = common::pattern(10_000, 1);
    let mut file = File::create(&path).unwrap();
    file.write_all(&synced).unwrap();
    file.sync_all().unwrap();
    sync_dir(mount.path());
    // Then an overwrite inside, and an append: written, read back, closed, never synced.
    file.write_all_at(&[0xee; 3_000], 2_000).unwrap();
    file.write_all_at(&[0xdd; 5_000], 10_000).unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 15_000);
    assert_eq!(std::fs::read(&path).unwrap()[2_000], 0xee);
    let requests = mount.requests();
    assert_eq!(requests.fsync_count, 1);
    assert_eq!(requests.fsyncdir_count, 1);
    assert!(
        requests.flush_count >= 1,
        "close(2) sends FUSE_FLUSH, which keeps nothing"
    );
    assert!(mount.has_unsynced_changes());

    let image = mount.power_cut();
    assert_eq!(image.read_file("file").unwrap(), synced);
    let mount = image.mount(&dir).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        synced,
        "the synced 10,000 bytes, nothing else"
    );
    assert!(!mount.has_unsynced_changes());
}

/// Test (2): a created file whose directory was not fsynced is gone; one whose directory was
/// fsynced is there. Both files' own contents were fsynced.
#[test]
fn created_file_needs_directory_sync() {
    let test = "created_file_needs_directory_sync";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    std::fs::create_dir(mount.path().join("synced_dir")).unwrap();
    std::fs::create_dir(mount.path().join("unsynced_dir")).unwrap();
    sync_dir(mount.path());
    for name in ["synced_dir/a", "unsynced_dir/b"] {
        let mut file = File::create(mount.path().join(name)).unwrap();
        file.write_all(name.as_bytes()).unwrap();
        file.sync_all().unwrap();
    }
    sync_dir(&mount.path().join("synced_dir"));
    let requests = mount.requests();
    assert_eq!((requests.fsync_count, requests.fsyncdir_count), (2, 2));

    let image = mount.power_cut();
    let mount = image.mount(&dir).unwrap();
    assert_eq!(
        std::fs::read(mount.path().join("synced_dir/a")).unwrap(),
        b"synced_dir/a"
    );
    assert!(!mount.path().join("unsynced_dir/b").exists());
    assert_eq!(
        std::fs::read_dir(mount.path().join("unsynced_dir"))
            .unwrap()
            .count(),
        0
    );
}

/// Unlink and rename are volatile until the directory is synced, like create.
#[test]
fn unlink_and_rename_need_directory_sync() {
    let test = "unlink_and_rename_need_directory_sync";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    for name in ["kept", "unlinked", "renamed"] {
        std::fs::write(mount.path().join(name), name).unwrap();
        File::open(mount.path().join(name))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    sync_dir(mount.path());
    std::fs::remove_file(mount.path().join("unlinked")).unwrap();
    std::fs::rename(mount.path().join("renamed"), mount.path().join("new_name")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "new_name"]);

    let image = mount.power_cut();
    let mount = image.mount(&dir).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["kept", "renamed", "unlinked"],
        "the last synced entries"
    );
    assert_eq!(
        std::fs::read(mount.path().join("renamed")).unwrap(),
        b"renamed"
    );

    // Now synced: the rename and unlink stick.
    std::fs::remove_file(mount.path().join("unlinked")).unwrap();
    std::fs::rename(mount.path().join("renamed"), mount.path().join("new_name")).unwrap();
    sync_dir(mount.path());
    let image = mount.power_cut();
    assert_eq!(image.read_file("unlinked"), None);
    assert_eq!(image.read_file("renamed"), None);
    assert_eq!(image.read_file("new_name").unwrap(), b"renamed");
}

/// `ftruncate(2)` and `fallocate(2)` change the size only until the power cut, unless synced.
#[test]
fn truncate_and_fallocate_need_file_sync() {
    let test = "truncate_and_fallocate_need_file_sync";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    let data = common::pattern(8_192, 3);
    for name in ["truncated", "allocated", "allocated_synced"] {
        std::fs::write(mount.path().join(name), &data).unwrap();
        File::open(mount.path().join(name))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    sync_dir(mount.path());

    let open = |name: &str| {
        OpenOptions::new()
            .write(true)
            .open(mount.path().join(name))
            .unwrap()
    };
    open("truncated").set_len(100).unwrap();
    assert_eq!(
        std::fs::metadata(mount.path().join("truncated"))
            .unwrap()
            .len(),
        100
    );
    rustix::fs::fallocate(
        open("allocated"),
        rustix::fs::FallocateFlags::empty(),
        0,
        1 << 20,
    )
    .unwrap();
    let synced = open("allocated_synced");
    rustix::fs::fallocate(&synced, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap();
    synced.sync_all().unwrap();
    // KEEP_SIZE: nothing changes (allocation is not modelled).
    rustix::fs::fallocate(
        open("truncated"),
        rustix::fs::FallocateFlags::KEEP_SIZE,
        0,
        1 << 20,
    )
    .unwrap();
    let requests = mount.requests();
    assert_eq!(requests.truncate_count, 1);
    assert_eq!(requests.fallocate_count, 3);
    assert_eq!(
        std::fs::metadata(mount.path().join("allocated"))
            .unwrap()
            .len(),
        1 << 20
    );

    let image = mount.power_cut();
    assert_eq!(image.read_file("truncated").unwrap(), data);
    assert_eq!(image.read_file("allocated").unwrap(), data);
    let mut grown = data.clone();
    grown.resize(1 << 20, 0);
    assert_eq!(image.read_file("allocated_synced").unwrap(), grown);
}

/// After the power cut, a process that still holds a file open gets errors and can make
/// nothing more durable; the mount is gone from the mount table at once.
#[test]
fn open_files_fail_after_power_cut() {
    let test = "open_files_fail_after_power_cut";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    let path = mount.path().to_path_buf();
    let mut file = File::create(path.join("held")).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_all().unwrap();
    sync_dir(&path);
    let image = mount.power_cut();
    assert!(!is_mounted(&path));
    // The connection is aborted: the kernel fails the requests itself (ENOTCONN).
    let write_error = file.write_all_at(b"after", 0).unwrap_err();
    let sync_error = file.sync_all().unwrap_err();
    eprintln!("{test}: write after the cut: {write_error}; fsync: {sync_error}");
    assert_eq!(write_error.raw_os_error(), Some(libc::ENOTCONN));
    assert_eq!(sync_error.raw_os_error(), Some(libc::ENOTCONN));
    drop(file);
    assert_eq!(image.read_file("held").unwrap(), b"synced");
    let mount = image.mount(&dir).unwrap();
    assert_eq!(std::fs::read(mount.path().join("held")).unwrap(), b"synced");
}

/// Dropping a mount (also while a test panics) unmounts it; an image mounts again and again.
#[test]
fn drop_unmounts_even_on_panic_and_images_remount() {
    let test = "drop_unmounts_even_on_panic_and_images_remount";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let path = dir.as_ref().canonicalize().unwrap();
    let panicked = std::panic::catch_unwind(|| {
        let mount = Mount::new(&dir).unwrap();
        std::fs::write(mount.path().join("x"), b"x").unwrap();
        assert!(is_mounted(mount.path()));
        panic!("a test failing with the file system mounted");
    });
    assert!(panicked.is_err());
    assert!(!is_mounted(&path), "the panic unmounted it");

    let mut image = Image::empty();
    for round in 0..3u8 {
        let mount = image.mount(&dir).unwrap();
        assert!(is_mounted(mount.path()));
        let name = format!("round{round}");
        std::fs::write(mount.path().join(&name), [round]).unwrap();
        File::open(mount.path().join(&name))
            .unwrap()
            .sync_all()
            .unwrap();
        sync_dir(mount.path());
        image = mount.power_cut();
        assert!(!is_mounted(&path));
    }
    for round in 0..3u8 {
        assert_eq!(image.read_file(format!("round{round}")).unwrap(), [round]);
    }
}

/// `flock(2)` is the kernel's (the file system claims no lock capability): a second
/// exclusive lock on the same file is refused, as the journal's `LOCK` file needs.
#[test]
fn flock_is_handled_by_the_kernel() {
    let test = "flock_is_handled_by_the_kernel";
    if common::skip(test) {
        return;
    }
    let dir = common::mount_point(test);
    let mount = Mount::new(&dir).unwrap();
    let path = mount.path().join("LOCK");
    let first = File::create(&path).unwrap();
    let second = File::open(&path).unwrap();
    rustix::fs::flock(&first, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    assert_eq!(
        rustix::fs::flock(
            &second,
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        ),
        Err(rustix::io::Errno::WOULDBLOCK)
    );
    drop(first);
    rustix::fs::flock(
        &second,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
}
