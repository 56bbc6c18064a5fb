//! Deterministic mutations of seed inputs: the unit tests' stand-ins for the fuzz targets in
//! `fuzz/`, so every `cargo test` throws thousands of near-valid inputs at each parser.

/// An xorshift generator and the edits it makes (delete, insert, replace a character).
pub struct Mutator {
    state: u64,
}

impl Default for Mutator {
    fn default() -> Self {
        Self { state: 0x9e37_79b9_7f4a_7c15 }
    }
}

impl Mutator {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// One to four random edits of `items` (characters, bytes), drawing from `alphabet`.
    pub fn edit<T: Copy>(&mut self, items: &mut Vec<T>, alphabet: &[T]) {
        for _ in 0..=self.below(4) {
            let at = self.below(items.len() + 1);
            let c = alphabet[self.below(alphabet.len())];
            match self.below(3) {
                0 if at < items.len() => {
                    items.remove(at);
                }
                1 => items.insert(at, c),
                _ if at < items.len() => items[at] = c,
                _ => {}
            }
        }
    }

    /// `seed` with one to four random edits drawing characters from `alphabet`.
    pub fn mutate(&mut self, seed: &str, alphabet: &[char]) -> String {
        let mut chars: Vec<char> = seed.chars().collect();
        self.edit(&mut chars, alphabet);
        chars.into_iter().collect()
    }
}
