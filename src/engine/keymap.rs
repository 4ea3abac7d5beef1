//! Maps keyed by the engine's own integers (session keys, source ids), hashed with a
//! multiply-rotate hash (as rustc's FxHash) instead of SipHash: these keys are made by the
//! server, not chosen by peers, so they need no flooding defence, and the fan-out looks one
//! up per packet per viewer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The hasher behind [`KeyMap`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A `HashMap` for server-made integer keys.
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_and_tuples_work() {
        let mut m: KeyMap<(u64, usize), u64> = KeyMap::default();
        for k in 0..10_000u64 {
            m.insert((k, (k % 3) as usize), k);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&(42, 0)), Some(&42));
        assert_eq!(m.get(&(42, 1)), None);
        let top: std::collections::HashSet<u64> = (0..1000u64)
            .map(|k| {
                let mut h = KeyHasher::default();
                h.write_u64(k);
                h.finish() >> 57
            })
            .collect();
        assert!(
            top.len() > 100,
            "the top 7 bits (hashbrown's tag) vary: {}",
            top.len()
        );
    }
}
