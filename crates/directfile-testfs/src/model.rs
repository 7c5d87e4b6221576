//! The in-memory model: every file and directory has a durable state and a volatile state on
//! top of it, as a device with a volatile write cache would. Nothing here knows FUSE; the
//! arithmetic is tested inline.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The unit in which file contents are stored (absent blocks read as zeros).
pub(crate) const BLOCK_BYTES: u64 = 4096;

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT_INO: u64 = 1;

type Block = Box<[u8]>;

fn zero_block() -> Block {
    vec![0u8; BLOCK_BYTES as usize].into_boxed_slice()
}

/// Index of the first block that starts at or after `offset`: `ceil(offset / 4096)`.
fn first_block_at_or_after(offset: u64) -> u64 {
    offset.div_ceil(BLOCK_BYTES)
}

/// Contents and size of a file, with absent blocks reading as zeros. Bytes past `size` in the
/// last block are always zero.
#[derive(Clone, Debug, Default)]
pub(crate) struct Data {
    blocks: BTreeMap<u64, Block>,
    size: u64,
}

impl Data {
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The whole contents.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(self.size).expect("file fits in memory")];
        for (&index, block) in &self.blocks {
            let start = (index * BLOCK_BYTES) as usize;
            if start >= out.len() {
                break;
            }
            let end = (start + block.len()).min(out.len());
            out[start..end].copy_from_slice(&block[..end - start]);
        }
        out
    }

    /// Blocks holding data (not all zeros), for statfs.
    pub(crate) fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }
}

/// A regular file: durable contents, and the volatile view on top of them (dirty blocks, size
/// and truncations since the last sync).
#[derive(Debug)]
pub(crate) struct FileState {
    durable: Data,
    /// Blocks written since the last sync; they hide the durable block of the same index.
    dirty: BTreeMap<u64, Block>,
    /// The size a reader sees now.
    size: u64,
    /// Durable bytes at or past this offset are not part of the volatile view (a truncation
    /// since the last sync cut them off); `u64::MAX` when nothing was cut. Invariant: when this
    /// offset is inside a block, that block is dirty, so every clean block is wholly below it
    /// (read from the durable data) or wholly at or past it (reads as zeros).
    zero_from: u64,
}

impl FileState {
    pub(crate) fn new() -> FileState {
        FileState::from_durable(Data::default())
    }

    /// A file whose volatile view is `durable` (a file of a mounted image).
    pub(crate) fn from_durable(durable: Data) -> FileState {
        FileState {
            size: durable.size,
            durable,
            dirty: BTreeMap::new(),
            zero_from: u64::MAX,
        }
    }

    /// The size a reader sees now (volatile).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The durable contents: what a power cut would keep.
    pub(crate) fn durable(&self) -> &Data {
        &self.durable
    }

    /// Takes the durable contents out (the file is dead after a power cut).
    pub(crate) fn take_durable(&mut self) -> Data {
        std::mem::take(&mut self.durable)
    }

    /// Blocks of memory in use, for statfs.
    pub(crate) fn block_count(&self) -> u64 {
        self.durable.block_count() + self.dirty.len() as u64
    }

    /// The volatile view of block `index`; `None` reads as zeros.
    fn block(&self, index: u64) -> Option<&[u8]> {
        if let Some(block) = self.dirty.get(&index) {
            return Some(block);
        }
        if index * BLOCK_BYTES < self.zero_from {
            self.durable.blocks.get(&index).map(|b| &b[..])
        } else {
            None
        }
    }

    /// Block `index` made dirty (a copy of its current view), for writing.
    fn dirty_block(&mut self, index: u64) -> &mut Block {
        if !self.dirty.contains_key(&index) {
            let copy = match self.block(index) {
                Some(block) => Box::<[u8]>::from(block),
                None => zero_block(),
            };
            self.dirty.insert(index, copy);
        }
        self.dirty.get_mut(&index).expect("inserted above")
    }

