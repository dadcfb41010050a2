//! The reactor's room index: room name to member users (users homed on this reactor).
//!
//! Owns: room entries and their member lists. Does not touch: connections or users' own room
//! lists (the reactor core keeps both sides consistent). A room exists only while it has a
//! member here; the last leave removes it.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

pub struct Room {
    pub name: Box<str>,
    /// User indices (into the reactor's user table).
    pub members: Vec<u32>,
}

#[derive(Default)]
pub struct Rooms {
    index: HashTable<u32>,
    entries: Slab<Room>,
    hasher: RandomState,
}

impl Rooms {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        let h = self.hasher.hash_one(name);
        self.index
            .find(h, |&i| &*self.entries[i as usize].name == name)
            .copied()
    }

    pub fn get(&self, r: u32) -> Option<&Room> {
        self.entries.get(r as usize)
    }

    /// Appends `user` to `name` (creating the room); returns the room and the user's position
    /// in its member list. The caller knows (from the user's own list) that it is not already
    /// a member, so this is O(1) whatever the room's size.
    pub fn add(&mut self, name: &str, user: u32) -> (u32, u32) {
        let r = match self.find(name) {
            Some(r) => r,
            None => {
                let r = self.entries.insert(Room {
                    name: name.into(),
                    members: Vec::new(),
                }) as u32;
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.index.insert_unique(hasher.hash_one(name), r, |&j| {
                    hasher.hash_one(&*entries[j as usize].name)
                });
                r
            }
        };
        let members = &mut self.entries[r as usize].members;
        members.push(user);
        (r, members.len() as u32 - 1)
    }

    /// Removes the member at `pos` of room `r` (the room goes with its last member). Returns
    /// the user moved into `pos` to fill the gap, whose stored position the caller updates.
    pub fn remove_at(&mut self, r: u32, pos: u32) -> Option<u32> {
        let room = self.entries.get_mut(r as usize)?;
        if pos as usize >= room.members.len() {
            return None;
        }
        room.members.swap_remove(pos as usize);
        if room.members.is_empty() {
            let h = self.hasher.hash_one(&*room.name);
            if let Ok(e) = self.index.find_entry(h, |&j| j == r) {
                e.remove();
            }
            self.entries.remove(r as usize);
            return None;
        }
        room.members.get(pos as usize).copied()
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A room name clients may use: 1 to 128 bytes, no control characters.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-red"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*-admin", "ops-admin"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn rooms_vanish_with_their_last_member_and_report_moves() {
        let mut r = Rooms::default();
        let (a, p1) = r.add("lobby", 1);
        let (_, p2) = r.add("lobby", 2);
        let (_, p3) = r.add("lobby", 3);
        assert_eq!((p1, p2, p3), (0, 1, 2));
        assert_eq!(r.remove_at(a, p1), Some(3), "the last member fills the gap");
        assert_eq!(r.get(a).unwrap().members, vec![3, 2]);
        assert_eq!(r.remove_at(a, 1), None, "removing the last slot moves nobody");
        assert_eq!(r.find("lobby"), Some(a));
        assert_eq!(r.remove_at(a, 0), None);
        assert_eq!(r.find("lobby"), None);
        assert_eq!(r.len(), 0);
    }
}
