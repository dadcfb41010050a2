//! The reactor's user table: one entry per user with connections here (or a hot rate window).
//!
//! Owns: lookup by user id, the rate-limit window, and the head/tail of each user's connection
//! list (the links themselves live in `Conn::next_of_user`). Does not touch: sockets or frames.
//! A user's connections all live on one reactor (its home), so nothing here is shared.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

use crate::conn::NONE;
use crate::limits::SlidingWindow;

/// What only some users have (profile claims, rooms), boxed so the others pay one pointer.
#[derive(Default)]
pub struct Extras {
    pub email: Option<Box<str>>,
    pub name: Option<Box<str>>,
    /// `rooms` claim of the user's most recent token: names or `*` patterns it may join.
    pub allowed_rooms: Option<Vec<String>>,
    /// Rooms this user is in: (index in the reactor's room index, this user's position in
    /// that room's member list), so joins and leaves never scan a room's members.
    pub rooms: Vec<(u32, u32)>,
}

/// A user id: up to 22 bytes inline (no allocation, and most ids fit), longer ones boxed.
pub enum UserId {
    Inline(u8, [u8; 22]),
    Heap(Box<str>),
}

impl UserId {
    pub fn new(s: &str) -> Self {
        if s.len() <= 22 {
            let mut b = [0u8; 22];
            b[..s.len()].copy_from_slice(s.as_bytes());
            UserId::Inline(s.len() as u8, b)
        } else {
            UserId::Heap(s.into())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built from a &str, so always valid UTF-8.
            UserId::Inline(len, b) => std::str::from_utf8(&b[..*len as usize]).unwrap_or_default(),
            UserId::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for UserId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

pub struct User {
    pub id: UserId,
    /// Oldest connection (evicted first), or NONE.
    pub head: u32,
    /// Newest connection, or NONE: appending stays O(1) whatever the per-user limit.
    pub tail: u32,
    pub count: u32,
    /// Latest `exp` (Unix seconds) among the tokens this user presented here; `NO_EXPIRY` for
    /// a token without one. Only ever moves later, so lazily re-armed timers stay correct.
    pub expires_at: u32,
    pub rate: SlidingWindow,
    pub extras: Option<Box<Extras>>,
}

/// `User::expires_at` of a user holding a token without `exp`.
pub const NO_EXPIRY: u32 = u32::MAX;

#[derive(Default)]
pub struct Users {
    index: HashTable<u32>,
    entries: Slab<User>,
    hasher: RandomState,
}

impl Users {
    /// A table with room for `n` users before it grows.
    pub fn with_capacity(n: usize) -> Self {
        Users {
            index: HashTable::with_capacity(n),
            entries: Slab::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    pub fn find(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.index.find(h, |&i| &*self.entries[i as usize].id == id).copied()
    }

    /// The entry for `id`, created if absent.
    pub fn get_or_insert(&mut self, id: &str) -> u32 {
        if let Some(i) = self.find(id) {
            return i;
        }
        let i = self.entries.insert(User {
            id: UserId::new(id),
            head: NONE,
            tail: NONE,
            count: 0,
            expires_at: 0,
            rate: SlidingWindow::default(),
            extras: None,
        }) as u32;
        let h = self.hasher.hash_one(id);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(&*entries[j as usize].id));
        i
    }

    pub fn get(&self, i: u32) -> Option<&User> {
        self.entries.get(i as usize)
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut User> {
        self.entries.get_mut(i as usize)
    }

    /// Removes the entry (the caller checked it has no connections).
    pub fn remove(&mut self, i: u32) {
        let Some(u) = self.entries.get(i as usize) else { return };
        let h = self.hasher.hash_one(&*u.id);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        self.entries.remove(i as usize);
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &User)> {
        self.entries.iter().map(|(i, u)| (i as u32, u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_inline_and_boxed() {
        for id in [
            "",
            "a",
            "exactly-twenty-two-b22",
            "a-much-longer-user-identifier-than-fits-inline",
            "ünïcødé",
        ] {
            assert_eq!(UserId::new(id).as_str(), id);
        }
        assert!(matches!(UserId::new("exactly-twenty-two-b22"), UserId::Inline(..)));
        assert_eq!(std::mem::size_of::<UserId>(), 24);
        assert!(std::mem::size_of::<User>() <= 64, "{}", std::mem::size_of::<User>());
    }

    #[test]
    fn insert_find_remove() {
        let mut u = Users::default();
        let a = u.get_or_insert("alice");
        let b = u.get_or_insert("bob");
        assert_ne!(a, b);
        assert_eq!(u.get_or_insert("alice"), a);
        assert_eq!(u.find("bob"), Some(b));
        u.remove(a);
        assert_eq!(u.find("alice"), None);
        assert_eq!(u.find("bob"), Some(b));
        assert_eq!(u.iter().count(), 1);
    }
}