    /// Up to `len` bytes at `offset`, as a reader sees them now (short at the end of file).
    pub(crate) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut position = offset;
        while position < end {
            let index = position / BLOCK_BYTES;
            let within = (position % BLOCK_BYTES) as usize;
            let chunk = ((BLOCK_BYTES - within as u64).min(end - position)) as usize;
            if let Some(block) = self.block(index) {
                let at = (position - offset) as usize;
                out[at..at + chunk].copy_from_slice(&block[within..within + chunk]);
            }
            position += chunk as u64;
        }
        out
    }

    /// Writes `data` at `offset` (volatile), growing the file if it ends past its size.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        let mut position = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = position / BLOCK_BYTES;
            let within = (position % BLOCK_BYTES) as usize;
            let chunk = (BLOCK_BYTES as usize - within).min(rest.len());
            self.dirty_block(index)[within..within + chunk].copy_from_slice(&rest[..chunk]);
            position += chunk as u64;
            rest = &rest[chunk..];
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the size (volatile): `ftruncate(2)`, or the growth of `fallocate(2)` mode 0. Bytes
    /// cut off read as zeros if the file grows again.
    pub(crate) fn set_size(&mut self, size: u64) {
        if size < self.size {
            // Dirty blocks wholly past the new end go; the block the end falls in keeps its
            // head and gets a zero tail, so that growing again shows zeros.
            let _cut = self.dirty.split_off(&first_block_at_or_after(size));
            let within = (size % BLOCK_BYTES) as usize;
            if within != 0 {
                self.dirty_block(size / BLOCK_BYTES)[within..].fill(0);
            }
            self.zero_from = self.zero_from.min(size);
        }
        self.size = size;
    }

    /// Zeroes `len` bytes at `offset` (`FALLOC_FL_PUNCH_HOLE`, `FALLOC_FL_ZERO_RANGE`),
    /// without changing the size; bytes past the end are zeros already.
    pub(crate) fn zero_range(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        let mut position = offset;
        while position < end {
            let index = position / BLOCK_BYTES;
            let within = (position % BLOCK_BYTES) as usize;
            let chunk = ((BLOCK_BYTES - within as u64).min(end - position)) as usize;
            // A block that reads as zeros already needs no dirty copy.
            if self.block(index).is_some() {
                self.dirty_block(index)[within..within + chunk].fill(0);
            }
            position += chunk as u64;
        }
    }

    /// Whether anything would be lost at a power cut.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.size != self.durable.size || self.zero_from != u64::MAX
    }

    /// `fsync(2)`: the volatile contents and size become the durable ones.
    pub(crate) fn sync(&mut self) {
        // Durable blocks the view no longer shows (cut off by a truncation) go; a block the
        // cut falls inside is dirty, and replaces its durable copy below.
        let _cut = self
            .durable
            .blocks
            .split_off(&first_block_at_or_after(self.zero_from));
        for (index, block) in std::mem::take(&mut self.dirty) {
            if block.iter().all(|&b| b == 0) {
                self.durable.blocks.remove(&index);
            } else {
                self.durable.blocks.insert(index, block);
            }
        }
        self.durable.size = self.size;
        self.zero_from = u64::MAX;
    }
}

/// A directory: durable entries, and the entries a reader sees now.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirState {
    durable: BTreeMap<OsString, u64>,
    entries: BTreeMap<OsString, u64>,
}

impl DirState {
    pub(crate) fn entries(&self) -> &BTreeMap<OsString, u64> {
        &self.entries
    }

    pub(crate) fn get(&self, name: &OsStr) -> Option<u64> {
        self.entries.get(name).copied()
    }

    /// `fsyncdir`: the entries a reader sees become the durable ones.
    pub(crate) fn sync(&mut self) {
        self.durable.clone_from(&self.entries);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.durable != self.entries
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    File(FileState),
    Dir(DirState),
}

/// An inode. Attributes other than size (mode, owner, times) are not part of the durability
/// model: a change applies at once and survives a power cut.
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) kind: Kind,
    /// Entries naming this inode (volatile): 0 for a file unlinked while open.
    pub(crate) links: u32,
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: std::time::SystemTime,
    pub(crate) ctime: std::time::SystemTime,
    pub(crate) atime: std::time::SystemTime,
}

impl Inode {
    pub(crate) fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = std::time::SystemTime::now();
        Inode {
            kind,
            links: 0,
            perm,
            uid,
            gid,
            mtime: now,
            ctime: now,
            atime: now,
        }
    }
}

/// The whole file system: inodes by number. Inodes unreachable from any entry stay until the
/// next power cut (an open file may still use them); a power cut keeps only those reachable
/// through durable entries.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) inodes: BTreeMap<u64, Inode>,
    pub(crate) next_ino: u64,
}

