//! Pure per-packet forwarding logic: decisions over plain data, time passed in.
//!
//! This module owns what happens to one RTP packet on its way from a publisher to one viewer:
//! which codecs of the two legs correspond ([`codec`]), whether a payload lets a decoder start
//! ([`keyframe`]), how sequence numbers and timestamps are rewritten so a viewer's stream stays
//! continuous across publisher changes ([`munger`]), what each simulcast layer of a track
//! carries ([`layers`]) and the picture size its keyframes announce ([`resolution`]), which
//! layer a viewer slot should get ([`selector`]), which VP8 frames a viewer gets at its
//! temporal layer and how their PictureIDs are renumbered ([`vp8`]), and the per-slot decision
//! that combines them ([`slot`]). Nothing here does I/O, takes a lock, awaits, reads a clock
//! or panics on what a peer sent.

pub mod allocate;
pub mod cache;
pub mod codec;
pub mod estimate;
pub mod keyframe;
pub mod layers;
pub mod munger;
pub mod probe;
pub mod resolution;
pub mod selector;
pub mod slot;
pub mod speakers;
pub mod trendline;
pub mod vp8;
