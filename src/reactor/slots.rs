//! A set of slab slots as a bitmap: one bit per slot, visited in slot order.
//!
//! Owns: the bits. Does not touch: the slab or what the slots hold. Used for each event type's
//! subscribers and for the open connections, so a fan-out visits members only, in memory
//! order, while costing an eighth of a byte per slot.

#[derive(Debug, Default, Clone)]
pub(crate) struct SlotSet {
    words: Vec<u64>,
}

impl SlotSet {
    pub fn is_empty(&self) -> bool {
        // Trailing zero words are always popped, so any word left holds a slot.
        self.words.is_empty()
    }

    pub fn insert(&mut self, slot: usize) {
        let w = slot / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (slot % 64);
    }

    pub fn remove(&mut self, slot: usize) {
        let Some(word) = self.words.get_mut(slot / 64) else {
            return;
        };
        *word &= !(1 << (slot % 64));
        // Shrink from the end, so a burst does not pin its bitmap.
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        if self.words.capacity() > 2 * self.words.len() + 16 {
            self.words.shrink_to_fit();
        }
    }

    pub fn contains(&self, slot: usize) -> bool {
        self.words.get(slot / 64).is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// Calls `f` with every slot in the set, in increasing order.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                f(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// Up to `limit` slots of the set at or after `start`, in order.
    pub fn from(&self, start: usize, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, &word) in self.words.iter().enumerate().skip(start / 64) {
            let mut bits = if w == start / 64 {
                word & (!0u64 << (start % 64))
            } else {
                word
            };
            while bits != 0 && out.len() < limit {
                out.push(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    pub fn to_vec(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.for_each(|s| out.push(s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_visit_in_order_and_shrink() {
        let mut s = SlotSet::default();
        for slot in [700, 3, 64, 63, 0, 700] {
            s.insert(slot);
        }
        assert_eq!(s.to_vec(), vec![0, 3, 63, 64, 700]);
        s.remove(700);
        assert_eq!(s.words.len(), 2, "trailing empty words are dropped");
        s.remove(5);
        s.remove(10_000);
        assert_eq!(s.to_vec(), vec![0, 3, 63, 64]);
        assert_eq!(s.from(3, 2), vec![3, 63]);
        assert_eq!(s.from(4, 10), vec![63, 64]);
        assert_eq!(s.from(65, 10), Vec::<usize>::new());
    }
}
