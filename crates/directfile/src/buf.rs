//! Owned, aligned buffers ([`AlignedBuf`]) and a fixed pool of them ([`BufPool`]).
//!
//! A buffer is handed to an operation by value and handed back in the operation's result, so
//! the kernel can never write into memory the program has freed: while an operation is in
//! flight the driver's slot owns the buffer, also after the future is dropped.
#![allow(unsafe_code)]

use crate::wait::WaitQueue;
use std::alloc::{self, Layout};
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// An owned buffer whose address is aligned for direct I/O.
///
/// All `capacity()` bytes are always initialised (zeroed when the buffer is made), so
/// [`set_len`](AlignedBuf::set_len) is safe. The buffer derefs to its first `len()` bytes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    align: usize,
    /// Set when the memory belongs to a [`BufPool`]; dropping the buffer returns it there.
    pooled: Option<Pooled>,
}

struct Pooled {
    pool: Arc<PoolInner>,
    index: u32,
}

// SAFETY: AlignedBuf owns its memory exclusively (like Vec<u8>); a pooled buffer's region is
// handed out to one AlignedBuf at a time by the pool's free list.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give `&[u8]` access.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `capacity` bytes aligned to `align` (a power of two), with length 0.
    ///
    /// # Panics
    /// If `align` is not a power of two, or `capacity` is 0 or overflows `isize`.
    pub fn new(capacity: usize, align: usize) -> AlignedBuf {
        assert!(capacity > 0, "AlignedBuf capacity must be > 0");
        let layout = Layout::from_size_align(capacity, align).expect("invalid buffer layout");
        // SAFETY: the layout has a non-zero size (asserted above).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
            align,
            pooled: None,
        }
    }

    /// A buffer holding a copy of `data`, with capacity rounded up to a multiple of `align`.
    pub fn from_slice(data: &[u8], align: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::new(data.len().max(1).div_ceil(align) * align, align);
        buf.extend_from_slice(data);
        buf
    }

    /// Number of valid bytes (what a write writes, what a read reads).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the memory in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The alignment of the buffer's address.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Sets the length. The bytes up to `len` keep whatever they held (zero if never written).
    ///
    /// # Panics
    /// If `len > capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "len {len} exceeds capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// Sets the length to 0.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the buffer to `len` if it is longer.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends `data`.
    ///
    /// # Panics
    /// If the result would exceed the capacity.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        assert!(
            end <= self.capacity,
            "extend to {end} exceeds capacity {}",
            self.capacity
        );
        let start = self.len;
        self.as_full_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// The whole capacity, regardless of `len()`.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `capacity` initialised bytes owned by `self`, and `&mut self`
        // guarantees exclusive access for the returned lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// The address handed to the kernel.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `(registration index base, index in pool)` when this buffer comes from a pool that is
    /// registered with the driver `driver_id` (for the fixed-buffer opcodes).
    pub(crate) fn fixed_index(&self, driver_id: u64) -> Option<u16> {
        let pooled = self.pooled.as_ref()?;
        let reg = pooled.pool.fixed.get()?;
        (reg.driver_id == driver_id).then(|| (reg.first_index + pooled.index) as u16)
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `capacity >= len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_full_mut()[..len]
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("align", &self.align)
            .field("pooled", &self.pooled.is_some())
            .finish()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match self.pooled.take() {
            Some(Pooled { pool, index }) => pool.put(index),
            None => {
                let layout = Layout::from_size_align(self.capacity, self.align)
                    .expect("layout was valid at allocation");
                // SAFETY: `ptr` was allocated in `new` with exactly this layout and is owned
                // only by this buffer.
                unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
            }
        }
    }
}

/// Where a pool's buffers sit in a driver's registered-buffer table.
pub(crate) struct FixedRegistration {
    pub(crate) driver_id: u64,
    pub(crate) first_index: u32,
    /// Removes the registration when the pool goes away.
    pub(crate) unregister: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

struct PoolInner {
    base: NonNull<u8>,
    layout: Layout,
    buf_size: usize,
    align: usize,
    count: usize,
    state: Mutex<PoolState>,
    fixed: std::sync::OnceLock<FixedRegistration>,
}

struct PoolState {
    free: Vec<u32>,
    waiters: WaitQueue,
}

// SAFETY: the region behind `base` is only reached through AlignedBufs, each owning a disjoint
// piece handed out under the `state` mutex.
unsafe impl Send for PoolInner {}
// SAFETY: as above; all shared mutable state is behind `state`.
unsafe impl Sync for PoolInner {}

impl PoolInner {
    fn put(&self, index: u32) {
        let waiter = {
            let mut state = self.state.lock().unwrap();
            state.free.push(index);
            state.waiters.pop()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn take(self: &Arc<Self>) -> Option<AlignedBuf> {
        let index = self.state.lock().unwrap().free.pop()?;
        Some(self.buf_at(index))
    }

    /// The buffer `index`, just taken off the free list.
    fn buf_at(self: &Arc<Self>, index: u32) -> AlignedBuf {
        // SAFETY: index < count, so the offset stays inside the region of count * buf_size
        // bytes allocated in `BufPool::new`.
        let ptr = unsafe { self.base.as_ptr().add(index as usize * self.buf_size) };
        AlignedBuf {
            // SAFETY: derived from a non-null base by an in-bounds offset.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len: 0,
            capacity: self.buf_size,
            align: self.align,
            pooled: Some(Pooled {
                pool: Arc::clone(self),
                index,
            }),
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if let Some(reg) = self.fixed.take() {
            if let Some(unregister) = reg.unregister.lock().unwrap().take() {
                unregister();
            }
        }
        // SAFETY: allocated in `BufPool::new` with this layout; every AlignedBuf of the pool
        // holds an Arc to us, so none is alive any more.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// A fixed set of equally sized aligned buffers, made once.
///
/// With the io_uring driver the pool's memory is registered with the ring, and operations on
/// its buffers use `IORING_OP_WRITE_FIXED` / `IORING_OP_READ_FIXED` (no page pinning per
/// operation). A buffer returns to the pool when dropped.
#[derive(Clone)]
pub struct BufPool {
    inner: Arc<PoolInner>,
}

impl BufPool {
    /// Makes `count` zeroed buffers of `buf_size` bytes aligned to `align`, without registering
    /// them with any driver (see [`Driver::register_pool`](crate::Driver) for that).
    ///
    /// # Panics
    /// If `count` or `buf_size` is 0, `align` is not a power of two, or `buf_size` is not a
    /// multiple of `align`.
    pub fn unregistered(count: usize, buf_size: usize, align: usize) -> BufPool {
        assert!(
            count > 0 && buf_size > 0,
            "a pool needs count > 0 and buf_size > 0"
        );
        assert!(count <= u32::MAX as usize);
        assert!(
            buf_size % align == 0,
            "buf_size {buf_size} is not a multiple of align {align}"
        );
        let layout = Layout::from_size_align(count * buf_size, align).expect("pool layout");
        // SAFETY: non-zero size (asserted above).
        let base = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let free = (0..count as u32).rev().collect();
        BufPool {
            inner: Arc::new(PoolInner {
                base,
                layout,
                buf_size,
                align,
                count,
                state: Mutex::new(PoolState {
                    free,
                    waiters: WaitQueue::with_capacity(16),
                }),
                fixed: std::sync::OnceLock::new(),
            }),
        }
    }

    /// A buffer if one is free now.
    pub fn try_get(&self) -> Option<AlignedBuf> {
        self.inner.take()
    }

    /// A buffer, waiting for one to be returned if all are in use.
    pub fn get(&self) -> GetBuf<'_> {
        GetBuf {
            pool: self,
            ticket: None,
        }
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Number of buffers free right now.
    pub fn available(&self) -> usize {
        self.inner.state.lock().unwrap().free.len()
    }

    /// Whether the pool is registered with a driver for fixed-buffer operations.
    pub fn is_registered(&self) -> bool {
        self.inner.fixed.get().is_some()
    }

    /// The `(address, length)` of the pool's memory region, for registration.
    #[cfg(target_os = "linux")]
    pub(crate) fn region(&self) -> (*mut u8, usize) {
        (self.inner.base.as_ptr(), self.inner.layout.size())
    }

    #[cfg(target_os = "linux")]
    pub(crate) fn set_registration(&self, reg: FixedRegistration) {
        let _ = self.inner.fixed.set(reg);
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("count", &self.inner.count)
            .field("buf_size", &self.inner.buf_size)
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// Future of [`BufPool::get`].
pub struct GetBuf<'a> {
    pool: &'a BufPool,
    /// Our place in the pool's queue of waiting tasks, once we had to wait.
    ticket: Option<u64>,
}

impl Future for GetBuf<'_> {
    type Output = AlignedBuf;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AlignedBuf> {
        let inner = &self.pool.inner;
        let mut state = inner.state.lock().unwrap();
        if let Some(index) = state.free.pop() {
            if let Some(t) = self.ticket.take() {
                state.waiters.remove(t);
            }
            drop(state);
            return Poll::Ready(self.pool.inner.buf_at(index));
        }
        let this = &mut *self;
        state.waiters.register(&mut this.ticket, cx.waker());
        Poll::Pending
    }
}

impl Drop for GetBuf<'_> {
    fn drop(&mut self) {
        // If our entry was already popped, we consumed a wake-up meant for a returned buffer:
        // pass it on so no other waiter is stranded.
        if let Some(t) = self.ticket {
            let waiter = {
                let mut state = self.pool.inner.state.lock().unwrap();
                if state.waiters.remove(t) || state.free.is_empty() {
                    return;
                }
                state.waiters.pop()
            };
            if let Some(w) = waiter {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::task::Waker;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::new(8192, 4096);
        assert_eq!(b.as_mut_ptr() as usize % 4096, 0);
        assert!(b.as_full_mut().iter().all(|&x| x == 0));
        b.extend_from_slice(b"hello");
        assert_eq!(&b[..], b"hello");
        b.set_len(8192);
        assert_eq!(b.len(), 8192);
        b.truncate(3);
        assert_eq!(&b[..], b"hel");
    }

    #[test]
    #[should_panic(expected = "exceeds capacity")]
    fn extend_past_capacity_panics() {
        let mut b = AlignedBuf::new(512, 512);
        b.extend_from_slice(&[1u8; 513]);
    }

    #[test]
    fn pool_hands_out_distinct_aligned_buffers_and_takes_them_back() {
        let pool = BufPool::unregistered(3, 4096, 4096);
        let mut a = pool.try_get().unwrap();
        let mut b = pool.try_get().unwrap();
        let mut c = pool.try_get().unwrap();
        assert!(pool.try_get().is_none());
        let addrs = [
            a.as_mut_ptr() as usize,
            b.as_mut_ptr() as usize,
            c.as_mut_ptr() as usize,
        ];
        assert!(addrs.iter().all(|p| p % 4096 == 0));
        assert!(addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2]);
        a.extend_from_slice(b"x");
        drop(a);
        assert_eq!(pool.available(), 1);
        let back = pool.try_get().unwrap();
        assert_eq!(back.len(), 0);
        drop((b, c, back));
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn pool_get_waits_for_a_returned_buffer() {
        let pool = BufPool::unregistered(1, 512, 512);
        let held = pool.try_get().unwrap();
        let p2 = pool.clone();
        let t = std::thread::spawn(move || futures_lite_block_on(p2.get()).capacity());
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(held);
        assert_eq!(t.join().unwrap(), 512);
    }

    #[test]
    fn a_dropped_get_never_takes_a_live_waiters_buffer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let pool = BufPool::unregistered(1, 512, 512);
        let held = pool.try_get().unwrap();
        let (y_count, x_count) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (y_waker, x_waker) = (Waker::from(y_count.clone()), Waker::from(x_count.clone()));
        let mut y = pool.get();
        let mut x = pool.get();
        for _ in 0..3 {
            // Re-polls do not queue the same task twice.
            assert!(Pin::new(&mut y)
                .poll(&mut Context::from_waker(&y_waker))
                .is_pending());
        }
        assert!(Pin::new(&mut x)
            .poll(&mut Context::from_waker(&x_waker))
            .is_pending());
        assert_eq!(pool.inner.state.lock().unwrap().waiters.len(), 2);
        drop(x);
        drop(held);
        assert_eq!(
            y_count.0.load(Ordering::SeqCst),
            1,
            "the live waiter is woken"
        );
        assert_eq!(x_count.0.load(Ordering::SeqCst), 0);
        let Poll::Ready(buf) = Pin::new(&mut y).poll(&mut Context::from_waker(&y_waker)) else {
            panic!("the buffer is free")
        };
        assert_eq!(buf.capacity(), 512);
    }

    /// A minimal executor for unit tests of this module.
    fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
