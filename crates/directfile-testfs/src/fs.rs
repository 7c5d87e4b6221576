//! The FUSE requests, served on the model ([`crate::model`]) by `fuser`.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::model::{DirState, FileState, Inode, Kind, Tree, BLOCK_BYTES, ROOT_INO};
use crate::{Options, Requests};

/// Attributes and entries are valid for no time: the kernel asks again every time, so what it
/// shows is always the model's volatile state.
const TTL: Duration = Duration::ZERO;

/// Capacity reported by statfs (16 GiB in 4 KiB blocks); the model stores only what is
/// written, in memory.
const STATFS_BLOCKS: u64 = 4 << 20;

// fallocate(2) modes (linux/falloc.h).
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// What the session thread and the [`crate::Mount`] share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) tree: Tree,
    /// False once the power is cut: every request fails with EIO from then on.
    pub(crate) powered: bool,
    pub(crate) requests: Requests,
    /// The kernel's FUSE protocol version (from FUSE_INIT), and whether it granted
    /// asynchronous direct I/O.
    pub(crate) kernel_version: Option<(u32, u32)>,
    pub(crate) async_direct_io: bool,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic elsewhere while holding the lock leaves the model consistent (every mutation is
    // completed before the guard drops or none started), so carry on rather than wedge the
    // kernel with a request that is never answered.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file system `fuser` serves.
pub(crate) struct TestFs {
    pub(crate) shared: Shared,
    pub(crate) options: Options,
}

fn file_type(inode: &Inode) -> FileType {
    match inode.kind {
        Kind::File(_) => FileType::RegularFile,
        Kind::Dir(_) => FileType::Directory,
    }
}

fn attr(tree: &Tree, ino: u64) -> Option<FileAttr> {
    let inode = tree.inodes.get(&ino)?;
    let (size, blocks, nlink) = match &inode.kind {
        Kind::File(file) => (
            file.size(),
            file.size().div_ceil(512),
            inode_links(tree, ino),
        ),
        Kind::Dir(dir) => {
            let subdirs = dir
                .entries()
                .values()
                .filter(|child| matches!(tree.inodes.get(child), Some(i) if matches!(i.kind, Kind::Dir(_))))
                .count();
            (BLOCK_BYTES, BLOCK_BYTES / 512, 2 + subdirs as u32)
        }
    };
    Some(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks,
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind: file_type(inode),
        perm: inode.perm,
        nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: BLOCK_BYTES as u32,
        flags: 0,
    })
}

/// Entries naming regular file `ino` (0 once unlinked while open).
fn inode_links(tree: &Tree, ino: u64) -> u32 {
    tree.inodes.get(&ino).map_or(0, |inode| inode.links)
}

impl TestFs {
    /// The state, or EIO after the power cut.
    fn powered(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = lock(&self.shared);
        if state.powered {
            Ok(state)
        } else {
            Err(Errno::EIO)
        }
    }

    /// A new inode named `name` in `parent`, for create, mknod and mkdir.
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        let mut state = self.powered()?;
        let tree = &mut state.tree;
        let dir = tree.dir(parent.0).ok_or(Errno::ENOTDIR)?;
        if dir.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = tree.allocate_ino();
        let perm = (mode & !umask & 0o7777) as u16;
        tree.inodes
            .insert(ino, Inode::new(kind, perm, req.uid(), req.gid()));
        tree.link(parent.0, name, ino);
        touch_dir(tree, parent.0);
        Ok(attr(tree, ino).expect("inserted above"))
    }
}

/// A directory's mtime and ctime after a change of its entries.
fn touch_dir(tree: &mut Tree, ino: u64) {
    if let Some(inode) = tree.inodes.get_mut(&ino) {
        let now = SystemTime::now();
        inode.mtime = now;
        inode.ctime = now;
    }
}

fn reply_entry(result: Result<FileAttr, Errno>, reply: ReplyEntry) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(errno) => reply.error(errno),
    }
}

fn reply_empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn reply_attr(result: Result<FileAttr, Errno>, reply: ReplyAttr) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(errno) => reply.error(errno),
    }
}

