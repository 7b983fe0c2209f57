//! What the unit tests share: a seeded generator of random inputs, so that every randomized
//! test (the command-line splitter against the kernel's, GRUB's environment block against
//! grub-editenv) replays exactly from its seed.

/// xorshift64*: a small, seeded, deterministic stream of numbers.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
