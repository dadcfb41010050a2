//! permessage-deflate on the reactor's output: the compressed form of a fanned-out frame, made
//! once and shared by every recipient that negotiated it.
//!
//! Owns: the cache of the frame being fanned out (`Core::deflated`). Does not touch: which
//! connections negotiated it (`Core::deflate_slots`, set at the upgrade) or the compressor
//! itself (`ws::deflate`).

use tungstenite::Bytes;

use super::Core;

impl Core {
    /// `frame` compressed for connections that negotiated permessage-deflate: once per frame
    /// fanned out (see `deflated`), messages under `--compression-min-size` left as they are.
    pub(super) fn deflated_form(&mut self, frame: &Bytes) -> Bytes {
        let key = (frame.as_ptr() as usize, frame.len());
        if let Some((p, l, b)) = &self.deflated
            && (*p, *l) == key
        {
            return b.clone();
        }
        let min = self.rt.config.compression_min_size;
        let d = self.deflater.get_or_insert_with(Box::default);
        let compressed = Bytes::from(d.compress_frames(frame, min));
        self.metrics.compressions.inc();
        self.deflated = Some((key.0, key.1, compressed.clone()));
        compressed
    }

    /// Forgets the compressed form of the last frame (called before each fan-out, so an address
    /// reused by a later frame never matches).
    pub(super) fn forget_deflated(&mut self) {
        self.deflated = None;
    }
}
