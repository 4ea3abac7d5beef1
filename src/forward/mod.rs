//! Pure per-packet forwarding logic: decisions over plain data, time passed in.
//!
//! This module owns what happens to one RTP packet on its way from a publisher to one viewer:
//! which codecs of the two legs correspond ([`codec`]), whether a payload lets a decoder start
//! ([`keyframe`]) and what picture size that keyframe carries ([`resolution`]), how sequence
//! numbers and timestamps are rewritten so a viewer's stream stays continuous across publisher
//! changes ([`munger`]), and the per-slot decision that combines them ([`slot`]). Nothing here
//! does I/O, takes a lock, awaits, reads a clock or panics on what a peer sent.

pub mod cache;
pub mod codec;
pub mod keyframe;
pub mod munger;
pub mod resolution;
pub mod slot;
pub mod speakers;
