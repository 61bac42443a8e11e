//! `IoBuf`: an owned, splittable data buffer that moves into a bio and comes back on completion.

use bytes::BytesMut;

/// Owned I/O buffer. Splitting gives disjoint owned pieces; `unsplit` joins adjacent pieces back
/// without copying, so a split bio hands its caller the same memory it was given.
#[derive(Debug, Default)]
pub struct IoBuf(BytesMut);

impl IoBuf {
    /// An empty buffer (flush, discard, write-zeroes).
    pub fn empty() -> IoBuf {
        IoBuf(BytesMut::new())
    }
    /// A zero-filled buffer of `len` bytes.
    pub fn zeroed(len: usize) -> IoBuf {
        IoBuf(BytesMut::zeroed(len))
    }
    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> IoBuf {
        IoBuf(BytesMut::from(data))
    }
    /// Take ownership of a vector.
    pub fn from_vec(v: Vec<u8>) -> IoBuf {
        IoBuf(BytesMut::from(&v[..]))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    /// Split off the bytes from `at` on; `self` keeps `[0, at)`.
    pub fn split_off(&mut self, at: usize) -> IoBuf {
        IoBuf(self.0.split_off(at))
    }
    /// Join `other`, which must follow `self`; O(1) when they were split from one buffer.
    pub fn unsplit(&mut self, other: IoBuf) {
        self.0.unsplit(other.0)
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0.to_vec()
    }
    /// Resize (new bytes are zero).
    pub fn resize(&mut self, len: usize) {
        self.0.resize(len, 0)
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
