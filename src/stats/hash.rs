//! A stable hash for keys and deterministic draws: the same value on every
//! build and platform, unlike `std`'s randomly seeded one.

/// FNV-1a, a stable hash (same value on every build and platform).
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        Fnv::write(self, bytes);
    }
}

/// Build hasher for FNV-1a (fast for short keys such as words and tool names).
pub type FnvState = std::hash::BuildHasherDefault<Fnv>;