impl fuser::Filesystem for TestFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let version = config.kernel_abi();
        let mut state = lock(&self.shared);
        state.kernel_version = Some((version.0, version.1));
        if self.options.async_direct_io {
            // What libfuse asks for by default, so the kernel treats this file system as it
            // treats an ordinary one: an asynchronous direct write is queued, not waited for.
            config
                .add_capabilities(InitFlags::FUSE_ASYNC_DIO)
                .map_err(|missing| {
                    std::io::Error::other(format!(
                        "the kernel does not offer FUSE_ASYNC_DIO (missing {missing:?})"
                    ))
                })?;
            state.async_direct_io = true;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.powered().and_then(|state| {
            let dir = state.tree.dir(parent.0).ok_or(Errno::ENOTDIR)?;
            let ino = dir.get(name).ok_or(Errno::ENOENT)?;
            attr(&state.tree, ino).ok_or(Errno::ENOENT)
        });
        reply_entry(result, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self
            .powered()
            .and_then(|state| attr(&state.tree, ino.0).ok_or(Errno::ENOENT));
        reply_attr(result, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.powered().and_then(|mut state| {
            let state = &mut *state;
            if !state.tree.inodes.contains_key(&ino.0) {
                return Err(Errno::ENOENT);
            }
            if let Some(size) = size {
                let file = state.tree.file_mut(ino.0).ok_or(Errno::EISDIR)?;
                file.set_size(size);
                state.requests.truncate_count += 1;
            }
            let now = SystemTime::now();
            let inode = state.tree.inodes.get_mut(&ino.0).expect("checked above");
            if let Some(mode) = mode {
                inode.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                inode.uid = uid;
            }
            if let Some(gid) = gid {
                inode.gid = gid;
            }
            let resolve = |time: TimeOrNow| match time {
                TimeOrNow::SpecificTime(time) => time,
                TimeOrNow::Now => now,
            };
            if let Some(atime) = atime {
                inode.atime = resolve(atime);
            }
            if let Some(mtime) = mtime {
                inode.mtime = resolve(mtime);
            } else if size.is_some() {
                inode.mtime = now;
            }
            inode.ctime = now;
            Ok(attr(&state.tree, ino.0).expect("checked above"))
        });
        reply_attr(result, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: mknod(2) says EPERM for a node type the file system cannot hold.
        const S_IFMT: u32 = 0o170000;
        const S_IFREG: u32 = 0o100000;
        let result = if mode & S_IFMT != S_IFREG {
            Err(Errno::EPERM)
        } else {
            self.make_node(req, parent, name, Kind::File(FileState::new()), mode, umask)
        };
        reply_entry(result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make_node(
            req,
            parent,
            name,
            Kind::Dir(DirState::default()),
            mode,
            umask,
        );
        reply_entry(result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered().and_then(|mut state| {
            let tree = &mut state.tree;
            let ino = tree
                .dir(parent.0)
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .ok_or(Errno::ENOENT)?;
            if tree.dir(ino).is_some() {
                return Err(Errno::EISDIR);
            }
            tree.unlink(parent.0, name);
            touch_dir(tree, parent.0);
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered().and_then(|mut state| {
            let tree = &mut state.tree;
            let ino = tree
                .dir(parent.0)
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let dir = tree.dir(ino).ok_or(Errno::ENOTDIR)?;
            if !dir.entries().is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            tree.unlink(parent.0, name);
            touch_dir(tree, parent.0);
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().and_then(|mut state| {
            if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
                return Err(Errno::EINVAL);
            }
            let tree = &mut state.tree;
            let ino = tree
                .dir(parent.0)
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let target = tree.dir(newparent.0).ok_or(Errno::ENOTDIR)?.get(newname);
            if let Some(target) = target {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if target == ino {
                    return Ok(());
                }
                match (tree.dir(ino).is_some(), tree.dir(target)) {
                    (true, None) => return Err(Errno::ENOTDIR),
                    (false, Some(_)) => return Err(Errno::EISDIR),
                    (true, Some(dir)) if !dir.entries().is_empty() => return Err(Errno::ENOTEMPTY),
                    _ => {}
                }
                tree.unlink(newparent.0, newname);
            }
            tree.unlink(parent.0, name);
            tree.link(newparent.0, newname, ino);
            touch_dir(tree, parent.0);
            touch_dir(tree, newparent.0);
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result =
            self.powered().and_then(
                |state| match state.tree.inodes.get(&ino.0).map(|i| &i.kind) {
                    Some(Kind::File(_)) => Ok(()),
                    Some(Kind::Dir(_)) => Err(Errno::EISDIR),
                    None => Err(Errno::ENOENT),
                },
            );
        match result {
            // No FOPEN_DIRECT_IO (nor any other flag): the kernel treats the file as it treats
            // one of any ordinary FUSE file system, and an O_DIRECT open takes its direct-I/O
            // path through the page-cache code (`fuse_direct_IO`).
            Ok(()) if self.options.direct_io_open => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.powered().and_then(|state| {
            let file = state.tree.file(ino.0).ok_or(Errno::EISDIR)?;
            Ok(file.read(offset, u64::from(size)))
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let durable_dsync_writes = self.options.durable_dsync_writes;
        let result = self.powered().and_then(|mut state| {
            let state = &mut *state;
            let file = state.tree.file_mut(ino.0).ok_or(Errno::EISDIR)?;
            let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
            if end > i64::MAX as u64 {
                return Err(Errno::EFBIG);
            }
            file.write(offset, data);
            // The kernel puts O_DSYNC in FUSE_WRITE's flags for a write-through write (the
            // open flag, or RWF_DSYNC); O_SYNC includes the O_DSYNC bit.
            let dsync = flags.0 & rustix::fs::OFlags::DSYNC.bits() as i32 != 0;
            if dsync && durable_dsync_writes {
                file.sync();
            }
            state.requests.write_count += 1;
            state.requests.write_bytes += data.len() as u64;
            if dsync {
                state.requests.write_dsync_count += 1;
            }
            if let Some(inode) = state.tree.inodes.get_mut(&ino.0) {
                let now = SystemTime::now();
                inode.mtime = now;
                inode.ctime = now;
            }
            Ok(data.len() as u32)
        });
        match result {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        let result = self.powered().map(|mut state| {
            state.requests.flush_count += 1;
        });
        reply_empty(result, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.powered().map(drop), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().and_then(|mut state| {
            let state = &mut *state;
            match state.tree.inodes.get_mut(&ino.0).map(|i| &mut i.kind) {
                // fdatasync and fsync alike: the model's metadata is the size, which
                // fdatasync must make durable too when it changed.
                Some(Kind::File(file)) => file.sync(),
                Some(Kind::Dir(dir)) => dir.sync(),
                None => return Err(Errno::ENOENT),
            }
            state.requests.fsync_count += 1;
            if datasync {
                state.requests.fdatasync_count += 1;
            }
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self
            .powered()
            .and_then(|state| state.tree.dir(ino.0).map(drop).ok_or(Errno::ENOTDIR));
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.powered().and_then(|state| {
            let tree = &state.tree;
            let dir = tree.dir(ino.0).ok_or(Errno::ENOTDIR)?;
            // "." and ".." first (the parent is not tracked: readers take ".." from the
            // kernel's dentry, not from this inode number), then the entries in name order.
            let mut all = vec![
                (ino.0, FileType::Directory, OsStr::new(".")),
                (ino.0, FileType::Directory, OsStr::new("..")),
            ];
            for (name, &child) in dir.entries() {
                let kind = tree
                    .inodes
                    .get(&child)
                    .map_or(FileType::RegularFile, file_type);
                all.push((child, kind, name.as_os_str()));
            }
            // An entry's offset is the position of the next one, so `offset` says where to
            // resume.
            for (index, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                    break;
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.powered().map(drop), reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().and_then(|mut state| {
            let state = &mut *state;
            state.tree.dir_mut(ino.0).ok_or(Errno::ENOTDIR)?.sync();
            state.requests.fsyncdir_count += 1;
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = self.powered().map(|state| {
            let used: u64 = state
                .tree
                .inodes
                .values()
                .map(|inode| match &inode.kind {
                    Kind::File(file) => file.block_count(),
                    Kind::Dir(_) => 1,
                })
                .sum();
            (used, state.tree.inodes.len() as u64)
        });
        match result {
            Ok((used, files)) => {
                let free = STATFS_BLOCKS.saturating_sub(used);
                let bsize = BLOCK_BYTES as u32;
                reply.statfs(
                    STATFS_BLOCKS,
                    free,
                    free,
                    files + 1_000_000,
                    1_000_000,
                    bsize,
                    255,
                    bsize,
                );
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are not checked (the tests run as the mounting user).
        let result = self
            .powered()
            .and_then(|state| state.tree.inodes.get(&ino.0).map(drop).ok_or(Errno::ENOENT));
        reply_empty(result, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make_node(req, parent, name, Kind::File(FileState::new()), mode, umask) {
            // No open flags, as in `open`.
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().and_then(|mut state| {
            let state = &mut *state;
            let file = state.tree.file_mut(ino.0).ok_or(Errno::EISDIR)?;
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
            match mode & !FALLOC_FL_KEEP_SIZE {
                // Allocation is not modelled; what changes is the size, volatile until fsync.
                0 => {}
                FALLOC_FL_PUNCH_HOLE if keep_size => file.zero_range(offset, length),
                FALLOC_FL_ZERO_RANGE => file.zero_range(offset, length),
                _ => return Err(Errno::EOPNOTSUPP),
            }
            if !keep_size && end > file.size() {
                file.set_size(end);
            }
            state.requests.fallocate_count += 1;
            Ok(())
        });
        reply_empty(result, reply);
    }
}

/// The root directory's attributes (for the mount's root mode).
pub(crate) fn root_perm(tree: &Tree) -> u16 {
    tree.inodes.get(&ROOT_INO).map_or(0o755, |inode| inode.perm)
}