impl Tree {
    /// An empty file system: a root directory, mode 0755, owned by `uid`/`gid`.
    pub(crate) fn empty(uid: u32, gid: u32) -> Tree {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT_INO,
            Inode::new(Kind::Dir(DirState::default()), 0o755, uid, gid),
        );
        Tree {
            inodes,
            next_ino: ROOT_INO + 1,
        }
    }

    /// A new inode number.
    pub(crate) fn allocate_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    pub(crate) fn dir(&self, ino: u64) -> Option<&DirState> {
        match self.inodes.get(&ino).map(|i| &i.kind) {
            Some(Kind::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    pub(crate) fn dir_mut(&mut self, ino: u64) -> Option<&mut DirState> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.kind) {
            Some(Kind::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    pub(crate) fn file(&self, ino: u64) -> Option<&FileState> {
        match self.inodes.get(&ino).map(|i| &i.kind) {
            Some(Kind::File(file)) => Some(file),
            _ => None,
        }
    }

    pub(crate) fn file_mut(&mut self, ino: u64) -> Option<&mut FileState> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.kind) {
            Some(Kind::File(file)) => Some(file),
            _ => None,
        }
    }

    /// Adds the entry `name -> ino` to directory `parent` (volatile).
    pub(crate) fn link(&mut self, parent: u64, name: &OsStr, ino: u64) {
        let replaced = self
            .dir_mut(parent)
            .expect("parent is a directory")
            .entries
            .insert(name.to_os_string(), ino);
        debug_assert!(replaced.is_none(), "unlink the old entry first");
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.links += 1;
        }
    }

    /// Removes the entry `name` from directory `parent` (volatile); the entry's inode.
    pub(crate) fn unlink(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.dir_mut(parent)?.entries.remove(name)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.links = inode.links.saturating_sub(1);
        }
        Some(ino)
    }

    /// Whether anything would be lost at a power cut.
    pub(crate) fn is_dirty(&self) -> bool {
        self.inodes.values().any(|inode| match &inode.kind {
            Kind::File(file) => file.is_dirty(),
            Kind::Dir(dir) => dir.is_dirty(),
        })
    }

    /// What a power cut leaves: the durable state of every inode reachable from the root
    /// through durable entries, taken out of this tree (which is dead afterwards).
    pub(crate) fn take_durable(&mut self) -> Tree {
        let mut kept = BTreeMap::new();
        let mut links: BTreeMap<u64, u32> = BTreeMap::new();
        let mut pending = vec![ROOT_INO];
        while let Some(ino) = pending.pop() {
            if kept.contains_key(&ino) {
                continue;
            }
            let Some(inode) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let kind = match &mut inode.kind {
                Kind::File(file) => Kind::File(FileState::from_durable(file.take_durable())),
                Kind::Dir(dir) => {
                    for &child in dir.durable.values() {
                        *links.entry(child).or_default() += 1;
                        pending.push(child);
                    }
                    Kind::Dir(DirState {
                        durable: dir.durable.clone(),
                        entries: dir.durable.clone(),
                    })
                }
            };
            kept.insert(
                ino,
                Inode {
                    kind,
                    links: 0,
                    perm: inode.perm,
                    uid: inode.uid,
                    gid: inode.gid,
                    mtime: inode.mtime,
                    ctime: inode.ctime,
                    atime: inode.atime,
                },
            );
        }
        for (ino, count) in links {
            if let Some(inode) = kept.get_mut(&ino) {
                inode.links = count;
            }
        }
        Tree {
            inodes: kept,
            next_ino: self.next_ino,
        }
    }

    /// A copy of this (durable, as made by [`Tree::take_durable`]) tree, to mount.
    pub(crate) fn clone_durable(&self) -> Tree {
        let inodes = self
            .inodes
            .iter()
            .map(|(&ino, inode)| {
                let kind = match &inode.kind {
                    Kind::File(file) => Kind::File(FileState::from_durable(file.durable().clone())),
                    Kind::Dir(dir) => Kind::Dir(DirState {
                        durable: dir.durable.clone(),
                        entries: dir.durable.clone(),
                    }),
                };
                let copy = Inode {
                    kind,
                    links: inode.links,
                    perm: inode.perm,
                    uid: inode.uid,
                    gid: inode.gid,
                    mtime: inode.mtime,
                    ctime: inode.ctime,
                    atime: inode.atime,
                };
                (ino, copy)
            })
            .collect();
        Tree {
            inodes,
            next_ino: self.next_ino,
        }
    }

    /// The inode at `path` (relative to the root; `..` and `.` are not resolved), through the
    /// durable entries.
    pub(crate) fn durable_lookup(&self, path: &std::path::Path) -> Option<u64> {
        let mut ino = ROOT_INO;
        for component in path.components() {
            match component {
                std::path::Component::RootDir => continue,
                std::path::Component::Normal(name) => {
                    ino = *self.dir(ino)?.durable.get(name)?;
                }
                _ => return None,
            }
        }
        Some(ino)
    }

    /// The durable contents of the file at `path`.
    pub(crate) fn durable_file(&self, path: &std::path::Path) -> Option<Vec<u8>> {
        match &self.inodes.get(&self.durable_lookup(path)?)?.kind {
            Kind::File(file) => Some(file.durable().to_vec()),
            Kind::Dir(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn unsynced_writes_are_volatile_and_synced_ones_durable() {
        let mut file = FileState::new();
        let first = pattern(10_000, 1);
        file.write(0, &first);
        assert_eq!(file.read(0, 20_000), first);
        assert_eq!(file.durable().size(), 0, "nothing is durable before a sync");
        file.sync();
        assert_eq!(file.durable().to_vec(), first);
        assert!(!file.is_dirty());

        // An unaligned overwrite across a block boundary, then more past the end.
        let second = pattern(5_000, 7);
        file.write(3_000, &second);
        file.write(12_000, &[9; 100]);
        let mut expected = first.clone();
        expected[3_000..8_000].copy_from_slice(&second);
        expected.resize(12_000, 0);
        expected.extend_from_slice(&[9; 100]);
        assert_eq!(file.read(0, u64::MAX), expected);
        assert_eq!(file.durable().to_vec(), first, "the overwrite is volatile");
        file.sync();
        assert_eq!(file.durable().to_vec(), expected);
    }

    #[test]
    fn truncation_then_growth_reads_zeros_and_is_volatile_until_sync() {
        let mut file = FileState::new();
        let data = pattern(3 * BLOCK_BYTES as usize, 3);
        file.write(0, &data);
        file.sync();

        // Cut inside block 1 (4096 + 904 = 5000), then grow past the old end.
        file.set_size(5_000);
        file.set_size(20_000);
        let seen = file.read(0, u64::MAX);
        assert_eq!(seen.len(), 20_000);
        assert_eq!(&seen[..5_000], &data[..5_000]);
        assert!(
            seen[5_000..].iter().all(|&b| b == 0),
            "cut bytes read as zeros"
        );
        assert_eq!(file.durable().to_vec(), data, "the truncation is volatile");

        file.sync();
        assert_eq!(file.durable().to_vec(), seen);
        // Block 2 (all zeros now) is not kept.
        assert_eq!(file.durable().block_count(), 2);
    }

    #[test]
    fn truncation_at_block_boundaries_and_below_an_earlier_one() {
        let mut file = FileState::new();
        let data = pattern(4 * BLOCK_BYTES as usize, 5);
        file.write(0, &data);
        file.sync();
        file.set_size(2 * BLOCK_BYTES);
        file.set_size(3_000);
        file.set_size(4 * BLOCK_BYTES);
        let seen = file.read(0, u64::MAX);
        assert_eq!(&seen[..3_000], &data[..3_000]);
        assert!(seen[3_000..].iter().all(|&b| b == 0));
        file.sync();
        assert_eq!(file.durable().to_vec(), seen);
    }

    #[test]
    fn zero_range_keeps_size_and_is_volatile() {
        let mut file = FileState::new();
        let data = pattern(3 * BLOCK_BYTES as usize, 9);
        file.write(0, &data);
        file.sync();
        file.zero_range(1_000, 2 * BLOCK_BYTES);
        file.zero_range(50_000, 10);
        let seen = file.read(0, u64::MAX);
        assert_eq!(seen.len(), data.len());
        assert_eq!(&seen[..1_000], &data[..1_000]);
        assert!(seen[1_000..1_000 + 2 * BLOCK_BYTES as usize]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(file.durable().to_vec(), data);
    }

    #[test]
    fn directory_entries_are_volatile_until_fsyncdir_and_cut_keeps_reachable_inodes() {
        let mut tree = Tree::empty(0, 0);
        let synced = tree.allocate_ino();
        tree.inodes.insert(
            synced,
            Inode::new(Kind::File(FileState::new()), 0o644, 0, 0),
        );
        tree.link(ROOT_INO, OsStr::new("synced"), synced);
        tree.file_mut(synced).unwrap().write(0, b"kept");
        tree.file_mut(synced).unwrap().sync();
        tree.dir_mut(ROOT_INO).unwrap().sync();

        let unsynced = tree.allocate_ino();
        tree.inodes.insert(
            unsynced,
            Inode::new(Kind::File(FileState::new()), 0o644, 0, 0),
        );
        tree.link(ROOT_INO, OsStr::new("unsynced"), unsynced);
        tree.file_mut(unsynced).unwrap().write(0, b"lost");
        tree.file_mut(unsynced).unwrap().sync();
        assert!(tree.is_dirty());

        let image = tree.take_durable();
        assert!(!image.is_dirty());
        assert_eq!(
            image.durable_file(std::path::Path::new("synced")).unwrap(),
            b"kept"
        );
        assert_eq!(image.durable_file(std::path::Path::new("unsynced")), None);
        assert!(!image.inodes.contains_key(&unsynced));
        let again = image.clone_durable();
        assert_eq!(
            again.durable_file(std::path::Path::new("/synced")).unwrap(),
            b"kept"
        );
        assert_eq!(again.next_ino, unsynced + 1, "inode numbers are not reused");
    }
}
